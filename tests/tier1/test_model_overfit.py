"""Tier 1: the whole saccader (glimpses, LSTM, posterior and prior, decoder, classifier) can fit
64 small images to 100% training accuracy within a bounded number of CPU steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.interface import Batch
from model.loss import ObjectiveConfig
from model.step import eval_step, train_step
from model.variants import create_model

IMAGES, SIDE, CLASSES, MAX_STEPS = 64, 32, 4, 300


pytestmark = pytest.mark.usefixtures("one_thread")


def quadrant_batch(seed: int) -> Batch:
    """Dim noise with a bright 6×6 square; the label is the quadrant that holds the square."""
    g = torch.Generator().manual_seed(seed)
    labels_B = torch.randint(0, CLASSES, (IMAGES,), generator=g)
    images_BCHW = 0.2 * torch.rand(IMAGES, 1, SIDE, SIDE, generator=g)
    offsets = torch.randint(0, SIDE // 2 - 6, (IMAGES, 2), generator=g)
    for b, (label, (dy, dx)) in enumerate(zip(labels_B.tolist(), offsets.tolist(), strict=True)):
        y, x = (label // 2) * SIDE // 2 + dy, (label % 2) * SIDE // 2 + dx
        images_BCHW[b, :, y : y + 6, x : x + 6] = 1.0
    proxy_BCHW = F.interpolate(images_BCHW, size=(8, 8), mode="area")
    return Batch(proxy_BCHW=proxy_BCHW, labels_B=labels_B, images_BCHW=images_BCHW)


def test_saccader_overfits_64_images() -> None:
    torch.manual_seed(0)
    batch = quadrant_batch(seed=0)
    model = create_model("saccader_test", num_classes=CLASSES, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    objective = ObjectiveConfig(kl_weight=0.1, recon_weight=0.01)  # the CPU recipes' bound
    accuracy = 0.0
    for step in range(1, MAX_STEPS + 1):
        train_step(model, batch, optimizer, objective)
        if step % 10 == 0:
            accuracy = eval_step(model, batch)["accuracy"]
            if accuracy == 1.0:
                break
    assert accuracy == 1.0, f"train accuracy {accuracy:.3f} after {MAX_STEPS} steps"
