"""One training step and one evaluation step, in plain PyTorch (no Ray, no ranks): the Ray Train
loop in `jobs/` calls these on each worker's batches.

Shape legend: B batch, T glimpses, N objects, 4 = a normalised box (y0, x0, y1, x1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.glimpse import centred_boxes, centres_inside
from model.interface import Batch, BatchClassifier
from model.loss import LossParts, ObjectiveConfig


@dataclass(frozen=True)
class BoxCurriculum:
    """Large boxes first, shrinking linearly to the model's own sides, which hold from `steps`
    on: the glimpse classifier first learns from glimpses that usually hold the object
    (BENCHMARKS.md, "Localization"). A function of the step alone, so a resumed run continues
    the same schedule; it sets the model's training sides and never its config, so evaluation
    and the shipped model use the config's sides."""

    start: float  # box side (fraction of the shorter image side) at step 0
    steps: int  # steps (or epochs) until the model's sides; 0: no curriculum

    def sides(self, step: int, final: tuple[float, float]) -> tuple[float, float] | None:
        """(smallest, largest) box side at `step`, from `final` (the model's); None: no
        curriculum."""
        if self.steps == 0:
            return None
        done = min(1.0, step / self.steps)
        start = max(self.start, final[1])
        lo, hi = (start + done * (side - start) for side in final)
        return lo, hi

    def apply(self, model: nn.Module, step: int) -> None:
        """Set `model`'s training sides for `step`; a model without boxes is left alone."""
        config = getattr(model, "config", None)
        if self.steps == 0 or not hasattr(config, "max_image_fraction"):
            return
        final = (config.min_image_fraction, config.max_image_fraction)
        model.set_training_sides(self.sides(step, final))


class LossModule(nn.Module):
    """A classifier whose forward is its training loss: the shape data-parallel wrappers (DDP)
    need, since they synchronise gradients only for what runs through forward."""

    def __init__(self, classifier: BatchClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, batch: Batch, objective: ObjectiveConfig) -> LossParts:
        return self.classifier.loss(batch, objective)


def train_step(
    model: BatchClassifier | nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    objective: ObjectiveConfig,
    *,
    clip_value: float | None = 0.25,
) -> dict[str, float]:
    """One optimiser step on `batch`; returns the loss parts and the accuracy as floats.

    Gradients are clipped by value (the paper's 0.25); `clip_value=None` turns clipping off.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    # A bare classifier is called through .loss; a LossModule (possibly inside DDP) through
    # forward, which is what lets DDP synchronise the gradients.
    parts = (
        model.loss(batch, objective)
        if isinstance(model, BatchClassifier)
        else model(batch, objective)
    )
    parts.total.backward()
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(model.parameters(), clip_value)
    optimizer.step()
    return parts.as_floats()


def eval_step(model: BatchClassifier, batch: Batch) -> dict[str, Any]:
    """Evaluate `batch` in eval mode (deterministic): cross-entropy, accuracy, the prediction,
    and — when the model returns boxes and the batch has object boxes — the glimpse hit-rate and
    the objects covered, each beside centred boxes of the same sizes (the honest yardstick,
    MODEL.md)."""
    model.eval()
    prediction = model.predict(batch)
    out: dict[str, Any] = {
        "ce": float(F.cross_entropy(prediction.logits_BK, batch.labels_B)),
        "accuracy": float((prediction.labels_B == batch.labels_B).float().mean()),
        "prediction": prediction,
    }
    if prediction.boxes_BT4 is not None and batch.gt_boxes is not None:
        boxes_BT4 = prediction.boxes_BT4
        centred_BT4 = centred_boxes(boxes_BT4.flatten(0, 1)).view_as(boxes_BT4)
        out["hit_rate"] = hit_rate(boxes_BT4, batch.gt_boxes)
        out["centred_hit_rate"] = hit_rate(centred_BT4, batch.gt_boxes)
        out["objects"], out["covered"] = object_coverage(boxes_BT4, batch.gt_boxes)
        _, out["centred_covered"] = object_coverage(centred_BT4, batch.gt_boxes)
    return out


def centred_hit_rate(boxes_BT4: torch.Tensor, gt_boxes: list[torch.Tensor]) -> float:
    """`hit_rate` of boxes of the same sizes centred on the image: the yardstick of a locator
    that has learnt nothing but the objects' usual place."""
    return hit_rate(centred_boxes(boxes_BT4.flatten(0, 1)).view_as(boxes_BT4), gt_boxes)


def hit_rate(boxes_BT4: torch.Tensor, gt_boxes: list[torch.Tensor]) -> float:
    """Share of glimpses whose box contains the centre of at least one of its image's objects."""
    hits = []
    for boxes_T4, objects_N4 in zip(boxes_BT4, gt_boxes, strict=True):
        if objects_N4.numel() == 0:
            hits.append(torch.zeros(boxes_T4.shape[0], dtype=torch.bool, device=boxes_T4.device))
            continue
        hits.append(centres_inside(boxes_T4, objects_N4).any(dim=1))
    return float(torch.cat(hits).float().mean())


def object_coverage(boxes_BT4: torch.Tensor, gt_boxes: list[torch.Tensor]) -> tuple[int, int]:
    """(objects, objects whose centre lies in at least one of their image's glimpse boxes): for
    a count (StarCraft II's marines), how many of the counted things some glimpse saw."""
    objects = covered = 0
    for boxes_T4, objects_N4 in zip(boxes_BT4, gt_boxes, strict=True):
        objects += int(objects_N4.shape[0])
        if objects_N4.numel():
            covered += int(centres_inside(boxes_T4, objects_N4).any(dim=0).sum())
    return objects, covered
