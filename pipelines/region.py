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

from pipelines.codec import check_format, decode_array, encode_tiles, tile_grid, tile_shape


@dataclass(frozen=True)
class TiledImage:
    """One stored image: its size and its encoded row-major tiles."""

    height: int
    width: int
    channels: int
    tile_size: int
    tile_format: str
    tiles: Sequence[bytes]

    def __post_init__(self) -> None:
        check_format(self.tile_format)
        n_rows, n_cols = tile_grid(self.height, self.width, self.tile_size)
        if len(self.tiles) != n_rows * n_cols:
            raise ValueError(
                f"{self.height}×{self.width} image with tile_size {self.tile_size} needs "
                f"{n_rows * n_cols} tiles, got {len(self.tiles)}"
            )

    @classmethod
    def from_array(
        cls, image_HWC: np.ndarray, *, tile_size: int, tile_format: str, jpeg_quality: int = 90
    ) -> TiledImage:
        """Tile and encode an in-memory uint8 (H, W, C) image."""
        height, width, channels = image_HWC.shape
        tiles = encode_tiles(
            image_HWC, tile_size=tile_size, tile_format=tile_format, jpeg_quality=jpeg_quality
        )
        return cls(height, width, channels, tile_size, tile_format, tiles)

    @classmethod
    def from_row(cls, row: Mapping) -> TiledImage:
        """Build from a dataset row (a dict with the schema v1 columns)."""
        return cls(
            height=int(row["height"]),
            width=int(row["width"]),
            channels=int(row["channels"]),
            tile_size=int(row["tile_size"]),
            tile_format=str(row["tile_format"]),
            tiles=list(row["tiles"]),
        )

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
    tile shared by two glimpses of the same image is decoded once.
    """

    def __init__(self, images: Sequence[TiledImage], *, threads: int = 1) -> None:
        self.images = list(images)
        self.threads = threads
        self.tiles_decoded = 0
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def image_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image in the batch."""
        return [(im.height, im.width) for im in self.images]

    def read_regions_numpy(self, boxes_B4: np.ndarray) -> list[np.ndarray]:
        """One uint8 (h, w, C) region per image; box ``b`` is read from image ``b``."""
        boxes = np.asarray(boxes_B4, dtype=np.int64).reshape(-1, 4)
        if len(boxes) != len(self.images):
            raise ValueError(f"got {len(boxes)} boxes for {len(self.images)} images")
        self._decode_missing(
            (b, t) for b, box in enumerate(boxes) for t in self.images[b].tiles_for_box(*box)
        )
        return [self._assemble(b, *box) for b, box in enumerate(boxes)]

    def read_regions(self, boxes_B4: torch.Tensor) -> list[torch.Tensor]:
        """``model.glimpse.RegionReader``: float32 C×h×w regions in [0, 1]."""
        regions = self.read_regions_numpy(boxes_B4.detach().cpu().numpy())
        return [torch.from_numpy(r).permute(2, 0, 1).float().div_(255.0) for r in regions]

    def _decode_missing(self, keys: Iterable[tuple[int, int]]) -> None:
        missing = sorted({k for k in keys if k not in self._cache})
        if not missing:
            return
        if self.threads > 1 and len(missing) > 1:
            # Pillow releases the GIL while decoding, so threads decode tiles in parallel.
            with ThreadPoolExecutor(max_workers=min(self.threads, len(missing))) as pool:
                arrays = list(pool.map(lambda k: self.images[k[0]].decode_tile(k[1]), missing))
        else:
            arrays = [self.images[b].decode_tile(t) for b, t in missing]
        with self._lock:
            self._cache.update(zip(missing, arrays, strict=True))
            self.tiles_decoded += len(missing)

    def _assemble(self, b: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        image = self.images[b]
        out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0), image.channels), dtype=np.uint8)
        ts = image.tile_size
        _, n_cols = tile_grid(image.height, image.width, ts)
        for index in image.tiles_for_box(y0, x0, y1, x1):
            tile = self._cache[(b, index)]
            ty, tx = (index // n_cols) * ts, (index % n_cols) * ts
            # Intersection of the tile and the box, in image coordinates.
            ys, ye = max(y0, ty), min(y1, ty + tile.shape[0])
            xs, xe = max(x0, tx), min(x1, tx + tile.shape[1])
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = tile[ys - ty : ye - ty, xs - tx : xe - tx]
        return out


def read_region(image: TiledImage, box: Sequence[int]) -> np.ndarray:
    """Read one uint8 region [y0, x0, y1, x1] of one image (a convenience for single reads)."""
    return TileRegionReader([image], threads=1).read_regions_numpy(np.asarray([box]))[0]
