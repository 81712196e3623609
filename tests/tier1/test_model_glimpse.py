"""Tier 1: the localized spatial transformer (model/glimpse.py) — boxes from z, glimpses through
region readers against whole-image sampling, and the exact gradient with respect to z."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.glimpse import (
    TensorRegionReader,
    centred_boxes,
    full_image_glimpse,
    latent_to_boxes,
    pooling_factor,
    read_glimpses,
)
from model.layers import SmallResNet
from pipelines.region import TiledImage, TileRegionReader


def smooth_image(height: int, width: int, channels: int = 1) -> torch.Tensor:
    """A deterministic smooth float64 1×C×H×W image in [0, 1] (no flat regions)."""
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    planes = [
        0.5
        + 0.25 * torch.sin(xx / (5.0 + c)) * torch.cos(yy / 7.0)
        + 0.2 * torch.sin((xx + 2 * yy) / 11.0)
        for c in range(channels)
    ]
    return torch.stack(planes).unsqueeze(0)


@pytest.mark.parametrize("size", [(90, 120), (120, 90), (64, 64)])
def test_boxes_stay_inside_and_square_in_pixels(size: tuple[int, int]) -> None:
    H, W = size
    z_B3 = torch.tensor(
        [[-50.0, -50.0, 50.0], [50.0, 50.0, -50.0], [0.0, 0.0, 0.0], [1.0, -2.0, 3.0]]
    )
    boxes_B4 = latent_to_boxes(z_B3, [size] * 4, min_fraction=0.1, max_fraction=0.3)
    assert boxes_B4.min() >= -1e-6 and boxes_B4.max() <= 1 + 1e-6
    side_h = (boxes_B4[:, 2] - boxes_B4[:, 0]) * H
    side_w = (boxes_B4[:, 3] - boxes_B4[:, 1]) * W
    torch.testing.assert_close(side_h, side_w)
    shorter = min(H, W)
    assert (side_h >= 0.1 * shorter - 1e-4).all() and (side_h <= 0.3 * shorter + 1e-4).all()
    # extreme scales reach the bounds; the extreme centres push the box against the image edge
    assert side_h[0] == pytest.approx(0.1 * shorter, rel=1e-4)
    assert side_h[1] == pytest.approx(0.3 * shorter, rel=1e-4)
    assert boxes_B4[0, 1] == pytest.approx(0.0, abs=1e-6) and boxes_B4[0, 2] == pytest.approx(1.0)


def test_centred_boxes_keep_size() -> None:
    boxes_B4 = torch.tensor([[0.1, 0.2, 0.4, 0.6]])
    centred_B4 = centred_boxes(boxes_B4)
    torch.testing.assert_close(centred_B4, torch.tensor([[0.35, 0.3, 0.65, 0.7]]))


def _loss_of_z(
    z_B3: torch.Tensor, reader: TensorRegionReader, labels_B: torch.Tensor, blend: bool
) -> torch.Tensor:
    """A fixed glimpse path: z → boxes → glimpses → a float64 encoder (eval) → cross-entropy."""
    torch.manual_seed(0)
    encoder = SmallResNet(1, 4, width=4, blocks=[1]).double().eval()
    boxes_B4 = latent_to_boxes(z_B3, reader.image_sizes(), min_fraction=0.1, max_fraction=0.5)
    return F.cross_entropy(encoder(read_glimpses(reader, boxes_B4, 8, blend=blend)), labels_B)


@pytest.mark.parametrize("blend", [False, True])
def test_gradient_reaches_scale_x_y_and_matches_finite_differences(blend: bool) -> None:
    reader = TensorRegionReader(smooth_image(90, 120).repeat(2, 1, 1, 1))
    labels_B = torch.tensor([1, 3])
    # box sides ~30 px and ~17 px at window 8: pooling factors 3 and 2 (both paths pool); with
    # `blend`, mixed with factors 4 and 3 by weights that depend on the scale
    z_B3 = torch.tensor([[0.3, -0.4, 0.7], [-1.2, 0.9, -0.2]], dtype=torch.float64)
    z_B3.requires_grad_(True)
    loss = partial(_loss_of_z, reader=reader, labels_B=labels_B, blend=blend)
    loss(z_B3).backward()
    eps = 1e-6
    numeric_B3 = torch.zeros_like(z_B3)
    for i in range(2):
        for j in range(3):
            step_B3 = torch.zeros_like(z_B3)
            step_B3[i, j] = eps
            with torch.no_grad():
                plus, minus = loss(z_B3 + step_B3), loss(z_B3 - step_B3)
            numeric_B3[i, j] = (plus - minus) / (2 * eps)
    assert (z_B3.grad.abs() > 1e-6).all(), f"a z component gets no gradient: {z_B3.grad}"
    torch.testing.assert_close(z_B3.grad, numeric_B3, rtol=1e-5, atol=1e-9)


def test_large_box_is_area_pooled_not_aliased() -> None:
    image_1CHW = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    whole_14 = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    assert pooling_factor([0, 0, 64, 64], 8) == 8
    expected = F.avg_pool2d(image_1CHW, 8)  # window samples at the pooled pixels' centres
    torch.testing.assert_close(read_glimpses(TensorRegionReader(image_1CHW), whole_14, 8), expected)
    torch.testing.assert_close(full_image_glimpse(image_1CHW, whole_14, 8), expected)


# Boxes on a 70×50 image (H×W) with 16-px tiles and window 8: crossing tile borders, pooling
# factors 1 to 4, one box overhanging the image (zeros past the edge on every path).
BOXES = [
    [0.10, 0.12, 0.30, 0.40],  # 14×14 px, k = 1
    [0.20, 0.25, 0.55, 0.95],  # 24.5×35 px, k = 3
    [0.05, 0.02, 0.60, 0.85],  # 38.5×41.5 px, k = 4
    [0.70, 0.70, 1.10, 1.15],  # overhangs the bottom-right corner
]


@pytest.mark.parametrize(("tile_format", "channels"), [("raw", 3), ("png", 1), ("png", 3)])
def test_tile_reader_glimpses_and_gradients_equal_in_memory(
    tile_format: str, channels: int
) -> None:
    rng = np.random.default_rng(0)
    images_HWC = [rng.integers(0, 256, size=(70, 50, channels), dtype=np.uint8) for _ in BOXES]
    tiled = [TiledImage.from_array(a, tile_size=16, tile_format=tile_format) for a in images_HWC]
    images_BCHW = torch.from_numpy(np.stack(images_HWC)).permute(0, 3, 1, 2).float() / 255
    readers = {
        "tiles": TileRegionReader(tiled, threads=2),
        "tensor": TensorRegionReader(images_BCHW),
    }
    weights_BCNN = torch.randn(
        len(BOXES), channels, 8, 8, generator=torch.Generator().manual_seed(1)
    )
    glimpses, grads = {}, {}
    for name, reader in [*readers.items(), ("full", None)]:
        boxes_B4 = torch.tensor(BOXES, requires_grad=True)
        if reader is None:
            glimpses[name] = full_image_glimpse(images_BCHW, boxes_B4, 8)
        else:
            glimpses[name] = read_glimpses(reader, boxes_B4, 8)
        (glimpses[name] * weights_BCNN).sum().backward()
        grads[name] = boxes_B4.grad
    assert glimpses["full"].shape == (len(BOXES), channels, 8, 8)
    assert glimpses["full"].abs().sum() > 0 and grads["full"].abs().min() > 0
    for name in ("tiles", "tensor"):
        torch.testing.assert_close(glimpses[name], glimpses["full"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads[name], grads["full"], rtol=1e-5, atol=1e-5)
    # the point of the reader: only the tiles under the boxes were decoded
    assert readers["tiles"].tiles_decoded < sum(len(t.tiles) for t in tiled)
