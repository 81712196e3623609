"""Tier 1: the supervised location term (`locate_weight`): the heat map learns from boxes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jobs.training.recipes import make_recipe
from model.interface import Batch
from model.layers import SmallResNet
from model.loss import ObjectiveConfig, glimpse_log_likelihood, location_nll, object_targets
from model.saccader import dilate_cells
from model.step import hit_rate
from model.variants import create_model


def _box(cy: float, cx: float, half: float = 0.02) -> list[float]:
    return [cy - half, cx - half, cy + half, cx + half]


def test_object_cells_hold_the_box_centres() -> None:
    model = create_model("saccader_heatmap_test", num_classes=3, in_channels=1)
    grid = model.heatmap.grid
    boxes = [torch.tensor([_box(0.1, 0.9), _box(0.6, 0.3)]), torch.zeros(0, 4)]
    cells_BG = model.heatmap.object_cells(boxes)
    expected = {int(0.1 * grid) * grid + int(0.9 * grid), int(0.6 * grid) * grid + int(0.3 * grid)}
    assert set(cells_BG[0].nonzero().flatten().tolist()) == expected
    assert not cells_BG[1].any()  # no object: no target cell


def test_location_nll_counts_unmasked_object_cells_only() -> None:
    q_G = torch.tensor([0.1, 0.2, 0.3, 0.4])
    log_q_BTG = q_G.log().repeat(1, 2, 1)
    log_q_BTG[0, 1, 3] = -1e4  # glimpse 2: inhibition of return masked cell 3 out
    cells_BG = torch.tensor([[False, True, False, True]])
    nll_BT = location_nll(log_q_BTG, cells_BG)
    assert nll_BT[0, 0].item() == pytest.approx(-math.log(0.6))
    assert nll_BT[0, 1].item() == pytest.approx(-math.log(0.2))
    masked_out = location_nll(log_q_BTG, torch.tensor([[False, False, False, True]]))
    assert masked_out[0, 1].isnan()  # nothing left to find: no term for that glimpse


def _find_the_square_batch(generator: torch.Generator) -> Batch:
    """A bright square at a random place on a dark image; its box is the object."""
    B, size = 8, 32
    images = torch.zeros(B, 1, size, size)
    boxes = []
    for b in range(B):
        y, x = (int(v) for v in torch.randint(0, size - 4, (2,), generator=generator))
        images[b, 0, y : y + 4, x : x + 4] = 1.0
        boxes.append(torch.tensor([[y / size, x / size, (y + 4) / size, (x + 4) / size]]))
    return Batch(
        proxy_BCHW=images,
        labels_B=torch.zeros(B, dtype=torch.long),
        images_BCHW=images,
        gt_boxes=boxes,
    )


def _square_finder() -> torch.nn.Module:
    """A tiny heat-map saccader whose boxes (a quarter of the side) can hold the square."""
    return create_model(
        "saccader_heatmap_test",
        num_classes=2,
        in_channels=1,
        min_image_fraction=0.25,
        max_image_fraction=0.25,
    )


def _first_glimpse_hits(model: torch.nn.Module, batch: Batch) -> float:
    model.eval()
    boxes_B4 = model.predict(batch).boxes_BT4[:, 0]
    hits = 0
    for (y0, x0, y1, x1), gt_14 in zip(boxes_B4.tolist(), batch.gt_boxes, strict=True):
        cy, cx = float(gt_14[0, 0] + gt_14[0, 2]) / 2, float(gt_14[0, 1] + gt_14[0, 3]) / 2
        hits += y0 <= cy < y1 and x0 <= cx < x1
    return hits / len(boxes_B4)


def test_the_location_term_teaches_the_heat_map_where_the_object_is() -> None:
    """Only the location term moves the locator here (no score term, one class): with it the
    first glimpse learns to land on the square; with weight 0 it stays where it started."""
    hit_rates = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = _square_finder()
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(1)
        objective = ObjectiveConfig(kl_weight=0.01, recon_weight=0.0, locate_weight=weight)
        for _ in range(60):
            model.train()
            optimiser.zero_grad()
            parts = model.loss(_find_the_square_batch(generator), objective)
            parts.total.backward()
            optimiser.step()
        assert (parts.locate is not None) == (weight > 0)
        hit_rates[weight] = _first_glimpse_hits(model, _find_the_square_batch(generator))
    assert hit_rates[1.0] >= 0.75 and hit_rates[0.0] <= 0.5, hit_rates


def test_locate_weight_needs_boxes_and_the_heat_map() -> None:
    model = create_model("saccader_heatmap_test", num_classes=2, in_channels=1)
    batch = _find_the_square_batch(torch.Generator().manual_seed(0))
    batch.gt_boxes = None
    with pytest.raises(ValueError, match="needs object boxes"):
        model.loss(batch, ObjectiveConfig(locate_weight=1.0))
    with pytest.raises(ValueError, match="locate_weight > 0 trains the heat-map locator"):
        make_recipe("tiny_cpu", "data/x/v0001", {"objective.locate_weight": "1"})


def test_object_targets_name_the_object_under_each_glimpse() -> None:
    """Glimpse 1 holds object 0 (class 4), glimpse 2 holds nothing (the label, 7), glimpse 3
    holds both objects (classes 4 and 2)."""
    boxes_BT4 = torch.tensor([[[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6], [0.0, 0.0, 0.5, 0.5]]])
    gt_boxes = [torch.tensor([_box(0.1, 0.1), _box(0.4, 0.4)])]
    targets_BTK = object_targets(
        boxes_BT4, gt_boxes, [torch.tensor([4, 2])], F.one_hot(torch.tensor([7]), 10).bool()
    )
    named = [targets_BTK[0, t].nonzero().flatten().tolist() for t in range(3)]
    assert named == [[4], [7], [2, 4]]
    with pytest.raises(ValueError, match="do not index"):
        object_targets(boxes_BT4, gt_boxes, [torch.tensor([4, 12])], targets_BTK[:, 0])


def test_object_targets_reach_the_glimpse_loss() -> None:
    """The per-glimpse term follows the objects' classes, not the label, when asked."""
    model = create_model("saccader_heatmap_test", num_classes=10, in_channels=1)
    batch = _find_the_square_batch(torch.Generator().manual_seed(0))
    # objects of class 5 everywhere on a 10×10 grid: every glimpse holds some
    grid = [_box((i + 0.5) / 10, (j + 0.5) / 10, 0.01) for i in range(10) for j in range(10)]
    batch.gt_boxes = [torch.tensor(grid) for _ in batch.gt_boxes]
    batch.gt_classes = [torch.full((100,), 5) for _ in batch.gt_boxes]
    torch.manual_seed(0)
    plain = model.loss(batch, ObjectiveConfig(aux_weight=1.0)).aux_ce
    torch.manual_seed(0)
    out = model(batch.proxy_BCHW, batch.region_reader())
    torch.manual_seed(0)
    objects = model.loss(batch, ObjectiveConfig(aux_weight=1.0, object_targets=True)).aux_ce
    targets_BTK = object_targets(
        out.boxes_BT4, batch.gt_boxes, batch.gt_classes, F.one_hot(batch.labels_B, 10).bool()
    )
    expected = -glimpse_log_likelihood(out.glimpse_logits_BTK, targets_BTK).mean()
    assert objects.item() == pytest.approx(expected.item(), rel=1e-5)
    assert targets_BTK[..., 5].any() and objects.item() != pytest.approx(plain.item())


