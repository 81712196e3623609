"""Region reader: read pixel boxes of stored tiled images, decoding only the tiles they touch.

This is what turns the saccader's compute saving into a wall-clock and memory saving: a glimpse at
30% of a 2528×2528 image touches a few 256-px tiles, not the whole image.

Box convention (shared with ``model.glimpse.RegionReader``): int [y0, x0, y1, x1], half-open pixel
ranges, which may extend past the image; pixels outside the image read as zeros (the same as
``grid_sample``'s zero padding, so region glimpses equal full-image glimpses).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.codec import (
    CodecError,
    check_format,
    decode_array,
    encode_tiles,
    tile_grid,
    tile_shape,
)
from pipelines.pyramid import LEVEL_FACTOR, LEVEL_FORMAT, check_factor, level_size, pool_array


class CorruptImageError(CodecError):
    """Image ``index`` of a batch cannot be read (a tile or its proxy fails to decode): the
    caller may drop that image and go on with the others."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"image {index} of the batch: {message}")
        self.index = index


@dataclass(frozen=True)
class TiledImage:
    """One stored image: its size, its encoded row-major tiles and, optionally, a pooled level."""

    height: int
    width: int
    channels: int
    tile_size: int
    tile_format: str
    tiles: Sequence[bytes]
    level_factor: int = 0  # the stored level's factor (pipelines.pyramid); 0: none stored
    level_tiles: Sequence[bytes] = ()  # its raw tiles, row-major, tile_size each

    def __post_init__(self) -> None:
        check_format(self.tile_format)
        self._check_tiles(self.height, self.width, self.tiles, "")
        if self.level_factor:
            check_factor(self.level_factor)
            lh, lw = level_size(self.height, self.width, self.level_factor)
            self._check_tiles(lh, lw, self.level_tiles, f"×{self.level_factor} level of the ")

    def _check_tiles(self, height: int, width: int, tiles: Sequence[bytes], what: str) -> None:
        n_rows, n_cols = tile_grid(height, width, self.tile_size)
        if len(tiles) != n_rows * n_cols:
            raise ValueError(
                f"{what}{height}×{width} image with tile_size {self.tile_size} needs "
                f"{n_rows * n_cols} tiles, got {len(tiles)}"
            )

    @classmethod
    def from_array(
        cls,
        image_HWC: np.ndarray,
        *,
        tile_size: int,
        tile_format: str,
        jpeg_quality: int = 90,
        level_factor: int = LEVEL_FACTOR,
    ) -> TiledImage:
        """Tile and encode an in-memory uint8 (H, W, C) image and, as the pipelines store it, its
        ×level_factor pooled level (0: none)."""
        height, width, channels = image_HWC.shape
        tiles = encode_tiles(
            image_HWC, tile_size=tile_size, tile_format=tile_format, jpeg_quality=jpeg_quality
        )
        level_tiles: list[bytes] = []
        if level_factor:
            level = pool_array(image_HWC, level_factor)
            level_tiles = encode_tiles(level, tile_size=tile_size, tile_format=LEVEL_FORMAT)
        return cls(
            height, width, channels, tile_size, tile_format, tiles, level_factor, level_tiles
        )

    @classmethod
    def from_row(cls, row: Mapping) -> TiledImage:
        """Build from a dataset row (a dict with the schema v2 columns)."""
        return cls(
            height=int(row["height"]),
            width=int(row["width"]),
            channels=int(row["channels"]),
            tile_size=int(row["tile_size"]),
            tile_format=str(row["tile_format"]),
            tiles=list(row["tiles"]),
            level_factor=int(row.get("level_factor") or 0),
            level_tiles=list(row.get("level_tiles") or ()),
        )

    def level_image(self) -> TiledImage:
        """The stored pooled level as an image of its own (raw tiles, no level)."""
        if not self.level_factor:
            raise ValueError("this image has no stored pooled level")
        lh, lw = level_size(self.height, self.width, self.level_factor)
        return TiledImage(lh, lw, self.channels, self.tile_size, LEVEL_FORMAT, self.level_tiles)

    def tiles_for_box(self, y0: int, x0: int, y1: int, x1: int) -> list[int]:
        """Row-major indices of the tiles intersecting the half-open box (clipped to the image)."""
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y1, self.height), min(x1, self.width)
        if ys >= ye or xs >= xe:
            return []
        ts = self.tile_size
        _, n_cols = tile_grid(self.height, self.width, ts)
        rows = range(ys // ts, (ye - 1) // ts + 1)
        cols = range(xs // ts, (xe - 1) // ts + 1)
        return [r * n_cols + c for r in rows for c in cols]

    def decode_tile(self, index: int) -> np.ndarray:
        """Decode tile ``index`` to a uint8 (h, w, c) array."""
        shape = tile_shape(
            index,
            height=self.height,
            width=self.width,
            channels=self.channels,
            tile_size=self.tile_size,
        )
        return decode_array(self.tiles[index], self.tile_format, shape)


class TileRegionReader:
    """Reads regions of a batch of tiled images; decoded tiles are cached for the reader's life.

    Make one reader per batch: the cache then holds exactly the tiles that batch touched, and a
    tile shared by two glimpses of the same image is decoded once. Regions of a pooled level come
    from the stored level when its factor matches, else are pooled from full-resolution tiles
    (the same pixels, ``pipelines.pyramid``).
    """

    def __init__(self, images: Sequence[TiledImage], *, threads: int = 1) -> None:
        self.images = list(images)
        self.threads = threads
        self.tiles_decoded = 0  # full-resolution and level tiles decoded, all images
        self.tiles_decoded_by_image = [0] * len(self.images)  # the same, per image of the batch
        self._levels: dict[int, TiledImage] = {}  # image index → its stored level, as an image
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}  # (image, level, tile) → pixels
        self._lock = threading.Lock()

    def image_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image in the batch."""
        return [(im.height, im.width) for im in self.images]

    def read_regions_numpy(self, boxes_B4: np.ndarray, *, level: int = 1) -> list[np.ndarray]:
        """One uint8 (h, w, C) region per image; box ``b`` is read from image ``b``'s ×level
        pooled level (1: the image itself), in that level's pixels."""
        boxes = np.asarray(boxes_B4, dtype=np.int64).reshape(-1, 4)
        if len(boxes) != len(self.images):
            raise ValueError(f"got {len(boxes)} boxes for {len(self.images)} images")
        if level != 1:
            check_factor(level)
        # (image, source level, box in that source's pixels, factor still to pool by)
        plan = [self._plan(b, box, level) for b, box in enumerate(boxes.tolist())]
        self._decode_missing(
            (b, src, t) for b, src, box, _ in plan for t in self._source(b, src).tiles_for_box(*box)
        )
        regions = [self._assemble(b, src, *box) for b, src, box, _ in plan]
        return [
            pool_array(r, pool) if pool > 1 else r
            for r, (*_, pool) in zip(regions, plan, strict=True)
        ]

    def read_regions(self, boxes_B4: torch.Tensor, *, level: int = 1) -> list[torch.Tensor]:
        """``model.glimpse.RegionReader``: float32 C×h×w regions in [0, 1]."""
        regions = self.read_regions_numpy(boxes_B4.detach().cpu().numpy(), level=level)
        return [torch.from_numpy(r).permute(2, 0, 1).float().div_(255.0) for r in regions]

    def _plan(self, b: int, box: list[int], level: int) -> tuple[int, int, list[int], int]:
        if level == 1 or self.images[b].level_factor == level:
            return b, level, box, 1
        return b, 1, [v * level for v in box], level  # pool the full-resolution cells

    def _source(self, b: int, level: int) -> TiledImage:
        if level == 1:
            return self.images[b]
        if b not in self._levels:
            self._levels[b] = self.images[b].level_image()
        return self._levels[b]

    def _decode_missing(self, keys: Iterable[tuple[int, int, int]]) -> None:
        missing = sorted({k for k in keys if k not in self._cache})
        if not missing:
            return
        sources = {(b, src): self._source(b, src) for b, src, _ in missing}

        def decode(key: tuple[int, int, int]) -> np.ndarray:
            try:
                return sources[key[:2]].decode_tile(key[2])
            except CodecError as exc:
                raise CorruptImageError(key[0], f"tile {key[2]}: {exc}") from exc

        if self.threads > 1 and len(missing) > 1:
            # Pillow releases the GIL while decoding, so threads decode tiles in parallel.
            with ThreadPoolExecutor(max_workers=min(self.threads, len(missing))) as pool:
                arrays = list(pool.map(decode, missing))
        else:
            arrays = [decode(k) for k in missing]
        with self._lock:
            self._cache.update(zip(missing, arrays, strict=True))
            self.tiles_decoded += len(missing)
            for b, _, _ in missing:
                self.tiles_decoded_by_image[b] += 1

    def _assemble(self, b: int, src: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        image = self._source(b, src)
        out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0), image.channels), dtype=np.uint8)
        ts = image.tile_size
        _, n_cols = tile_grid(image.height, image.width, ts)
        for index in image.tiles_for_box(y0, x0, y1, x1):
            tile = self._cache[(b, src, index)]
            ty, tx = (index // n_cols) * ts, (index % n_cols) * ts
            # Intersection of the tile and the box, in image coordinates.
            ys, ye = max(y0, ty), min(y1, ty + tile.shape[0])
            xs, xe = max(x0, tx), min(x1, tx + tile.shape[1])
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = tile[ys - ty : ye - ty, xs - tx : xe - tx]
        return out


def read_region(image: TiledImage, box: Sequence[int]) -> np.ndarray:
    """Read one uint8 region [y0, x0, y1, x1] of one image (a convenience for single reads)."""
    return TileRegionReader([image], threads=1).read_regions_numpy(np.asarray([box]))[0]
