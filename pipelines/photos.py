"""Photo tiling stage: one encoded photo (JPEG, PNG, ...) → its tiles and proxy, decoded once.

This is the per-image work of photo ingest (DSLR folders and buckets): decode the file, apply its
EXIF orientation, cut and encode the tiles, make the proxy. It stays in Pillow images end to end
because on a 12 MP photo one numpy copy costs half as much as the decode itself (Pillow 13:
``np.asarray`` ~25 ms against a ~50 ms JPEG decode; BENCHMARKS.md, "Ingest"). The results are
byte-identical to the numpy path (``pipelines.codec.encode_tiles`` and
``pipelines.tiling.make_proxy``), which the tests check.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pipelines.codec import CodecError, check_format, tile_grid
from pipelines.pyramid import LEVEL_FACTOR, LEVEL_FORMAT, pool_pil
from pipelines.region import TiledImage
from pipelines.tiling import encode_proxy

# EXIF orientation tag (0x0112): 1 = upright; 2..8 = mirrored and/or rotated.
_EXIF_ORIENTATION = 0x0112
# Modes kept as one grey channel; every other mode (P, RGBA, CMYK, YCbCr, I;16...) becomes RGB.
_GREY_MODES = ("L", "LA", "1")


class UnreadableImageError(CodecError):
    """The bytes are not an image Pillow can decode (corrupt, truncated or unknown format)."""


@dataclass(frozen=True)
class TiledPhoto:
    """A decoded, oriented and tiled photo: everything the schema-v2 image columns need."""

    height: int  # after EXIF orientation
    width: int
    channels: int  # 1 (grey) or 3 (RGB)
    tile_size: int
    tile_format: str
    tiles: list[bytes]  # row-major, edge tiles smaller
    level_tiles: list[bytes]  # the ×LEVEL_FACTOR pooled level, raw tiles (pipelines.pyramid)
    proxy: bytes  # PNG, as pipelines.tiling.encode_proxy writes it
    proxy_height: int
    proxy_width: int
    exif_orientation: int  # the tag found in the file (1 when absent); already applied
    source_format: str  # Pillow's name of the input format, e.g. "JPEG"

    def columns(self) -> dict[str, Any]:
        """The schema-v2 columns this stage owns (the caller adds id, split, label, boxes, meta)."""
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "tile_size": self.tile_size,
            "tile_format": self.tile_format,
            "tiles": self.tiles,
            "level_factor": LEVEL_FACTOR,
            "level_tiles": self.level_tiles,
            "proxy": self.proxy,
            "proxy_height": self.proxy_height,
            "proxy_width": self.proxy_width,
        }

    def tiled_image(self) -> TiledImage:
        """The tiles as a region-readable image."""
        return TiledImage(
            self.height,
            self.width,
            self.channels,
            self.tile_size,
            self.tile_format,
            self.tiles,
            level_factor=LEVEL_FACTOR,
            level_tiles=self.level_tiles,
        )


def decode_oriented(data: bytes) -> tuple[Image.Image, int, str]:
    """Decode an encoded image to an upright L or RGB Pillow image.

    Returns (image, EXIF orientation found, input format). Raises UnreadableImageError.
    """
    try:
        pil = Image.open(io.BytesIO(data))
        source_format = pil.format or "unknown"
        pil.load()
        orientation = int(pil.getexif().get(_EXIF_ORIENTATION, 1))
        # in_place: no 36 MB copy when the photo is already upright (the common case).
        ImageOps.exif_transpose(pil, in_place=True)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, bomb errors...
        raise UnreadableImageError(f"cannot decode image ({len(data)} bytes): {exc}") from exc
    mode = "L" if pil.mode in _GREY_MODES else "RGB"
    if pil.mode != mode:
        pil = pil.convert(mode)
    return pil, orientation, source_format


def proxy_image(pil: Image.Image, *, max_side: int) -> Image.Image:
    """``pipelines.tiling.make_proxy`` on a Pillow image: same size, same pixels, no numpy copy."""
    width, height = pil.size
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    factor = max(1, int(1 / scale) // 2)  # integer reduce() first: cheap exact box filter
    if factor > 1:
        pil = pil.reduce(factor)
    return pil.resize(size, Image.BOX)


def encode_tile(
    pil: Image.Image, box: tuple[int, int, int, int], tile_format: str, jpeg_quality: int
) -> bytes:
    """One tile (``box`` = left, upper, right, lower), encoded as ``pipelines.codec.encode_array``
    would encode the same pixels."""
    tile = pil.crop(box)
    if tile_format == "raw":
        return tile.tobytes()  # L and RGB images pack as uint8 (H, W, C) in C order
    out = io.BytesIO()
    if tile_format == "png":
        tile.save(out, format="PNG", compress_level=1)  # codec.encode_array's setting
    else:
        tile.save(out, format="JPEG", quality=jpeg_quality)
    return out.getvalue()


def tile_boxes(height: int, width: int, tile_size: int) -> list[tuple[int, int, int, int]]:
    """Row-major Pillow crop boxes (left, upper, right, lower) of the tile grid."""
    n_rows, n_cols = tile_grid(height, width, tile_size)
    return [
        (
            c * tile_size,
            r * tile_size,
            min((c + 1) * tile_size, width),
            min((r + 1) * tile_size, height),
        )
        for r in range(n_rows)
        for c in range(n_cols)
    ]


def encode_level(pil: Image.Image, tile_size: int) -> list[bytes]:
    """The ×LEVEL_FACTOR pooled level's tiles (``pipelines.tiling.level_columns``' bytes)."""
    level = pool_pil(pil, LEVEL_FACTOR)
    return [
        encode_tile(level, b, LEVEL_FORMAT, 0)
        for b in tile_boxes(level.size[1], level.size[0], tile_size)
    ]


def tile_encoded_image(
    data: bytes,
    *,
    tile_size: int = 256,
    tile_format: str = "jpeg",
    proxy_max_side: int = 256,
    jpeg_quality: int = 90,
    threads: int = 1,
    channels: int | None = None,
) -> TiledPhoto:
    """Decode ``data`` once and return its tiles and proxy: the one tiling of an image file,
    for the DSLR build and for prediction requests alike. ``channels`` (1 grey, 3 RGB) converts
    the photo to what a model reads; None keeps the photo's own.

    ``threads`` > 1 encodes tiles in a thread pool. The default is 1: Pillow 13's JPEG encoder
    holds the GIL for most of its work, so on 2 cores two threads measured slower than one
    (BENCHMARKS.md), and a Ray pipeline already runs one task per core.
    """
    check_format(tile_format)
    if tile_size < 16 or proxy_max_side < 1 or threads < 1:
        raise ValueError(
            f"need tile_size >= 16, proxy_max_side >= 1 and threads >= 1; got {tile_size}, "
            f"{proxy_max_side}, {threads}"
        )
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or none, got {channels}")
    pil, orientation, source_format = decode_oriented(data)
    if channels is not None:
        pil = pil.convert("L" if channels == 1 else "RGB")
    width, height = pil.size
    boxes = tile_boxes(height, width, tile_size)
    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            tiles = list(pool.map(lambda b: encode_tile(pil, b, tile_format, jpeg_quality), boxes))
    else:
        tiles = [encode_tile(pil, b, tile_format, jpeg_quality) for b in boxes]
    level_tiles = encode_level(pil, tile_size)
    proxy = np.asarray(proxy_image(pil, max_side=proxy_max_side))
    proxy_HWC = proxy[:, :, None] if proxy.ndim == 2 else proxy
    return TiledPhoto(
        height=height,
        width=width,
        channels=len(pil.getbands()),
        tile_size=tile_size,
        tile_format=tile_format,
        tiles=tiles,
        level_tiles=level_tiles,
        proxy=encode_proxy(proxy_HWC),
        proxy_height=proxy_HWC.shape[0],
        proxy_width=proxy_HWC.shape[1],
        exif_orientation=orientation,
        source_format=source_format,
    )
