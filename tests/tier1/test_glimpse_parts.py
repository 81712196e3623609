"""Tier 1: per-glimpse targets from a label's parts (a two-digit pair's digits)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jobs.training.recipes import DataSpec, build_model, make_recipe
from model.interface import Batch
from model.loss import ObjectiveConfig, glimpse_log_likelihood
from model.variants import create_model
from pipelines.synthetic import cluttered_class_names, cluttered_part_classes, pair_label


def test_one_target_is_minus_the_cross_entropy() -> None:
    logits_BTK = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(0))
    labels_B = torch.tensor([0, 5, 2, 2])
    log_p_BT = glimpse_log_likelihood(logits_BTK, F.one_hot(labels_B, 6).bool())
    expected_BT = -F.cross_entropy(
        logits_BTK.transpose(1, 2), labels_B[:, None].expand(-1, 3), reduction="none"
    )
    torch.testing.assert_close(log_p_BT, expected_BT)


def test_two_targets_sum_their_probabilities() -> None:
    logits_BTK = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.4]]]))
    targets_BK = torch.tensor([[False, True, False, True]])
    log_p_BT = glimpse_log_likelihood(logits_BTK, targets_BK)
    assert log_p_BT.item() == pytest.approx(math.log(0.6))


def test_pair_parts_are_the_two_digits() -> None:
    parts = cluttered_part_classes("pair")
    names = cluttered_class_names("pair")
    assert len(parts) == len(names) == 55
    assert parts[pair_label(3, 7)] == (3, 7) and parts[pair_label(4, 4)] == (4,)
    assert cluttered_part_classes("single") == tuple((d,) for d in range(10))
    assert cluttered_part_classes("sum") == ()  # a sum has no per-digit parts


def test_saccader_with_parts_trains_a_part_head() -> None:
    parts = cluttered_part_classes("pair")
    model = create_model("saccader_heatmap_test", num_classes=55, in_channels=1, class_parts=parts)
    proxy = torch.rand(3, 1, 16, 16)
    batch = Batch(
        proxy_BCHW=proxy,
        labels_B=torch.tensor([pair_label(3, 7), pair_label(0, 0), pair_label(2, 9)]),
        images_BCHW=torch.rand(3, 1, 64, 64),
    )
    out = model(batch.proxy_BCHW, batch.region_reader())
    assert out.logits_BK.shape == (3, 55)
    assert out.glimpse_logits_BTK.shape[2] == 10  # one logit per digit
    assert model.part_mask_KP[pair_label(3, 7)].nonzero().flatten().tolist() == [3, 7]
    parts_loss = model.loss(batch, ObjectiveConfig(kind="additive", aux_weight=1.0))
    parts_loss.total.backward()
    assert model.part_head[0].weight.grad.abs().sum() > 0
    assert math.isfinite(parts_loss.as_floats()["aux_ce"])


def test_bad_parts_are_named() -> None:
    with pytest.raises(ValueError, match="class_parts needs one non-empty tuple"):
        create_model("saccader_test", num_classes=3, in_channels=1, class_parts=((0,), (1,)))


def test_recipe_asking_for_parts_needs_them_in_the_manifest() -> None:
    cfg = make_recipe("cluttered_cpu", "unused", {})
    assert cfg.glimpse_parts
    data = DataSpec(num_classes=19, channels=1, class_parts=[])
    with pytest.raises(ValueError, match=r"no class_parts.*glimpse_parts=false"):
        build_model(cfg, data)
    data = DataSpec(num_classes=55, channels=1, class_parts=cluttered_part_classes("pair"))
    assert build_model(cfg, data).part_head is not None
    baseline = make_recipe("cluttered_cpu_patches", "unused", {})
    assert not baseline.glimpse_parts
