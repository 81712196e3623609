"""Objectives. Every one returns `LossParts`: the total to minimise and its named parts, to log.

Shape legend: B batch, T glimpses, K classes, C channels, H height, W width, 3 = z dims.

Two saccader objectives (MODEL.md, "Objective"):
- `product`, the reference code's: L = L_VAE · L_cls per sample, with
  L_VAE = (1/T) Σ_t [−log p(x̃ | z_t, h_{t−1}) + β·KL(q_t ‖ p_t)] and L_cls the cross-entropy.
- `additive`, the paper's bound:
  L = CE + β·Σ_t KL(q_t ‖ p_t) + λ·(1/T) Σ_t −log p(x̃ | z_t, h_{t−1}).
Reported parts: `ce` (mean over the batch), `kl` (Σ_t per sample, batch mean), `recon` (the proxy's
negative log-likelihood summed over pixels, mean over glimpses and batch), `aux_ce` (per-glimpse
classifiers, mean over glimpses and batch; weighted into the total by `aux_weight`), and
`accuracy` (of the final logits; logged, never optimised).

Default: `additive`, what training uses (`TrainConfig.objective.kind`; BENCHMARKS.md,
"Localization": with the heat-map locator the product localised weakly in 10 epochs). Fitting alone
(2-core CPU, `saccader_test` with box sides 0.1–0.3, 64 images of 32×32, Adam 3e-3, clip 0.25, 2
seeds; steps to 100% train accuracy, of at most 600): on a "which quadrant holds the square" task
product β=1 took 80/160 steps, β=5 160/110; additive β=1 λ=1 450/420, β=0.1 λ=0.01 240/100. On
random labels product took 290/230 (β=1), additive β=1 λ=1 500 and >600. In the sum it is mostly the
KL that slows fitting (quadrant, 1 seed: β=0 took 100 steps without and 150 with the
reconstruction); the product scales the VAE terms by the cross-entropy, so they fade as
classification improves. That measures fitting only, not generalisation or where the glimpses go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from model.glimpse import centres_inside

OBJECTIVES = ("product", "additive")
WEIGHTS = ("kl_weight", "recon_weight", "aux_weight", "score_weight", "locate_weight")
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass(kw_only=True)
class ObjectiveConfig:
    """How the saccader's loss is put together (plain classifiers use only the cross-entropy)."""

    # "additive": the paper's bound (what the recipes train); "product": the reference code's
    kind: Literal["product", "additive"] = "additive"
    kl_weight: float = 1.0  # β; the paper's product runs used 5.0 (1.8 for StarCraft II)
    recon_weight: float = 1.0  # λ on the proxy reconstruction NLL (additive only)
    aux_weight: float = 0.0  # weight of the per-glimpse cross-entropy (the reference has none)
    # weight of the score-function (REINFORCE) term for the glimpse locations; 0: pathwise only
    score_weight: float = 0.0
    # weight of the supervised location term (`location_nll`): the heat map is told which cells
    # hold an object, from the dataset's boxes. Not the paper's (its location is unsupervised)
    locate_weight: float = 0.0
    # per-glimpse targets from the dataset's objects: a glimpse whose box holds an object's centre
    # is asked that object's class, the others the label's (`object_targets`); not the paper's
    object_targets: bool = False
    # for a count label (StarCraft II's marines): each glimpse is asked how many objects' centres
    # its box holds (`count_targets`), not the whole image's count, which no one glimpse can see;
    # the final classifier still answers the image's count. Not the paper's
    glimpse_counts: bool = False
    # training glimpses drawn from q restricted to the cells that hold an object (where any is
    # left), so the glimpse classifier reads objects while q still learns where they are
    guide_glimpses: bool = False
    # guide_glimpses: draw uniformly among the cells within this many cells (either way) of an
    # object's, not from q on the object's cell alone. Each epoch then reads each object at a new
    # offset in the glimpse: with one fixed glimpse per photo, `signs_cpu`'s glimpse encoder
    # memorised the 2,000 photos and read fewer test signs (BENCHMARKS.md, "Street signs"). The
    # location term still teaches the object's own cell.
    guide_radius: int = 0

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"unknown objective kind {self.kind!r}; use one of {OBJECTIVES}")
        for name in WEIGHTS:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.glimpse_counts and self.object_targets:
            raise ValueError("glimpse_counts and object_targets are two kinds of glimpse target")
        if self.guide_radius < 0 or (self.guide_radius and not self.guide_glimpses):
            raise ValueError(
                f"guide_radius must be >= 0 and needs guide_glimpses, got {self.guide_radius}"
            )


