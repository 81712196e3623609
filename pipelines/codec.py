"""Tile codec: cut an image into row-major tiles and encode/decode each one.

Formats:
- ``raw``: the tile's uint8 bytes, C order (H, W, C). Fastest to decode, no compression.
- ``png``: lossless; the choice for synthetic images, whose flat backgrounds compress well.
- ``jpeg``: lossy; the choice for photographs (encodes ~20× faster than PNG on them).

A tile's shape is never stored: it follows from the image size, the tile size and the tile's
position, which is what ``tile_shape`` computes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TILE_FORMATS = ("raw", "png", "jpeg")


class CodecError(ValueError):
    """A tile or image could not be encoded or decoded."""


def check_format(tile_format: str) -> None:
    """Raise a ValueError naming the valid formats when ``tile_format`` is unknown."""
    if tile_format not in TILE_FORMATS:
        raise ValueError(f"unknown tile format {tile_format!r}; use one of {TILE_FORMATS}")


def tile_grid(height: int, width: int, tile_size: int) -> tuple[int, int]:
    """Number of tile rows and columns covering a height × width image."""
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    return -(-height // tile_size), -(-width // tile_size)


def tile_shape(
    index: int, *, height: int, width: int, channels: int, tile_size: int
) -> tuple[int, int, int]:
    """(h, w, c) of tile ``index`` (row-major); edge tiles are smaller."""
    _, n_cols = tile_grid(height, width, tile_size)
    row, col = divmod(index, n_cols)
    h = min(tile_size, height - row * tile_size)
    w = min(tile_size, width - col * tile_size)
    return h, w, channels


def _pil_mode(channels: int) -> str:
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    if channels not in modes:
        raise CodecError(f"images must have 1, 3 or 4 channels, got {channels}")
    return modes[channels]


def encode_array(array_HWC: np.ndarray, tile_format: str, *, jpeg_quality: int = 90) -> bytes:
    """Encode one uint8 (H, W, C) array in ``tile_format``."""
    check_format(tile_format)
    if array_HWC.dtype != np.uint8 or array_HWC.ndim != 3:
        raise CodecError(
            f"expected a uint8 (H, W, C) array, got {array_HWC.dtype} {array_HWC.shape}"
        )
    if tile_format == "raw":
        return np.ascontiguousarray(array_HWC).tobytes()
    channels = array_HWC.shape[2]
    if tile_format == "jpeg" and channels == 4:
        raise CodecError("jpeg cannot hold an alpha channel; convert to RGB or use png")
    image = Image.fromarray(array_HWC[:, :, 0] if channels == 1 else array_HWC, _pil_mode(channels))
    out = io.BytesIO()
    if tile_format == "png":
        # compress_level 1: most of PNG's size gain at a fraction of level 6's encode time.
        image.save(out, format="PNG", compress_level=1)
    else:
        image.save(out, format="JPEG", quality=jpeg_quality)
    return out.getvalue()


def decode_array(data: bytes, tile_format: str, shape_HWC: tuple[int, int, int]) -> np.ndarray:
    """Decode bytes produced by ``encode_array`` back to a uint8 (H, W, C) array."""
    check_format(tile_format)
    h, w, c = shape_HWC
    if tile_format == "raw":
        if len(data) != h * w * c:
            raise CodecError(f"raw tile holds {len(data)} bytes, expected {h}×{w}×{c}")
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, c)
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image)
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise CodecError(f"cannot decode {tile_format} tile: {exc}") from exc
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape != (h, w, c):
        raise CodecError(f"decoded tile has shape {array.shape}, expected {(h, w, c)}")
    return array


def encode_tiles(
    image_HWC: np.ndarray, *, tile_size: int, tile_format: str, jpeg_quality: int = 90
) -> list[bytes]:
    """Cut an image into row-major tiles of ``tile_size`` and encode each."""
    height, width = image_HWC.shape[:2]
    n_rows, n_cols = tile_grid(height, width, tile_size)
    return [
        encode_array(
            image_HWC[r * tile_size : (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size],
            tile_format,
            jpeg_quality=jpeg_quality,
        )
        for r in range(n_rows)
        for c in range(n_cols)
    ]


def decode_full(
    tiles: list[bytes], *, height: int, width: int, channels: int, tile_size: int, tile_format: str
) -> np.ndarray:
    """Decode every tile and assemble the whole image (the slow path regions avoid)."""
    out = np.empty((height, width, channels), dtype=np.uint8)
    _, n_cols = tile_grid(height, width, tile_size)
    for index, data in enumerate(tiles):
        shape = tile_shape(
            index, height=height, width=width, channels=channels, tile_size=tile_size
        )
        row, col = divmod(index, n_cols)
        y, x = row * tile_size, col * tile_size
        out[y : y + shape[0], x : x + shape[1]] = decode_array(data, tile_format, shape)
    return out
