"""From an in-memory image to a schema row: tiles, proxy and ground truth.

Generated and rendered images end in ``image_row``, photos in ``pipelines.dslr.photo_row``; both
build the row through ``pipelines.schema.make_row``, so the contract is produced in exactly one
place. Unusable records become ``reject_row``s instead.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from pipelines.codec import encode_tiles
from pipelines.pyramid import LEVEL_FACTOR, LEVEL_FORMAT, pool_array
from pipelines.schema import make_row

Box = tuple[float, float, float, float, int]  # x0, y0, x1, y1 in [0, 1] image coordinates; class

# The staging record a pipeline stage emits: a schema-v2 row, or a reject carrying its reason.
REJECT_REASON = "reject_reason"
REJECT_REF = "reject_ref"


def make_proxy(image_HWC: np.ndarray, *, max_side: int) -> np.ndarray:
    """Area-downsample an image so its longer side is ``max_side`` (aspect kept)."""
    height, width, channels = image_HWC.shape
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    mode = "L" if channels == 1 else "RGB"
    pil = Image.fromarray(image_HWC[:, :, 0] if channels == 1 else image_HWC, mode)
    # reduce() by an integer factor first (cheap, exact box filter), then resize the remainder:
    # the same result as one BOX resize at a fraction of its cost on 12 MP photos.
    factor = max(1, int(1 / scale) // 2)
    if factor > 1:
        pil = pil.reduce(factor)
    out = np.asarray(pil.resize(size, Image.BOX))
    return out[:, :, None] if out.ndim == 2 else out


def encode_proxy(proxy_HWC: np.ndarray) -> bytes:
    """Proxies are stored as PNG: small, lossless, decodable without knowing the format."""
    channels = proxy_HWC.shape[2]
    pil = Image.fromarray(proxy_HWC[:, :, 0] if channels == 1 else proxy_HWC)
    out = io.BytesIO()
    pil.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def decode_proxy(data: bytes) -> np.ndarray:
    """Decode a stored proxy to a uint8 (h, w, C) array."""
    with Image.open(io.BytesIO(data)) as pil:
        array = np.asarray(pil)
    return array[:, :, None] if array.ndim == 2 else array


def box_dicts(boxes: Sequence[Box]) -> list[dict[str, float | int]]:
    """Boxes as the struct dicts of the schema's ``boxes`` column."""
    return [
        {"x0": float(x0), "y0": float(y0), "x1": float(x1), "y1": float(y1), "cls": int(c)}
        for x0, y0, x1, y1, c in boxes
    ]


def image_row(
    *,
    image_id: str,
    split: str,
    source: str,
    label: int,
    label_name: str,
    image: np.ndarray,
    proxy: np.ndarray,
    boxes: Sequence[Box],
    meta: dict[str, Any],
    tile_size: int,
    tile_format: str,
    jpeg_quality: int = 90,
) -> dict[str, Any]:
    """A schema row for one image (``image`` and ``proxy`` are uint8 (H, W, C)), through the
    contract's row builder (`pipelines.schema.make_row`)."""
    return make_row(
        {
            "image_id": image_id,
            "split": split,
            "source": source,
            "label": int(label),
            "label_name": label_name,
            **image_columns(
                image, proxy, tile_size=tile_size, tile_format=tile_format, quality=jpeg_quality
            ),
            "boxes": box_dicts(boxes),
            "meta": meta,
        }
    )


def image_columns(
    image_HWC: np.ndarray, proxy_HWC: np.ndarray, *, tile_size: int, tile_format: str, quality: int
) -> dict[str, Any]:
    """The model-input columns (`pipelines.schema.MODEL_INPUT_COLUMNS`) of an in-memory image:
    its tiles, pooled level and proxy (photos: `pipelines.photos.TiledPhoto.columns`)."""
    height, width, channels = image_HWC.shape
    tiles = encode_tiles(
        image_HWC, tile_size=tile_size, tile_format=tile_format, jpeg_quality=quality
    )
    return {
        "height": height,
        "width": width,
        "channels": channels,
        "tile_size": tile_size,
        "tile_format": tile_format,
        "tiles": tiles,
        **level_columns(image_HWC, tile_size=tile_size),
        "proxy": encode_proxy(proxy_HWC),
        "proxy_height": proxy_HWC.shape[0],
        "proxy_width": proxy_HWC.shape[1],
    }


def level_columns(image_HWC: np.ndarray, *, tile_size: int) -> dict[str, Any]:
    """The stored pooled level's columns: ×LEVEL_FACTOR, raw tiles whatever the tiles' codec
    (pooled from ``image_HWC``, so for jpeg tiles from the pixels before their lossy encoding)."""
    level = pool_array(image_HWC, LEVEL_FACTOR)
    return {
        "level_factor": LEVEL_FACTOR,
        "level_tiles": encode_tiles(level, tile_size=tile_size, tile_format=LEVEL_FORMAT),
    }


def reject_row(*, image_id: str | None, split: str, source: str, ref: str, reason: str) -> dict:
    """A staging record for an input that cannot be used, with the reason."""
    return {
        "image_id": image_id,
        "split": split,
        "source": source,
        REJECT_REASON: reason,
        REJECT_REF: ref,
    }
