"""Glimpse-reader benchmark: can a recipe's glimpse encoder read a data set's objects, and when?

    python -m jobs.benchmark reader --dataset ROOT/vNNNN --recipe signs_cpu
        [--steps 3000] [--batch 32] [--shift random|fixed] [--every 250] [--json FILE]

A diagnostic of the glimpse classifier alone, in plain PyTorch (no locator, no Ray). Every image
of the train and test splits gives one glimpse centred on its first box (the dataset's boxes),
read as the recipe's model reads it (its box side, window and pooled level) with a margin of a
quarter window on each side. The recipe's own glimpse encoder (built by the train job's
`build_model`, so its width, blocks and norm are the recipe's) and a linear head are trained on
them with the recipe's learning rate (Adam, 1 thread). At each step a batch's glimpses are
shifted by up to a quarter window either way: ``random``, a new shift at every step; ``fixed``,
one shift per image drawn once and kept (what a training glimpse fixed on the object's heat-map
cell gives: the same glimpse every epoch). Test glimpses are centred. Prints the test accuracy
every ``--every`` steps: how long the encoder sits at chance, and where it ends.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jobs.benchmarks._common import header, table, write_json
from jobs.core.data import open_dataset, table_to_batch
from jobs.training.recipes import RECIPES, build_model, make_recipe
from jobs.training.trainer import TrainRequest
from model.glimpse import read_glimpses

MARGIN = 4  # the glimpse is read with window / MARGIN pixels of margin on each side


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.benchmark reader",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="a published version: <root>/<version>")
    p.add_argument("--recipe", default="signs_cpu", help=f"a saccader recipe: {sorted(RECIPES)}")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shift", choices=("random", "fixed"), default="random")
    p.add_argument("--every", type=int, default=250, help="steps between test evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    if min(args.steps, args.batch, args.every) < 1:
        p.error("--steps, --batch and --every must be >= 1")
    return args


def centred_glimpses(
    dataset: str, split: str, side: float, window: int, level: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×C×P×P glimpses (P = window + 2·margin) centred on each image's first box, and
    the labels; `side` is the box side as a fraction of the shorter image side."""
    version = open_dataset(dataset)
    margin = window // MARGIN
    scale = (window + 2 * margin) / window
    glimpses, labels = [], []
    for rows in version.iter_tables(version.files(split), batch_size=32):
        batch = table_to_batch(rows)
        if batch.gt_boxes is None or any(len(b) == 0 for b in batch.gt_boxes):
            raise ValueError(f"{dataset} {split}: every image needs a box (its `boxes` column)")
        boxes = []
        for gt_N4, (h, w) in zip(batch.gt_boxes, batch.reader.image_sizes(), strict=True):
            y0, x0, y1, x1 = gt_N4[0].tolist()
            half = side * scale * min(h, w) / 2
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            boxes.append([cy - half / h, cx - half / w, cy + half / h, cx + half / w])
        read = read_glimpses(batch.reader, torch.tensor(boxes), window + 2 * margin, level=level)
        glimpses.append((read * 255).round().clamp(0, 255).to(torch.uint8))
        labels.append(batch.labels_B)
    return torch.cat(glimpses), torch.cat(labels)


def crops(glimpses: torch.Tensor, offsets: torch.Tensor, window: int) -> torch.Tensor:
    """float B×C×window×window crops at per-glimpse (dy, dx) offsets into the margin."""
    return (
        torch.stack(
            [
                g[:, dy : dy + window, dx : dx + window]
                for g, (dy, dx) in zip(glimpses, offsets.tolist(), strict=True)
            ]
        ).float()
        / 255
    )


def recipe_encoder(args: argparse.Namespace) -> tuple[nn.Module, Any, int, float]:
    """The recipe's glimpse encoder as the train job builds it, the model's config, the class
    count and the recipe's learning rate."""
    cfg = make_recipe(args.recipe, args.dataset, {})
    request = TrainRequest(config=cfg, name="reader", storage="")
    request.check()  # the train job's own checks and the dataset's classes and channels
    torch.manual_seed(args.seed)
    assert request.data is not None  # check() filled it
    model = build_model(cfg, request.data)
    if not hasattr(model, "glimpse_encoder"):
        raise ValueError(f"recipe {args.recipe!r} trains {cfg.model}, which reads no glimpse")
    return model.glimpse_encoder, model.config, request.data.num_classes, cfg.lr


def train_reader(args: argparse.Namespace, say: Any) -> list[dict[str, float]]:
    """Train the recipe's glimpse encoder and a linear head; the test accuracy curve."""
    encoder, config, classes, lr = recipe_encoder(args)
    window, margin = config.window, config.window // MARGIN
    read = (config.min_image_fraction, window, config.pooled_level)
    x_train, y_train = centred_glimpses(args.dataset, "train", *read)
    x_test, y_test = centred_glimpses(args.dataset, "test", *read)
    say(f"glimpses: {len(x_train)} train, {len(x_test)} test; {window}-px window")
    head = nn.Sequential(nn.ELU(), nn.Linear(config.hidden, classes))
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=lr)
    kept = torch.randint(0, 2 * margin + 1, (len(x_train), 2))  # --shift fixed
    centre = torch.full((len(x_test), 2), margin)
    curve = []
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, len(x_train), (args.batch,))
        if args.shift == "fixed":
            shifts = kept[pick]
        else:  # one shift for the whole batch, new at every step
            shifts = torch.randint(0, 2 * margin + 1, (2,)).expand(args.batch, 2)
        logits = head(encoder(crops(x_train[pick], shifts, window)))
        loss = F.cross_entropy(logits, y_train[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            accuracy = test_accuracy(encoder, head, crops(x_test, centre, window), y_test)
            curve.append({"step": step, "train_loss": loss.item(), "test_accuracy": accuracy})
            say(f"step {step}: batch loss {loss.item():.3f}, test accuracy {accuracy:.3f}")
    return curve


def test_accuracy(
    encoder: nn.Module, head: nn.Module, x_BCHW: torch.Tensor, y_B: torch.Tensor
) -> float:
    """Share of test glimpses read right, in eval mode."""
    encoder.eval()
    with torch.no_grad():
        predicted_B = head(encoder(x_BCHW)).argmax(dim=1)
    encoder.train()
    return (predicted_B == y_B).float().mean().item()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures: dict[str, Any] = header("reader", list(argv or []))
    torch.set_num_threads(1)
    start = time.perf_counter()
    curve = train_reader(args, lambda message: print(message, flush=True))
    figures.update(recipe=args.recipe, shift=args.shift, batch=args.batch, curve=curve)
    figures["seconds"] = time.perf_counter() - start
    rows = [[c["step"], c["train_loss"], c["test_accuracy"]] for c in curve]
    print(table(["step", "batch loss", "test accuracy"], rows))
    print(f"total {figures['seconds']:.0f} s (diagnostic: no goal)")
    write_json(args.json, figures)
    return 0
