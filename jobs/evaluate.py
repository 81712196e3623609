"""Evaluate a registered model: ``python -m jobs.evaluate --model models:/saccade/1 --dataset D``.

Prints accuracy (overall and per class), the localisation score (share of glimpses containing a
ground-truth object centre, beside a centred box of the same size), latency and peak memory, and
logs them to MLflow (experiment `saccade-evaluations`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from jobs import console
from jobs.common import JobParser, run_main
from jobs.core.assess import assess
from jobs.core.data import open_dataset
from jobs.ops.services import check_object_store
from jobs.preflight import positive_int
from pipelines.storage import resolve_version


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.evaluate", description=__doc__)
    p.add_argument("--model", required=True, help="models:/NAME/VERSION, models:/NAME@ALIAS, ...")
    p.add_argument(
        "--dataset",
        required=True,
        help="a published version (<root>/<version>), or a dataset root: the version its "
        "latest.json names",
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_object_store(args.dataset)
    args.dataset = resolve_version(args.dataset)
    say = console.start("evaluate", verbose=args.verbose).say
    with console.current().bar(f"evaluate {args.model}", _rows(args)) as bar:
        result = assess(
            args.model,
            args.dataset,
            split=args.split,
            batch_size=args.batch_size,
            progress=bar.update,
        )
    say(f"{args.model} on {args.dataset} [{args.split}] (MLflow run {result.run_id})")
    for key, value in sorted(result.metrics.items()):
        say(f"  {key}: {value:.4f}")
    if result.corrupt:
        say(f"  skipped {len(result.corrupt)} corrupt row(s) (see python -m jobs.verify):")
        for image_id, reason in result.corrupt[:10]:
            say(f"    {image_id}: {reason}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "metrics": result.metrics,
                    "per_class": result.per_class,
                    "confusion": result.confusion,
                    "run_id": result.run_id,
                    "corrupt_rows": [list(c) for c in result.corrupt],
                },
                f,
                indent=2,
            )
    worst = sorted(result.per_class.items(), key=lambda kv: kv[1])[:5]
    say("  lowest per-class accuracy: " + ", ".join(f"{k}={v:.2f}" for k, v in worst))
    return 0


def _rows(args: argparse.Namespace) -> int | None:
    """The split's rows from the manifest (the bar's total), if the dataset can be opened."""
    try:
        counts = open_dataset(args.dataset, args.split).manifest.counts
    except (ValueError, FileNotFoundError):
        return None  # assess names the problem
    return counts.get(args.split)


if __name__ == "__main__":
    run_main(main)
