"""Tier 1: what trains the glimpse locations, term by term.

- the paper's locator (`locator=mlp`): the classification loss reaches the posterior's parameters
  through z and the differentiable crop (pathwise), so detaching z would show here;
- the heat-map locator: the cell is a discrete draw, so the classification loss gives its scores
  no gradient and the score-function term does; log q is the chosen cell's log-probability;
  the categorical KL is Σ q (log q − log p); inhibition of return takes visited cells out of
  both the posterior and the prior; the brightness prior (`heatmap_saliency`) enters both.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.interface import Batch
from model.loss import score_function_term
from model.variants import create_model

SIDE, PROXY = 32, 8


def _batch(n: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images_BCHW = torch.rand(n, 1, SIDE, SIDE, generator=g)
    return Batch(
        proxy_BCHW=F.interpolate(images_BCHW, size=(PROXY, PROXY), mode="area"),
        labels_B=torch.randint(0, 3, (n,), generator=g),
        images_BCHW=images_BCHW,
    )


def _grad_norm(params: list[torch.nn.Parameter]) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def _heatmap_model(**settings: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("saccader_heatmap_test", num_classes=3, in_channels=1, **settings)


def test_the_paper_boxes_are_a_differentiable_function_of_the_posterior() -> None:
    """The pathwise path of the paper's locator: the box comes from z, which comes from the
    posterior's mean, all differentiably; that the crop is differentiable in the box is
    test_model_glimpse's (finite differences)."""
    torch.manual_seed(0)
    model = create_model("saccader_test", num_classes=3, in_channels=1).train()
    batch = _batch()
    out = model(batch.proxy_BCHW, batch.region_reader())
    mean_xy = model.posterior[-1].weight  # rows 1 and 2: the mean of x and y
    (grad,) = torch.autograd.grad(out.boxes_BT4.sum(), mean_xy, allow_unused=True)
    assert grad is not None and float(grad[1:3].abs().sum()) > 0


def test_the_heatmap_cell_learns_from_the_score_term_not_from_the_classification_loss() -> None:
    model = _heatmap_model().train()
    heatmap = [model.heatmap.query.weight, *model.heatmap.keys.parameters()]
    batch = _batch()
    out = model(batch.proxy_BCHW, batch.region_reader())
    F.cross_entropy(out.logits_BK, batch.labels_B).backward(retain_graph=True)
    assert _grad_norm(heatmap) == 0  # a sampled cell: no pathwise gradient
    model.zero_grad()
    ce_B = F.cross_entropy(out.logits_BK, batch.labels_B, reduction="none")
    log_p_BT = -torch.rand_like(out.log_q_BT)  # any reward that differs between images
    score_function_term(out.log_q_BT, log_p_BT, ce_B).backward()
    assert _grad_norm(heatmap) > 0


def test_log_q_is_the_chosen_cells_and_the_kl_is_categorical() -> None:
    model = _heatmap_model().eval()
    batch = _batch()
    heatmap = model.heatmap
    with torch.no_grad():
        out = model(batch.proxy_BCHW, batch.region_reader())
        f_BL = model.proxy_encoder(batch.proxy_BCHW)
        h_BL = torch.zeros_like(f_BL)  # the first step's h̄ (no LSTM noise in eval)
        keys_BGL = heatmap.keys_of(batch.proxy_BCHW)
        log_q_BG, log_p_BG = heatmap.logits(keys_BGL, h_BL, [])
    # inference takes the mode of q: log q of the first glimpse is the largest log-probability
    torch.testing.assert_close(out.log_q_BT[:, 0], log_q_BG.max(dim=1).values)
    kl_B = (log_q_BG.exp() * (log_q_BG - log_p_BG)).sum(dim=1)
    assert (kl_B >= 0).all()
    # the first glimpse's KL: the cell's categorical KL plus the Gaussian scale's
    assert (out.kl_BT[:, 0] >= kl_B - 1e-5).all()


