"""The stored pooled level: the original area-pooled by a power of two, for large glimpses.

A glimpse of a box much larger than its window is sampled from the box's region area-pooled by k
(``model.glimpse``). At the model's largest boxes the full-resolution region is ~9% of the image,
so reading it can never be 20× cheaper than decoding the image. Each row therefore also stores
the image pooled by ``LEVEL_FACTOR`` (8): a large glimpse reads its region from that level instead.

The level is defined in integers, so every reader computes the same pixels: the image is
zero-padded to whole L×L cells and each cell becomes round-half-up(sum / L²), a uint8. Pillow's
``reduce`` computes exactly that for powers of two (its fixed-point multiplier is then exact),
which the tests check against the integer formula; ``model.glimpse.TensorRegionReader`` computes
it in torch from in-memory images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

LEVEL_FACTOR = 8  # the level every row stores (schema v2's ``level_factor``)
# Level tiles are raw uint8 (the Parquet column is zstd-compressed instead): reading a level tile
# is then a copy. Measured on a 4000×3000 photo's level (BENCHMARKS.md, "Region reads"): a 30%
# glimpse's level region read in 0.02 ms from raw tiles, 2.6 ms from png and 0.7–0.85 from jpeg.
LEVEL_FORMAT = "raw"
LEVEL_FACTORS = (2, 4, 8, 16)  # powers of two: Pillow's reduce is then exact


def check_factor(factor: int) -> None:
    """Raise a ValueError naming the valid factors when ``factor`` is not one."""
    if factor not in LEVEL_FACTORS:
        raise ValueError(f"pooled-level factor must be one of {LEVEL_FACTORS}, got {factor}")


def level_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """(height, width) of the ×factor level: one pixel per whole or partial cell."""
    return -(-height // factor), -(-width // factor)


def pool_pil(pil: Image.Image, factor: int) -> Image.Image:
    """The ×factor level of an L or RGB Pillow image (zero-padded to whole cells)."""
    check_factor(factor)
    width, height = pil.size
    lh, lw = level_size(height, width, factor)
    if (lh * factor, lw * factor) != (height, width):
        padded = Image.new(pil.mode, (lw * factor, lh * factor))  # zeros
        padded.paste(pil, (0, 0))
        pil = padded
    return pil.reduce(factor)


def pool_array(image_HWC: np.ndarray, factor: int) -> np.ndarray:
    """The ×factor level of a uint8 (H, W, C) array, as uint8 (h, w, C)."""
    check_factor(factor)
    if image_HWC.dtype != np.uint8 or image_HWC.ndim != 3:
        raise ValueError(
            f"expected a uint8 (H, W, C) array, got {image_HWC.dtype} {image_HWC.shape}"
        )
    if image_HWC.shape[2] not in (1, 3) or 0 in image_HWC.shape:
        return pool_exact(image_HWC, factor)  # Pillow's RGBA reduce is not a plain mean
    grey = image_HWC.shape[2] == 1
    pil = Image.fromarray(image_HWC[:, :, 0] if grey else image_HWC, "L" if grey else "RGB")
    out = np.asarray(pool_pil(pil, factor))
    return out[:, :, None] if grey else out


def pool_exact(image_HWC: np.ndarray, factor: int) -> np.ndarray:
    """The level by its definition, in numpy integers: the reference ``pool_array`` must equal."""
    height, width, channels = image_HWC.shape
    lh, lw = level_size(height, width, factor)
    padded = np.zeros((lh * factor, lw * factor, channels), np.int64)
    padded[:height, :width] = image_HWC
    sums = padded.reshape(lh, factor, lw, factor, channels).sum(axis=(1, 3))
    return ((sums + factor * factor // 2) // (factor * factor)).astype(np.uint8)
