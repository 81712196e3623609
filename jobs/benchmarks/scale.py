"""Glimpse scale benchmark: ``python -m jobs.benchmark scale [--positions 10] [--json FILE]``.

A glimpse pools its box by an integer factor before sampling (``model/glimpse.py``), so with one
factor per box it jumps where the factor changes: each time the box's side passes a whole number
of windows, and most where it switches to the stored ×8 level. ``SaccaderConfig.glimpse_blend``
mixes the glimpses of the two factors around the side instead. For the region benchmark's two
images (2528² cluttered MNIST, png tiles; 4000×3000 photo-like, jpeg tiles), at each change of
factor up to the model's largest box, the glimpse of a 64-px window is read just below and just
above it (±0.001 px) at seeded random positions: the largest change of a pixel, one factor against
blended. Then the cost: 16 boxes of random sides between one window and the largest box, read
and sampled through a fresh ``TileRegionReader`` (1 thread), one factor against blended.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from jobs.benchmarks._common import header, table, timed, write_json
from jobs.benchmarks.region import (
    LEVEL,
    MAX_FRACTION,
    WINDOW,
    Subject,
    cluttered_subject,
    photo_subject,
)
from model.glimpse import next_factor, read_glimpses
from pipelines.region import TiledImage, TileRegionReader

STEP_PX = 0.001  # how far below and above a change of factor the two glimpses are read
BATCH = 16


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.benchmark scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--positions", type=int, default=10, help="random positions per change")
    p.add_argument("--repeats", type=int, default=10, help="timed batches per mode (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    if args.positions < 1 or args.repeats < 1:
        p.error("--positions and --repeats must be >= 1")
    return args


def boxes_at(image: TiledImage, sides_px: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Normalised float64 boxes of the given pixel sides at random positions inside the image."""
    H, W = image.height, image.width
    y0 = rng.uniform(0, H - sides_px)
    x0 = rng.uniform(0, W - sides_px)
    boxes = np.stack([y0 / H, x0 / W, (y0 + sides_px) / H, (x0 + sides_px) / W], axis=1)
    return torch.from_numpy(boxes)


def factor_changes(image: TiledImage) -> list[int]:
    """The factors a glimpse switches to as its side grows up to the model's largest box."""
    largest = MAX_FRACTION * min(image.height, image.width) / WINDOW
    changes, k = [], 1
    while next_factor(k, LEVEL) <= largest:
        k = next_factor(k, LEVEL)
        changes.append(k)
    return changes


def jumps(subject: Subject, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per change of factor: the largest pixel change across it, one factor and blended."""
    rows = []
    for i, k in enumerate(factor_changes(subject.image)):
        sides = np.full(args.positions, float(k * WINDOW))
        boxes = boxes_at(subject.image, sides, np.random.default_rng(args.seed + i))
        row: dict[str, Any] = {"factor": k, "side_px": k * WINDOW}
        for blend in (False, True):
            below, above = (
                read_glimpses(
                    TileRegionReader([subject.image] * args.positions),
                    _resized(boxes, subject.image, d),
                    WINDOW,
                    level=LEVEL,
                    blend=blend,
                )
                for d in (-STEP_PX, STEP_PX)
            )
            row["blended" if blend else "one_factor"] = float((below - above).abs().max())
        rows.append(row)
    return rows


def _resized(boxes_B4: torch.Tensor, image: TiledImage, grow_px: float) -> torch.Tensor:
    """The boxes with `grow_px` added to their side, about the same top-left corner."""
    grown = boxes_B4.clone()
    grown[:, 2] += grow_px / image.height
    grown[:, 3] += grow_px / image.width
    return grown


def cost(subject: Subject, args: argparse.Namespace) -> dict[str, float]:
    """Median ms per glimpse of a batch of random boxes, one factor and blended."""
    rng = np.random.default_rng(args.seed)
    largest = MAX_FRACTION * min(subject.image.height, subject.image.width)
    boxes = boxes_at(subject.image, rng.uniform(WINDOW, largest, BATCH), rng).float()
    out = {}
    for blend in (False, True):
        seconds = [
            timed(
                lambda b=blend: read_glimpses(
                    TileRegionReader([subject.image] * BATCH, threads=1),
                    boxes,
                    WINDOW,
                    level=LEVEL,
                    blend=b,
                )
            )[0]
            for _ in range(args.repeats)
        ]
        out["blended" if blend else "one_factor"] = 1000 * statistics.median(seconds) / BATCH
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures: dict[str, Any] = header("scale", list(argv or []))
    start = time.perf_counter()
    torch.set_num_threads(1)
    print(
        f"window {WINDOW} px, pooled level ×{LEVEL}; glimpses read {STEP_PX} px below and above "
        f"each change of factor at {args.positions} positions; cost: {BATCH} random boxes"
    )
    figures["subjects"] = []
    for make in (cluttered_subject, photo_subject):
        subject = make(args.seed)
        rows, ms = jumps(subject, args), cost(subject, args)
        figures["subjects"].append({"name": subject.name, "changes": rows, "ms_per_glimpse": ms})
        print(f"\n## {subject.name}")
        print(
            table(
                ["to factor", "box px", "largest change: one factor", "blended"],
                [[r["factor"], r["side_px"], r["one_factor"], r["blended"]] for r in rows],
            )
        )
        print(
            f"ms per glimpse (batch of {BATCH}, fresh reader): one factor "
            f"{ms['one_factor']:.2f}, blended {ms['blended']:.2f}"
        )
    figures["seconds"] = time.perf_counter() - start
    print(f"\ntotal {figures['seconds']:.0f} s")
    write_json(args.json, figures)
    return 0