def test_guided_training_glimpses_hold_the_objects() -> None:
    """guide_glimpses: an untrained heat map's training glimpses land on the object every time;
    unguided they mostly miss it."""
    torch.manual_seed(0)
    model = _square_finder()
    batch = _find_the_square_batch(torch.Generator().manual_seed(3))
    guide_BG = model.heatmap.object_cells(batch.gt_boxes)
    model.train()
    guided = model(batch.proxy_BCHW, batch.region_reader(), guide_BG=guide_BG)
    free = model(batch.proxy_BCHW, batch.region_reader())
    assert hit_rate(guided.boxes_BT4[:, :1], batch.gt_boxes) == 1.0
    assert hit_rate(free.boxes_BT4[:, :1], batch.gt_boxes) <= 0.5
    parts = model.loss(batch, ObjectiveConfig(guide_glimpses=True, locate_weight=1.0))
    assert torch.isfinite(parts.total)


def _drawn_cells(model: torch.nn.Module, log_q_BG: torch.Tensor, **guide: object) -> set[int]:
    """The cells 400 guided draws from `log_q_BG` chose (recovered from their centres)."""
    heatmap = model.heatmap
    keys_BGL = torch.zeros(*log_q_BG.shape, 4)
    cells = set()
    for _ in range(400):
        cell = heatmap.choose(
            log_q_BG, log_q_BG, keys_BGL, sample=True, straight_through=False, **guide
        )
        distance_G = (heatmap.centres_G2 - cell.centre_B2[0]).abs().sum(dim=1)
        cells.add(int(distance_G.argmin()))
    return cells


