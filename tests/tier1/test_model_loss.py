"""Tier 1: the objectives' maths (model/loss.py) against hand-written formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from model.loss import (
    ObjectiveConfig,
    classification_loss,
    gaussian_kl,
    reconstruction_nll,
    saccader_objective,
)

B, T, K = 3, 2, 4


def terms(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "logits_BK": torch.randn(B, K, generator=g),
        "labels_B": torch.tensor([0, 3, 1]),
        "kl_BT": torch.rand(B, T, generator=g),
        "recon_nll_BT": 10 * torch.rand(B, T, generator=g),
        "glimpse_logits_BTK": torch.randn(B, T, K, generator=g),
    }


def test_gaussian_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p, logvar_q, logvar_p = (torch.randn(5, 3, generator=g) for _ in range(4))
    expected = kl_divergence(
        Normal(mu_q, (0.5 * logvar_q).exp()), Normal(mu_p, (0.5 * logvar_p).exp())
    )
    torch.testing.assert_close(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), expected)
    assert gaussian_kl(mu_q, logvar_q, mu_q, logvar_q).abs().max() < 1e-6


def test_reconstruction_nll_sums_pixels_per_glimpse() -> None:
    g = torch.Generator().manual_seed(0)
    recon_BTCHW = torch.randn(B, T, 1, 4, 4, generator=g)
    target_BCHW = torch.rand(B, 1, 4, 4, generator=g)
    bernoulli_BT = reconstruction_nll(recon_BTCHW, target_BCHW, "bernoulli")
    p = torch.sigmoid(recon_BTCHW[1, 0])
    by_hand = -(target_BCHW[1] * p.log() + (1 - target_BCHW[1]) * (1 - p).log()).sum()
    assert bernoulli_BT.shape == (B, T)
    torch.testing.assert_close(bernoulli_BT[1, 0], by_hand)
    gaussian_BT = reconstruction_nll(recon_BTCHW, target_BCHW, "gaussian")
    by_hand = (0.5 * (recon_BTCHW[2, 1] - target_BCHW[2]) ** 2).sum() + 16 * 0.5 * math.log(
        2 * math.pi
    )
    torch.testing.assert_close(gaussian_BT[2, 1], by_hand)


@pytest.mark.parametrize("aux_weight", [0.0, 0.5])
def test_product_is_vae_times_cross_entropy(aux_weight: float) -> None:
    t = terms()
    config = ObjectiveConfig(kind="product", kl_weight=5.0, aux_weight=aux_weight)
    parts = saccader_objective(**t, config=config)
    ce_B = F.cross_entropy(t["logits_BK"], t["labels_B"], reduction="none")
    vae_B = (t["recon_nll_BT"] + 5.0 * t["kl_BT"]).mean(1)
    aux = F.cross_entropy(
        t["glimpse_logits_BTK"].reshape(B * T, K), t["labels_B"].repeat_interleave(T)
    )
    torch.testing.assert_close(parts.total, (vae_B * ce_B).mean() + aux_weight * aux)
    torch.testing.assert_close(parts.ce, ce_B.mean())
    torch.testing.assert_close(parts.kl, t["kl_BT"].sum(1).mean())
    torch.testing.assert_close(parts.aux_ce, aux)


def test_additive_is_the_bound_plus_reconstruction() -> None:
    t = terms(seed=1)
    config = ObjectiveConfig(kind="additive", kl_weight=0.5, recon_weight=0.1)
    parts = saccader_objective(**t, config=config)
    ce_B = F.cross_entropy(t["logits_BK"], t["labels_B"], reduction="none")
    expected = ce_B + 0.5 * t["kl_BT"].sum(1) + 0.1 * t["recon_nll_BT"].mean(1)
    torch.testing.assert_close(parts.total, expected.mean())
    torch.testing.assert_close(parts.recon, t["recon_nll_BT"].mean())
    accuracy = (t["logits_BK"].argmax(1) == t["labels_B"]).float().mean()
    torch.testing.assert_close(parts.accuracy, accuracy)


def test_parts_are_detached_floats_and_total_keeps_its_graph() -> None:
    t = terms()
    t["logits_BK"].requires_grad_(True)
    parts = saccader_objective(**t, config=ObjectiveConfig())
    assert parts.total.requires_grad and not parts.ce.requires_grad
    assert {"total", "ce", "kl", "recon", "aux_ce", "accuracy"} <= set(parts.as_floats())
    plain = classification_loss(t["logits_BK"], t["labels_B"])
    assert plain.kl == 0 and plain.recon == 0
    torch.testing.assert_close(plain.total, F.cross_entropy(t["logits_BK"], t["labels_B"]))