@dataclass
class LossParts:
    """The total (with its graph) and the parts (detached), each worth logging."""

    total: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor
    recon: torch.Tensor
    aux_ce: torch.Tensor
    accuracy: torch.Tensor
    score: torch.Tensor | None = None  # the score-function surrogate (0 when unused)
    locate: torch.Tensor | None = None  # the supervised location NLL (None when unused)

    def as_floats(self) -> dict[str, float]:
        names = ("total", "ce", "kl", "recon", "aux_ce", "accuracy")
        names += tuple(n for n in ("score", "locate") if getattr(self, n) is not None)
        return {name: float(getattr(self, name).detach()) for name in names}


def accuracy(logits_BK: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
    """Share of the batch whose argmax class is the label."""
    return (logits_BK.detach().argmax(dim=1) == labels_B).float().mean()


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) ‖ N(mu_p, e^logvar_p)) per coordinate (diagonal Gaussians)."""
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0
    )


def reconstruction_nll(
    recon_BTCHW: torch.Tensor, target_BCHW: torch.Tensor, likelihood: str
) -> torch.Tensor:
    """−log p(x̃ | z_t, h_{t−1}) per sample and glimpse (B×T), summed over pixels.

    `bernoulli`: the decoder gives logits and the [0, 1] target is a (soft) Bernoulli mean, as in
    the reference; `gaussian`: the decoder gives the mean of a unit-variance Gaussian.
    """
    target_BTCHW = target_BCHW.unsqueeze(1).expand_as(recon_BTCHW)
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(recon_BTCHW, target_BTCHW, reduction="none")
    else:
        nll = 0.5 * (recon_BTCHW - target_BTCHW) ** 2 + 0.5 * math.log(2 * math.pi)
    return nll.flatten(2).sum(dim=2)


def classification_loss(logits_BK: torch.Tensor, labels_B: torch.Tensor) -> LossParts:
    """Cross-entropy alone (the baselines)."""
    ce = F.cross_entropy(logits_BK, labels_B)
    zero = ce.new_zeros(())
    acc = accuracy(logits_BK, labels_B)
    return LossParts(total=ce, ce=ce.detach(), kl=zero, recon=zero, aux_ce=zero, accuracy=acc)


def saccader_objective(
    *,
    logits_BK: torch.Tensor,
    labels_B: torch.Tensor,
    kl_BT: torch.Tensor,
    recon_nll_BT: torch.Tensor,
    glimpse_logits_BTK: torch.Tensor | None,
    config: ObjectiveConfig,
    log_q_BT: torch.Tensor | None = None,
    glimpse_targets_BK: torch.Tensor | None = None,
    locate_nll_BT: torch.Tensor | None = None,
) -> LossParts:
    """Combine the saccader's terms into `product` or `additive` (see the module docstring),
    plus the weighted score-function term when `log_q_BT` is given (`score_function_term`)
    and the weighted supervised location term when `locate_nll_BT` is (`location_nll`: NaN
    where a glimpse had no object left to find, left out of the mean).

    `glimpse_targets_BK`: per sample, the classes a single glimpse may rightly name (bool, over
    the glimpse logits' classes); default: the label alone. A two-digit pair's are its digits,
    since one glimpse sees one digit (`glimpse_log_likelihood`)."""
    ce_B = F.cross_entropy(logits_BK, labels_B, reduction="none")
    if config.kind == "product":
        vae_B = (recon_nll_BT + config.kl_weight * kl_BT).mean(dim=1)
        total = (vae_B * ce_B).mean()
    else:
        total = (
            ce_B + config.kl_weight * kl_BT.sum(dim=1) + config.recon_weight * recon_nll_BT.mean(1)
        ).mean()
    aux_ce = ce_B.new_zeros(())
    if glimpse_logits_BTK is not None:
        if glimpse_targets_BK is None:
            glimpse_targets_BK = F.one_hot(labels_B, glimpse_logits_BTK.shape[2]).bool()
        log_p_BT = glimpse_log_likelihood(glimpse_logits_BTK, glimpse_targets_BK)
        aux_ce = -log_p_BT.mean()
        total = total + config.aux_weight * aux_ce
    score = ce_B.new_zeros(())
    if config.score_weight > 0 and log_q_BT is not None and glimpse_logits_BTK is not None:
        score = score_function_term(log_q_BT, log_p_BT, ce_B)
        total = total + config.score_weight * score
    locate = None
    if locate_nll_BT is not None:
        found_BT = ~locate_nll_BT.isnan()
        locate = locate_nll_BT[found_BT].sum() / found_BT.sum().clamp_min(1)
        total = total + config.locate_weight * locate
    return LossParts(
        total=total,
        ce=ce_B.mean().detach(),
        kl=kl_BT.sum(dim=1).mean().detach(),
        recon=recon_nll_BT.mean().detach(),
        aux_ce=aux_ce.detach(),
        accuracy=accuracy(logits_BK, labels_B),
        score=score.detach(),
        locate=None if locate is None else locate.detach(),
    )


def location_nll(log_q_BTG: torch.Tensor, object_cells_BG: torch.Tensor) -> torch.Tensor:
    """−log Σ_{g holds an object} q_t(g): per glimpse (B×T), how far the heat map's posterior is
    from the cells that hold an object's centre (any object: with several, each glimpse may take
    any that an earlier glimpse has not covered). Cells that inhibition of return masked out
    (log q ≈ −1e4) are not targets; a glimpse with no target left gets NaN (no term)."""
    targets_BTG = object_cells_BG[:, None, :] & (log_q_BTG > -1e3)
    # a finite fill: a row of −inf would give NaN gradients even where its term is left out
    masked_BTG = log_q_BTG.masked_fill(~targets_BTG, -1e9)
    nll_BT = -torch.logsumexp(masked_BTG, dim=2)
    return nll_BT.masked_fill(~targets_BTG.any(dim=2), float("nan"))


def glimpse_log_likelihood(
    glimpse_logits_BTK: torch.Tensor, targets_BK: torch.Tensor
) -> torch.Tensor:
    """log p(glimpse t names one of its target classes) = log Σ_{k ∈ targets} p(k | a_t), B×T.
    `targets_BK`: per sample (B×K), or per glimpse (B×T×K, `object_targets`). With the label as
    the only target this is minus the cross-entropy."""
    log_p_BTK = F.log_softmax(glimpse_logits_BTK, dim=2)
    targets_BTK = targets_BK[:, None, :] if targets_BK.dim() == 2 else targets_BK
    masked_BTK = log_p_BTK.masked_fill(~targets_BTK, float("-inf"))
    return torch.logsumexp(masked_BTK, dim=2)


def score_function_term(
    log_q_BT: torch.Tensor, log_p_BT: torch.Tensor, ce_B: torch.Tensor
) -> torch.Tensor:
    """REINFORCE surrogate −mean[(r − b)·log q(z_t)] whose gradient moves q toward the locations
    that explained the label (Williams 1992; Mnih et al. 2014).

    Reward of glimpse t: `log_p_BT`, what that glimpse alone tells (`glimpse_log_likelihood`), +
    log p(y | all glimpses) (what it added to the answer), detached. Baseline b: the batch mean of
    the reward of the same glimpse index, a variance reduction that needs no extra network. Unlike
    the pathwise gradient of bilinear sampling, this signal is not limited to boxes that already
    overlap the object.
    """
    reward_BT = (log_p_BT - ce_B[:, None]).detach()
    advantage_BT = reward_BT - reward_BT.mean(dim=0, keepdim=True)
    return -(advantage_BT * log_q_BT).mean()


def object_targets(
    boxes_BT4: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    gt_classes: list[torch.Tensor],
    label_targets_BK: torch.Tensor,
) -> torch.Tensor:
    """B×T×K per-glimpse targets: the classes of the objects whose centres glimpse t's box holds
    (`centres_inside`), or the sample's label targets where it holds none. Object classes index
    the glimpse logits (the label's classes, or the parts' where the label has parts)."""
    B, T, K = *boxes_BT4.shape[:2], label_targets_BK.shape[1]
    targets_BTK = label_targets_BK[:, None, :].expand(B, T, K).clone()
    for b, (objects_N4, classes_N) in enumerate(zip(gt_boxes, gt_classes, strict=True)):
        if classes_N.numel() == 0:
            continue
        if int(classes_N.max()) >= K or int(classes_N.min()) < 0:
            raise ValueError(
                f"object classes {classes_N.tolist()} do not index the {K} per-glimpse classes"
            )
        inside_TN = centres_inside(boxes_BT4[b].detach(), objects_N4)
        named_TK = (inside_TN.float() @ F.one_hot(classes_N, K).float()) > 0
        hit_T = inside_TN.any(dim=1)
        targets_BTK[b, hit_T] = named_TK[hit_T]
    return targets_BTK


def count_targets(boxes_BT4: torch.Tensor, gt_boxes: list[torch.Tensor], K: int) -> torch.Tensor:
    """B×T×K one-hot per-glimpse targets for a count label: the number of objects whose centres
    glimpse t's box holds (`centres_inside`), capped at K − 1 (class k means k objects)."""
    B, T = boxes_BT4.shape[:2]
    counts_BT = torch.zeros(B, T, dtype=torch.long, device=boxes_BT4.device)
    for b, objects_N4 in enumerate(gt_boxes):
        if objects_N4.numel():
            counts_BT[b] = centres_inside(boxes_BT4[b].detach(), objects_N4).sum(dim=1)
    return F.one_hot(counts_BT.clamp(max=K - 1), K).bool()
