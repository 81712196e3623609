"""Tier 1: the saccader learns where to look, and the hit-rate metric counts what it should.

The toy task: a bright square at a random place on a noisy field; the label is the orientation of
the stripes inside it, which the (pooled) proxy cannot show while it does show where the square is.
A short run must move the inference boxes onto the square, far above a centred box of the same size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.glimpse import centre_to_boxes, centred_boxes
from model.interface import Batch
from model.loss import ObjectiveConfig
from model.step import centred_hit_rate, eval_step, hit_rate, train_step
from model.variants import create_model

SIDE, SQUARE, PROXY = 48, 8, 12


pytestmark = pytest.mark.usefixtures("one_thread")


def stripes_batch(n: int, seed: int) -> Batch:
    """A striped bright square somewhere on dim noise; label 0: horizontal stripes, 1: vertical."""
    g = torch.Generator().manual_seed(seed)
    labels_B = torch.randint(0, 2, (n,), generator=g)
    images_BCHW = 0.3 * torch.rand(n, 1, SIDE, SIDE, generator=g)
    corners_B2 = torch.randint(0, SIDE - SQUARE + 1, (n, 2), generator=g)
    ramp = torch.arange(SQUARE) % 2 == 0
    horizontal = ramp[:, None].expand(SQUARE, SQUARE).float()
    gt = []
    for b, (y, x) in enumerate(corners_B2.tolist()):
        stripes = horizontal if labels_B[b] == 0 else horizontal.T
        images_BCHW[b, 0, y : y + SQUARE, x : x + SQUARE] = 0.4 + 0.6 * stripes
        gt.append(torch.tensor([[y, x, y + SQUARE, x + SQUARE]], dtype=torch.float32) / SIDE)
    proxy_BCHW = F.interpolate(images_BCHW, size=(PROXY, PROXY), mode="area")
    return Batch(proxy_BCHW=proxy_BCHW, labels_B=labels_B, images_BCHW=images_BCHW, gt_boxes=gt)


def test_hit_rate_on_hand_made_boxes() -> None:
    # one object centred at (y, x) = (0.2, 0.7) in image 0; two objects in image 1; none in image 2
    gt = [
        torch.tensor([[0.1, 0.6, 0.3, 0.8]]),
        torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.8, 0.8, 1.0, 1.0]]),
        torch.zeros(0, 4),
    ]
    boxes_BT4 = torch.tensor(
        [
            [[0.1, 0.6, 0.3, 0.8], [0.5, 0.5, 0.9, 0.9]],  # hit, miss
            [[0.0, 0.0, 0.05, 0.05], [0.95, 0.95, 1.0, 1.0]],  # both miss the centres 0.1 and 0.9
            [[0.0, 0.0, 1.0, 1.0], [0.4, 0.4, 0.6, 0.6]],  # nothing to hit
        ]
    )
    assert hit_rate(boxes_BT4, gt) == pytest.approx(1 / 6)
    boxes_BT4[1, 1] = torch.tensor([0.8, 0.8, 1.0, 1.0])  # now holds (0.9, 0.9)
    assert hit_rate(boxes_BT4, gt) == pytest.approx(2 / 6)
    centred = centred_boxes(boxes_BT4.flatten(0, 1)).view_as(boxes_BT4)
    torch.testing.assert_close(centred[0, 0], torch.tensor([0.4, 0.4, 0.6, 0.6]))
    assert hit_rate(centred, gt) == 0.0  # no object centre lies near the middle
    assert centred_hit_rate(boxes_BT4, gt) == 0.0


def test_centre_to_boxes_keeps_boxes_inside() -> None:
    z_B3 = torch.tensor([[0.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
    boxes_B4 = centre_to_boxes(z_B3, [(10, 20)] * 2, min_fraction=0.4, max_fraction=0.4)
    assert boxes_B4.min() >= 0 and boxes_B4.max() <= 1
    # side 0.4 of the shorter side (10 px) = 4 px: 0.4 of the height, 0.2 of the width
    torch.testing.assert_close(boxes_B4[0], torch.tensor([0.6, 0.0, 1.0, 0.2]))
    torch.testing.assert_close(boxes_B4[1], torch.tensor([0.3, 0.4, 0.7, 0.6]))


def test_short_training_moves_boxes_onto_the_square() -> None:
    torch.manual_seed(0)
    model = create_model(
        "saccader_test",
        num_classes=2,
        in_channels=1,
        proxy_size=PROXY,
        locator="heatmap",
        heatmap_stride=1,
        glimpses=1,
        min_image_fraction=0.25,
        max_image_fraction=0.25,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    objective = ObjectiveConfig(
        kind="additive", kl_weight=0.0, recon_weight=0.0, aux_weight=1.0, score_weight=1.0
    )
    test = stripes_batch(200, seed=10_000)
    before = eval_step(model, test)
    for step in range(300):
        train_step(model, stripes_batch(32, seed=step), optimizer, objective)
    after = eval_step(model, test)
    assert after["centred_hit_rate"] < 0.15
    assert after["hit_rate"] > max(0.6, 4 * after["centred_hit_rate"]), (before, after)
    assert after["accuracy"] > 0.8
