"""Tier 1: region reads equal crops of the fully decoded image and decode only touched tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.codec import decode_full
from pipelines.region import TiledImage, TileRegionReader, read_region


def _image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _crop_padded(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The reference: crop of the whole image, zeros outside it."""
    y0, x0, y1, x1 = box
    h, w, c = image.shape
    out = np.zeros((y1 - y0, x1 - x0, c), dtype=np.uint8)
    ys, ye, xs, xe = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if ys < ye and xs < xe:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out


def _n_intersecting(box: tuple[int, int, int, int], h: int, w: int, ts: int) -> int:
    y0, x0, y1, x1 = box
    ys, ye, xs, xe = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if ys >= ye or xs >= xe:
        return 0
    return ((ye - 1) // ts - ys // ts + 1) * ((xe - 1) // ts - xs // ts + 1)


def _random_boxes(h: int, w: int, n: int, seed: int) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        bh, bw = rng.integers(1, h // 2 + 2), rng.integers(1, w // 2 + 2)
        y0, x0 = rng.integers(-bh // 2, h - bh // 2), rng.integers(-bw // 2, w - bw // 2)
        boxes.append((int(y0), int(x0), int(y0 + bh), int(x0 + bw)))
    return boxes


EDGE_AND_CORNER_BOXES = [
    (0, 0, 10, 10),  # top-left corner
    (-5, -7, 12, 9),  # over the top-left corner
    (290, 190, 310, 215),  # over the bottom-right corner
    (0, 150, 300, 200),  # the whole right column strip
    (127, 127, 129, 129),  # a 2×2 box on a four-tile junction
    (0, 0, 300, 200),  # the whole image
    (-10, -10, 310, 210),  # larger than the image
    (400, 400, 420, 420),  # entirely outside
]


@pytest.mark.parametrize("tile_format", ["raw", "png"])
@pytest.mark.parametrize(("height", "width", "channels"), [(300, 200, 3), (97, 251, 1)])
def test_random_boxes_equal_crops_of_the_full_decode(
    tile_format: str, height: int, width: int, channels: int
) -> None:
    image = _image(height, width, channels)
    tiled = TiledImage.from_array(image, tile_size=64, tile_format=tile_format)
    full = decode_full(
        tiled.tiles,
        height=height,
        width=width,
        channels=channels,
        tile_size=64,
        tile_format=tile_format,
    )
    assert np.array_equal(full, image)
    for box in _random_boxes(height, width, 40, seed=height):
        assert np.array_equal(read_region(tiled, box), _crop_padded(full, box)), box


@pytest.mark.parametrize("box", EDGE_AND_CORNER_BOXES)
def test_edge_and_corner_boxes(box: tuple[int, int, int, int]) -> None:
    image = _image(300, 200, 3, seed=2)
    tiled = TiledImage.from_array(image, tile_size=128, tile_format="png")
    assert np.array_equal(read_region(tiled, box), _crop_padded(image, box))


def test_jpeg_regions_equal_crops_of_the_decoded_tiles() -> None:
    """Lossy tiles: the region must equal the same crop of the decoded (not original) image."""
    y, x = np.mgrid[0:200, 0:300]
    image = np.stack([(x + y) % 256, (2 * x) % 256, (3 * y) % 256], axis=2).astype(np.uint8)
    tiled = TiledImage.from_array(image, tile_size=64, tile_format="jpeg")
    full = decode_full(
        tiled.tiles, height=200, width=300, channels=3, tile_size=64, tile_format="jpeg"
    )
    for box in _random_boxes(200, 300, 20, seed=5):
        assert np.array_equal(read_region(tiled, box), _crop_padded(full, box))


@pytest.mark.parametrize("box", [*EDGE_AND_CORNER_BOXES, *_random_boxes(300, 200, 20, seed=9)])
def test_tiles_decoded_equal_tiles_intersecting(box: tuple[int, int, int, int]) -> None:
    image = _image(300, 200, 1, seed=3)
    tiled = TiledImage.from_array(image, tile_size=64, tile_format="png")
    reader = TileRegionReader([tiled], threads=2)
    reader.read_regions_numpy(np.asarray([box]))
    assert reader.tiles_decoded == _n_intersecting(box, 300, 200, 64)


def test_cache_decodes_a_shared_tile_once_per_reader() -> None:
    tiled = TiledImage.from_array(_image(128, 128, 1), tile_size=64, tile_format="png")
    reader = TileRegionReader([tiled, tiled])
    reader.read_regions_numpy(np.asarray([(0, 0, 10, 10), (0, 0, 70, 10)]))
    # image 0 touches tile 0; image 1 (another batch element) touches tiles 0 and 2.
    assert reader.tiles_decoded == 3
    reader.read_regions_numpy(np.asarray([(5, 5, 20, 20), (0, 0, 64, 64)]))
    assert reader.tiles_decoded == 3


def test_tiles_decoded_are_counted_per_image_full_resolution_and_level() -> None:
    small = TiledImage.from_array(_image(128, 128, 1), tile_size=64, tile_format="png")
    large = TiledImage.from_array(_image(1024, 1024, 1, seed=1), tile_size=64, tile_format="png")
    reader = TileRegionReader([small, large], threads=2)
    # image 0: tiles 0 and 1; image 1: one tile. Then image 1's ×8 level (128 px: 4 tiles of 64)
    # for a region of its first level tile only.
    reader.read_regions_numpy(np.asarray([(0, 0, 10, 70), (600, 600, 610, 610)]))
    assert reader.tiles_decoded_by_image == [2, 1]
    reader.read_regions_numpy(np.asarray([(0, 0, 0, 0), (0, 0, 32, 32)]), level=8)
    assert reader.tiles_decoded_by_image == [2, 2]
    assert sum(reader.tiles_decoded_by_image) == reader.tiles_decoded == 4


def test_torch_regions_are_float_chw_in_unit_range() -> None:
    image = _image(90, 70, 3, seed=4)
    tiled = TiledImage.from_array(image, tile_size=32, tile_format="raw")
    reader = TileRegionReader([tiled, tiled])
    boxes = torch.tensor([[10, 20, 40, 60], [-5, -5, 5, 5]], dtype=torch.int64)
    regions = reader.read_regions(boxes)
    assert reader.image_sizes() == [(90, 70), (90, 70)]
    assert [tuple(r.shape) for r in regions] == [(3, 30, 40), (3, 10, 10)]
    expected = torch.from_numpy(_crop_padded(image, (10, 20, 40, 60))).permute(2, 0, 1) / 255.0
    assert torch.equal(regions[0], expected.float())


def test_box_count_must_match_image_count() -> None:
    tiled = TiledImage.from_array(_image(32, 32, 1), tile_size=16, tile_format="raw")
    with pytest.raises(ValueError, match="got 2 boxes for 1 images"):
        TileRegionReader([tiled]).read_regions_numpy(np.zeros((2, 4), dtype=np.int64))


def test_tile_count_is_checked_against_the_grid() -> None:
    with pytest.raises(ValueError, match="needs 4 tiles, got 3"):
        TiledImage(
            height=32, width=32, channels=1, tile_size=16, tile_format="raw", tiles=[b""] * 3
        )