def test_guide_radius_draws_every_neighbouring_cell_whatever_q() -> None:
    """guide_radius: the training glimpse is drawn uniformly among the 3×3 cells around the
    object's, even where q already sits on the object's cell (so the offset keeps changing);
    without it, guided draws follow q onto that one cell."""
    torch.manual_seed(0)
    model = _square_finder()
    grid = model.heatmap.grid
    centre = (grid // 2) * grid + grid // 2
    cells_BG = torch.zeros(1, grid * grid, dtype=torch.bool)
    cells_BG[0, centre] = True
    log_q_BG = torch.full((1, grid * grid), -30.0)
    log_q_BG[0, centre] = 0.0  # q: all its mass on the object's cell
    around = {centre + dy * grid + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    grown_BG = dilate_cells(cells_BG, grid, 1)
    assert set(grown_BG[0].nonzero().flatten().tolist()) == around
    assert _drawn_cells(model, log_q_BG, guide_BG=grown_BG, guide_uniform=True) == around
    assert _drawn_cells(model, log_q_BG, guide_BG=grown_BG) == {centre}
    assert _drawn_cells(model, log_q_BG, guide_BG=cells_BG, guide_uniform=True) == {centre}


def test_the_loss_guides_with_the_objectives_radius(monkeypatch: pytest.MonkeyPatch) -> None:
    """model.loss hands forward the grown cells and the uniform draw only when guide_radius
    is set."""
    model = _square_finder()
    batch = _find_the_square_batch(torch.Generator().manual_seed(3))
    seen = []
    forward = model.forward

    def spy(*args: object, **kwargs: object) -> object:
        seen.append((kwargs["guide_BG"].sum().item(), kwargs["guide_uniform"]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    model.train()
    for radius in (0, 1):
        model.loss(batch, ObjectiveConfig(guide_glimpses=True, guide_radius=radius))
    (cells_0, uniform_0), (cells_1, uniform_1) = seen
    assert cells_0 == len(batch.gt_boxes) and not uniform_0
    assert cells_1 >= 4 * cells_0 and uniform_1
    with pytest.raises(ValueError, match="needs guide_glimpses"):
        ObjectiveConfig(guide_radius=1)


def test_a_blank_glimpse_keeps_the_group_norm_gradients_bounded() -> None:
    """A glimpse of black canvas has zero variance in every group: each GroupNorm then scales
    its gradient by 1/√ε (the reason for glimpse_norm_eps)."""
    grads = {}
    for eps in (1e-5, 0.1):
        torch.manual_seed(0)
        encoder = SmallResNet(1, 16, width=16, blocks=[1, 1, 1], norm="group", norm_eps=eps)
        encoder(torch.zeros(4, 1, 32, 32)).pow(2).sum().backward()
        grads[eps] = max(p.grad.abs().max().item() for p in encoder.parameters())
    assert grads[1e-5] > 1e4 * grads[0.1], grads
