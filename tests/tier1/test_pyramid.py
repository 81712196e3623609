"""Tier 1: the stored pooled level — one definition, computed alike by every reader, read from a
few small tiles, and giving the model the same glimpses as the whole image does."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from model.glimpse import (
    TensorRegionReader,
    full_image_glimpse,
    plan_read,
    pool_level,
    read_glimpses,
)
from pipelines.codec import decode_full
from pipelines.photos import tile_encoded_image
from pipelines.pyramid import LEVEL_FACTOR, pool_array, pool_exact, pool_pil
from pipelines.region import TiledImage, TileRegionReader
from pipelines.tiling import level_columns


def _image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _chw(image_HWC: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image_HWC).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("factor", [2, 4, 8, 16])
@pytest.mark.parametrize(("h", "w", "c"), [(64, 48, 1), (37, 53, 3), (5, 3, 1)])
def test_pillow_numpy_and_torch_levels_equal_the_integer_definition(
    factor: int, h: int, w: int, c: int
) -> None:
    image = _image(h, w, c, seed=factor)
    expected = pool_exact(image, factor)
    assert expected.shape == (-(-h // factor), -(-w // factor), c)
    np.testing.assert_array_equal(pool_array(image, factor), expected)
    torch.testing.assert_close(pool_level(_chw(image), factor), _chw(expected), rtol=0, atol=0)


def test_level_rounds_half_up_and_counts_padding_as_zero() -> None:
    image = np.zeros((3, 8, 1), np.uint8)
    image[0, 0] = 32  # one 8×8 cell sums to 32: 32/64 = 0.5 rounds up to 1
    image[0, 1] = 31  # the next pixels: the cell's sum 63 → 0.98 → 1
    level = pool_array(image, 8)
    assert level.shape == (1, 1, 1) and level[0, 0, 0] == 1
    assert pool_array(np.full((8, 8, 1), 255, np.uint8), 8)[0, 0, 0] == 255
    # a partial cell: 3 of 8 rows exist, the other 5 count as zeros
    assert pool_array(np.full((3, 8, 1), 255, np.uint8), 8)[0, 0, 0] == round(255 * 3 / 8)


def test_pool_pil_matches_pool_array_on_rgb() -> None:
    image = _image(61, 90, 3)
    np.testing.assert_array_equal(
        np.asarray(pool_pil(Image.fromarray(image), 8)), pool_array(image, 8)
    )


LEVEL_BOXES = [(0, 0, 5, 5), (-2, -3, 4, 6), (3, 10, 13, 20), (10, 0, 12, 40), (30, 30, 33, 33)]


@pytest.mark.parametrize("box", LEVEL_BOXES)
def test_level_regions_from_the_stored_level_equal_ones_pooled_from_the_tiles(
    box: tuple[int, int, int, int],
) -> None:
    image = _image(100, 150, 3)
    stored = TiledImage.from_array(image, tile_size=16, tile_format="png", level_factor=8)
    plain = TiledImage.from_array(image, tile_size=16, tile_format="png", level_factor=0)
    level = pool_exact(image, 8)  # 13 × 19
    y0, x0, y1, x1 = box
    expected = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    ys, ye, xs, xe = max(y0, 0), min(y1, 13), max(x0, 0), min(x1, 19)
    if ys < ye and xs < xe:
        expected[ys - y0 : ye - y0, xs - x0 : xe - x0] = level[ys:ye, xs:xe]
    from_level = TileRegionReader([stored])
    from_tiles = TileRegionReader([plain])
    np.testing.assert_array_equal(
        from_level.read_regions_numpy(np.asarray([box]), level=8)[0], expected
    )
    np.testing.assert_array_equal(
        from_tiles.read_regions_numpy(np.asarray([box]), level=8)[0], expected
    )
    # the stored level's 16-px tiles cover 128 original pixels each: far fewer decodes
    assert from_level.tiles_decoded <= 4
    assert from_level.tiles_decoded < from_tiles.tiles_decoded or from_tiles.tiles_decoded == 0


def test_level_is_served_by_the_stored_factor_only() -> None:
    image = _image(64, 64, 1)
    stored = TiledImage.from_array(image, tile_size=16, tile_format="png", level_factor=8)
    reader = TileRegionReader([stored])
    # ×4 is not stored: pooled from the full-resolution tiles, still by the same definition
    region = reader.read_regions_numpy(np.asarray([[0, 0, 16, 16]]), level=4)[0]
    np.testing.assert_array_equal(region, pool_exact(image, 4))
    assert reader.tiles_decoded == 16  # every full-resolution tile
    with pytest.raises(ValueError, match="pooled-level factor must be one of"):
        reader.read_regions_numpy(np.asarray([[0, 0, 1, 1]]), level=3)


def test_plan_reads_the_level_only_for_boxes_of_at_least_level_windows() -> None:
    small = plan_read([0.0, 0.0, 500.0, 500.0], 64, 8)  # k = 7 < 8: full resolution
    large = plan_read([0.0, 0.0, 900.0, 900.0], 64, 8)  # k = 14 → 8 from the level, m = 1
    huge = plan_read([0.0, 0.0, 1100.0, 1100.0], 64, 8)  # k = 17 → 16 = level 8, then 2
    assert (small.k, small.level) == (7, 1)
    assert (large.k, large.level, large.m) == (8, 8, 1)
    assert (huge.k, huge.level, huge.m) == (16, 8, 2)
    assert plan_read([0.0, 0.0, 900.0, 900.0], 64, 1).k == 14  # level 1: as before


# Normalised boxes on a 300×260 image with window 8: k = 1, 4, 9 (level 8, m 1), 19 (level 8,
# m 2), and one overhanging the bottom-right corner.
LARGE_BOXES = [
    [0.10, 0.12, 0.13, 0.155],
    [0.20, 0.25, 0.32, 0.39],
    [0.05, 0.02, 0.30, 0.31],
    [0.10, 0.05, 0.62, 0.65],
    [0.70, 0.70, 1.02, 1.07],
]


@pytest.mark.parametrize(("tile_format", "channels"), [("png", 1), ("raw", 3)])
def test_glimpses_through_the_level_equal_whole_image_glimpses(
    tile_format: str, channels: int
) -> None:
    rng = np.random.default_rng(0)
    images_HWC = [rng.integers(0, 256, (300, 260, channels), dtype=np.uint8) for _ in LARGE_BOXES]
    tiled = [
        TiledImage.from_array(a, tile_size=32, tile_format=tile_format, level_factor=8)
        for a in images_HWC
    ]
    images_BCHW = torch.stack([_chw(a) for a in images_HWC])
    weights = torch.randn(
        len(LARGE_BOXES), channels, 8, 8, generator=torch.Generator().manual_seed(1)
    )
    readers = {"tiles": TileRegionReader(tiled), "tensor": TensorRegionReader(images_BCHW)}
    glimpses, grads = {}, {}
    for name, reader in [*readers.items(), ("full", None)]:
        boxes_B4 = torch.tensor(LARGE_BOXES, requires_grad=True)
        if reader is None:
            glimpses[name] = full_image_glimpse(images_BCHW, boxes_B4, 8, level=8)
        else:
            glimpses[name] = read_glimpses(reader, boxes_B4, 8, level=8)
        (glimpses[name] * weights).sum().backward()
        grads[name] = boxes_B4.grad
    assert grads["full"].abs().min() > 0
    for name in readers:
        torch.testing.assert_close(glimpses[name], glimpses["full"], rtol=1e-5, atol=1e-5)
        # gradients reach ~10² on a 300-px image: float32 sums differ in the 5th digit
        torch.testing.assert_close(grads[name], grads["full"], rtol=1e-4, atol=1e-5)
    # the level changes only the large boxes' glimpses (k ≥ 8), and only slightly
    plain = full_image_glimpse(images_BCHW, torch.tensor(LARGE_BOXES), 8)
    torch.testing.assert_close(glimpses["full"][:2].detach(), plain[:2])
    assert not torch.allclose(glimpses["full"][2:].detach(), plain[2:])
    # every level tile decoded is one of a 5×4 grid, against 10×9 full-resolution tiles
    assert readers["tiles"].tiles_decoded < 2 * sum(len(t.level_tiles) for t in tiled)


def _boxes_of_side(side_px: float, size: int, centre: float = 0.45) -> torch.Tensor:
    """1×4 float64 normalised box of `side_px` pixels centred at `centre` of a square image."""
    half = side_px / size / 2
    box = [centre - half, centre - half, centre + half, centre + half]
    return torch.tensor([box], dtype=torch.float64)


@pytest.mark.parametrize("side", [16.0, 24.0, 64.0, 128.0])  # factor 1→2, 2→3, 7→level, 8→16
def test_blended_glimpse_is_continuous_where_the_factor_changes(side: float) -> None:
    image_1CHW = _chw(_image(300, 300, 1, seed=4)).unsqueeze(0).double()
    reader = TensorRegionReader(image_1CHW)
    glimpses = {}
    for blend in (False, True):
        below, above = (
            read_glimpses(reader, _boxes_of_side(side + d, 300), 8, level=8, blend=blend)
            for d in (-1e-6, 1e-6)
        )
        glimpses[blend] = (below - above).abs().max().item()
    # one factor: a step of noise-image size; blended: the glimpse moves with the box, ~1e-7
    assert glimpses[False] > 0.02, glimpses
    assert glimpses[True] < 1e-4, glimpses


def test_blended_glimpses_and_gradients_equal_through_tiles_and_whole_images() -> None:
    rng = np.random.default_rng(5)
    images_HWC = [rng.integers(0, 256, (300, 260, 1), dtype=np.uint8) for _ in LARGE_BOXES]
    tiled = [
        TiledImage.from_array(a, tile_size=32, tile_format="png", level_factor=8)
        for a in images_HWC
    ]
    images_BCHW = torch.stack([_chw(a) for a in images_HWC])
    weights = torch.randn(len(LARGE_BOXES), 1, 8, 8, generator=torch.Generator().manual_seed(2))
    # shifted off the pixel grid: at the upper factor (16) the last box's samples fall on pooled
    # pixel centres, where bilinear sampling has a kink and float rounding picks its side
    boxes = [[v + 0.00123 for v in box] for box in LARGE_BOXES]
    glimpses, grads = {}, {}
    for name in ("tiles", "full"):
        boxes_B4 = torch.tensor(boxes, requires_grad=True)
        if name == "tiles":
            glimpses[name] = read_glimpses(
                TileRegionReader(tiled), boxes_B4, 8, level=8, blend=True
            )
        else:
            glimpses[name] = full_image_glimpse(images_BCHW, boxes_B4, 8, level=8, blend=True)
        (glimpses[name] * weights).sum().backward()
        grads[name] = boxes_B4.grad
    torch.testing.assert_close(glimpses["tiles"], glimpses["full"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads["tiles"], grads["full"], rtol=1e-4, atol=1e-5)
    # the mix is not either factor's glimpse alone
    single = full_image_glimpse(images_BCHW, torch.tensor(boxes), 8, level=8)
    assert not torch.allclose(glimpses["full"].detach(), single)


def test_photo_stage_stores_the_same_level_as_the_numpy_path() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    photo = tile_encoded_image(buffer.getvalue(), tile_size=64, tile_format="jpeg")
    columns = level_columns(image, tile_size=64)
    assert photo.columns()["level_factor"] == columns["level_factor"] == LEVEL_FACTOR
    assert photo.level_tiles == columns["level_tiles"]


def test_jpeg_tiles_level_is_within_a_few_steps_of_pooling_the_decoded_tiles() -> None:
    """For lossy tiles the level is pooled from the pixels before encoding: pooling the decoded
    tiles instead differs by the JPEG error averaged over 64 pixels."""
    yy, xx = np.mgrid[0:256, 0:320].astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 6, (256, 320, 3))
    smooth = 128 + 80 * np.sin(xx[..., None] / 23 + np.arange(3)) * np.cos(yy[..., None] / 31)
    image = (smooth + noise).clip(0, 255).astype(np.uint8)
    tiled = TiledImage.from_array(image, tile_size=64, tile_format="jpeg", level_factor=8)
    decoded = decode_full(
        list(tiled.tiles), height=256, width=320, channels=3, tile_size=64, tile_format="jpeg"
    )
    stored = TileRegionReader([tiled]).read_regions_numpy(np.asarray([[0, 0, 32, 40]]), level=8)[0]
    difference = np.abs(stored.astype(int) - pool_exact(decoded, 8).astype(int))
    assert difference.max() <= 2