def test_inhibition_of_return_masks_visited_cells_in_posterior_and_prior() -> None:
    heatmap = _heatmap_model().heatmap
    batch = _batch(n=2)
    keys_BGL = heatmap.keys_of(batch.proxy_BCHW)
    h_BL = torch.randn(2, keys_BGL.shape[2])
    visited_B4 = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])  # y0, x0, y1, x1
    log_q_BG, log_p_BG = heatmap.logits(keys_BGL, h_BL, [visited_B4])
    cx_G, cy_G = ((heatmap.centres_G2[:, i] + 1) / 2 for i in range(2))
    inside_BG = torch.stack(
        [(y0 <= cy_G) & (cy_G < y1) & (x0 <= cx_G) & (cx_G < x1) for y0, x0, y1, x1 in visited_B4]
    )
    assert inside_BG.any(dim=1).all() and not inside_BG.all(dim=1).any()
    for log_BG in (log_q_BG, log_p_BG):
        assert float(log_BG.detach().exp()[inside_BG].sum()) < 1e-6
        torch.testing.assert_close(log_BG.exp().sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("saliency", [0.0, 12.0])
def test_the_brightness_prior_is_in_both_posterior_and_prior(saliency: float) -> None:
    heatmap = _heatmap_model(heatmap_saliency=saliency).heatmap
    batch = _batch(n=3)
    keys_BGL = heatmap.keys_of(batch.proxy_BCHW)
    brightness_BG, _ = heatmap.brightness(batch.proxy_BCHW)
    assert torch.allclose(brightness_BG.amax(dim=1), torch.ones(3))  # relative to the brightest
    h_BL = torch.randn(3, keys_BGL.shape[2])
    plain_q, plain_p = heatmap.logits(keys_BGL, h_BL, [])
    bright_q, bright_p = heatmap.logits(keys_BGL, h_BL, [], brightness_BG)
    gain = float(heatmap.saliency.detach()) if heatmap.saliency is not None else 0.0
    for plain, bright in ((plain_q, bright_q), (plain_p, bright_p)):
        # the same additive term in both: log-probabilities shift by gain × brightness (+ a
        # per-image normaliser)
        shift_BG = bright - plain - gain * brightness_BG
        torch.testing.assert_close(shift_BG, shift_BG[:, :1].expand_as(shift_BG))
    if saliency:  # learned scores start at zero: brightness alone orders the posterior's cells
        assert torch.equal(bright_q.argmax(dim=1), brightness_BG.argmax(dim=1))


def test_a_prediction_skips_the_decoder_and_matches_the_full_forward_pass() -> None:
    model = _heatmap_model().eval()
    batch = _batch()
    calls = []
    model.decoder.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        full = model(batch.proxy_BCHW, batch.region_reader(), sample=False)
        decoded = len(calls)
        prediction = model.predict(batch)
    assert decoded == model.config.glimpses and len(calls) == decoded  # none in the prediction
    assert full.recon_BTCHW is not None
    torch.testing.assert_close(prediction.logits_BK, full.logits_BK)
    torch.testing.assert_close(prediction.boxes_BT4, full.boxes_BT4)


def test_the_concat_classifier_reads_the_glimpses_in_order_and_the_mean_does_not() -> None:
    """`classifier_input=concat` (the reference's StarCraft II option): the class scores depend on
    which glimpse saw what; with the paper's mean they do not. The per-glimpse head then has
    weights of its own (one a_t is not the classifier's input)."""
    batch = _batch()
    for kind, order_matters in (("concat", True), ("mean", False)):
        torch.manual_seed(0)
        model = create_model(
            "saccader_test", num_classes=3, in_channels=1, classifier_input=kind
        ).eval()
        a_BTL = torch.randn(len(batch.labels_B), model.config.glimpses, model.config.hidden)
        pooled = (lambda a: a.flatten(1)) if kind == "concat" else (lambda a: a.mean(dim=1))
        swapped = model.classifier(pooled(a_BTL.flip(1)))
        assert torch.allclose(model.classifier(pooled(a_BTL)), swapped) != order_matters
        seen: list[torch.Tensor] = []  # each step's a_t, as forward computes it
        model.glimpse_head.register_forward_hook(lambda _m, _i, a, seen=seen: seen.append(a))
        out = model(batch.proxy_BCHW, batch.region_reader(), reconstruct=False)
        expected = model.classifier(pooled(torch.stack(seen, dim=1)))
        assert torch.allclose(out.logits_BK, expected)
        assert out.glimpse_logits_BTK.shape == (6, model.config.glimpses, 3)
        assert (model.glimpse_classifier is not None) == (kind == "concat")


def test_an_unknown_classifier_input_is_refused() -> None:
    with pytest.raises(ValueError, match="classifier_input 'sum'"):
        create_model("saccader_test", num_classes=3, in_channels=1, classifier_input="sum")


@pytest.mark.parametrize("refine", [False, True])
def test_refine_centres_the_box_on_the_brightest_blob_of_the_chosen_cell(refine: bool) -> None:
    """One bright stride-wide blob off its cell's centre: with `heatmap_refine` the box is
    centred on the blob, without it on the cell (and the cell is the blob's either way)."""
    model = _heatmap_model(heatmap_saliency=50.0, heatmap_refine=refine).eval()
    heatmap = model.heatmap
    P, s = heatmap.size, heatmap.stride
    proxy_B1PP = torch.zeros(1, 1, P, P)
    row, col = 2 * s + 1, 3 * s + 1  # the blob's top-left: one pixel into cell (2, 3)
    proxy_B1PP[0, 0, row : row + s, col : col + s] = 1.0
    _, peaks_BG2 = heatmap.brightness(proxy_B1PP)
    cell = 2 * heatmap.grid + 3
    blob_xy = torch.tensor([(col + s / 2) / P * 2 - 1, (row + s / 2) / P * 2 - 1])
    torch.testing.assert_close(peaks_BG2[0, cell], blob_xy)
    images_BCHW = F.interpolate(proxy_B1PP, size=(SIDE, SIDE), mode="nearest")
    batch = Batch(
        proxy_BCHW=proxy_B1PP, labels_B=torch.zeros(1, dtype=torch.int64), images_BCHW=images_BCHW
    )
    out = model(batch.proxy_BCHW, batch.region_reader(), reconstruct=False)
    box_4 = out.boxes_BT4[0, 0]
    centre_xy = torch.stack([box_4[1] + box_4[3], box_4[0] + box_4[2]]) - 1  # to [−1, 1]
    expected = blob_xy if refine else heatmap.centres_G2[cell]
    torch.testing.assert_close(centre_xy, expected, atol=0.02, rtol=0)


@pytest.mark.parametrize(
    ("straight_through", "offset"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_the_pathwise_paths_reach_the_location_only_when_switched_on(
    straight_through: bool, offset: bool
) -> None:
    """The classification loss alone: through the straight-through cell it reaches the cell
    scores, through the sub-cell offset the posterior's x, y rows; each is exactly zero off."""
    model = _heatmap_model(straight_through=straight_through, heatmap_offset=offset).train()
    cell_scores = [model.heatmap.query.weight, *model.heatmap.keys.parameters()]
    batch = _batch()
    out = model(batch.proxy_BCHW, batch.region_reader())
    F.cross_entropy(out.logits_BK, batch.labels_B).backward()
    assert (_grad_norm(cell_scores) > 0) == straight_through
    mean_xy = model.posterior[-1].weight.grad[1:3]  # rows 1 and 2: the mean of x and y
    assert (float(mean_xy.abs().sum()) > 0) == offset


def test_the_score_function_term_against_hand_computed_values() -> None:
    log_q_BT = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    log_p_BT = torch.tensor([[-0.1, -0.7], [-2.0, -0.2]], requires_grad=True)
    ce_B = torch.tensor([0.3, 1.2], requires_grad=True)
    term = score_function_term(log_q_BT, log_p_BT, ce_B)
    # rewards log p − ce: [[−0.4, −1.0], [−3.2, −1.4]]; per-glimpse batch means −1.8, −1.2;
    # advantages [[1.4, 0.2], [−1.4, −0.2]]; −mean(advantage · log q) = −(−0.5) / 4
    assert float(term.detach()) == pytest.approx(0.125)
    term.backward()
    expected = -torch.tensor([[1.4, 0.2], [-1.4, -0.2]]) / 4
    torch.testing.assert_close(log_q_BT.grad, expected)
    assert log_p_BT.grad is None and ce_B.grad is None  # the reward is a constant
