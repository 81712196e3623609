"""The README's main command: everything end to end on the embedded defaults.

1. build a single-digit cluttered MNIST dataset where detail matters with Ray Data (local Ray,
   ./data): 700-px originals whose 20-px digit is 2 px in the proxy and 6 px once resized to 224;
2. train the saccader and the three baselines with Ray Train (each an MLflow run, registered);
3. evaluate each registered model on the test split through the evaluate job, and measure its
   inference from encoded tiles at batch 1 and 16 (each in a process of its own, so that peak
   memory is the model's alone), as ``python -m jobs.benchmark tradeoff`` does;
4. print one table, what it shows, and where the glimpse pictures and the MLflow UI are;
   ``--json FILE`` writes the trade-off benchmark's JSON layout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from jobs import console, store
from jobs.benchmarks._common import write_json
from jobs.benchmarks._tradeoff import evaluated, measure_model, tradeoff_json, tradeoff_row
from jobs.benchmarks.tradeoff import finished_training
from jobs.build_dataset import build_with_progress
from jobs.common import JobParser, run_main
from jobs.preflight import Demand, positive_int, start_ray, training_demand
from jobs.store import tracking_uri
from jobs.training.progress import epoch_bar
from jobs.training.recipes import make_recipe
from jobs.training.trainer import TrainOutcome, TrainRequest, train
from pipelines.build import BuildConfig, preflight
from pipelines.storage import next_version

MODELS = {  # table label → (recipe, registered model name)
    "saccader": ("quickstart_cpu", "quickstart-saccader"),
    "resize-224": ("quickstart_cpu_resize224", "quickstart-resize224"),
    "every pixel": ("quickstart_cpu_patches", "quickstart-patches"),
    "proxy-only": ("quickstart_cpu_proxy_only", "quickstart-proxy-only"),
}
EXPERIMENT = "quickstart"
MIN_ORIGINAL = 160  # px: the proxy (÷10) must be at least 16 px
# Inference timing as the trade-off benchmark's recorded runs (one thread). A request of one
# image takes milliseconds: 20 of them give a median that 3 did not (measured 7.9–13.6 ms for
# the same model); `max_seconds` bounds the slow every-pixel requests.
TIMING = argparse.Namespace(threads=1, repeats=20, max_seconds=10.0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.quickstart", description=__doc__)
    p.add_argument("--out", default="data/quickstart", help="dataset root (local path or s3://)")
    p.add_argument("--train", type=positive_int, default=3000, help="training images")
    p.add_argument(
        "--original-size", type=positive_int, default=700, help="side of the originals, px"
    )
    p.add_argument("--epochs", type=positive_int, help="override every recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=",".join(MODELS), help="comma list of table labels")
    p.add_argument("--json", help="write the table in the trade-off benchmark's JSON layout")
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP)
    return p.parse_args(argv)


def _build_config(args: argparse.Namespace) -> BuildConfig:
    return BuildConfig(
        source="cluttered_mnist",
        out=args.out,
        version=next_version(args.out),
        seed=args.seed,
        # at least a batch of 16 to time; validation runs every epoch, so it stays small
        counts={
            "train": args.train,
            "val": max(args.train // 30, 16),
            "test": max(args.train // 10, 16),
        },
        # One digit in clutter at full resolution; the proxy, blurred ×10, shows a blob where
        # the digit is but not which digit (the `quickstart_cpu` recipe's geometry).
        params={
            "task": "single",
            "canvas_size": args.original_size,
            "original_size": args.original_size,
            "downsample_scale": 10,
            "proxy_size": max(args.original_size // 10, 8),
            "digit_size": 20,
        },
    )


def _build(config: BuildConfig) -> str:
    summary = build_with_progress(config)
    rows = ", ".join(f"{split} {n:,}" for split, n in summary.rows.items())
    console.current().say(
        f"  {summary.url}: {rows}; {summary.rejects} rejects, {summary.bytes / 1e6:.1f} MB"
    )
    return summary.url


def _demand(labels: list[str]) -> Demand:
    """The largest training demand of the chosen models (they train one after another)."""
    configs = [make_recipe(MODELS[label][0], "", {}) for label in labels]
    demands = [training_demand(c.num_workers, c.cpus_per_worker, c.use_gpu) for c in configs]
    return max(demands, key=lambda d: (d.gpus, d.cpus))


def _train(label: str, dataset: str, args: argparse.Namespace) -> tuple[TrainOutcome, int]:
    """Train one model; its outcome and the images one of its epochs read."""
    recipe, registered = MODELS[label]
    overrides = {"registered_model": registered, "seed": str(args.seed)}
    if args.epochs:
        overrides["epochs"] = str(args.epochs)
    config = make_recipe(recipe, dataset, overrides)
    images = config.images_per_epoch(args.train)
    name = f"quickstart-{recipe}-{os.path.basename(dataset)}"
    with epoch_bar(f"train {label}", images, config.epochs) as progress:
        request = TrainRequest(
            config=config, name=name, storage="checkpoints", experiment=EXPERIMENT
        )
        outcome = train(request, progress=progress)
    accuracy = outcome.metrics.get("val/accuracy", float("nan"))
    console.current().say(
        f"  registered models:/{outcome.registered_model}/{outcome.model_version} "
        f"(val accuracy {accuracy:.3f})"
    )
    return outcome, images


def _evaluate(model_uri: str, dataset: str) -> dict[str, Any]:
    """`python -m jobs.evaluate` in its own process: the test split's accuracy and hit-rates."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "eval.json")
        # --verbose: its whole output goes where this job's goes (the log, when quiet).
        command = [sys.executable, "-m", "jobs.evaluate", "--verbose"]
        command += ["--model", model_uri, "--dataset", dataset, "--json", path]
        if subprocess.run(command, stdout=sys.stderr).returncode != 0:
            raise RuntimeError(f"evaluating {model_uri} failed; its output is in the log")
        with open(path) as f:
            return evaluated(json.load(f))


def _row(label: str, outcome: TrainOutcome, images: int, dataset: str, seed: int) -> dict:
    """The model's trade-off row: trained figures from its MLflow run, then evaluated and
    measured (latency and memory at batch 1 and 16, looked and decoded fractions)."""
    training = finished_training(outcome.name, EXPERIMENT)
    if training is None:
        raise RuntimeError(f"training {outcome.name} has no finished, registered run in MLflow")
    uri = training["model_uri"]
    return tradeoff_row(
        model=label,
        recipe=MODELS[label][0],
        seed=seed,
        training=training,
        evaluation=_evaluate(uri, dataset),
        measured=measure_model(uri, dataset, TIMING),
        train_images=images,
    )


def _cell(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        f"{'model':<12}{'test acc':>9}{'hit-rate':>9}{'centred':>8}{'ms/img b1':>10}"
        f"{'ms/img b16':>11}{'MB b16':>8}{'looked':>8}{'training':>20}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        trained_on = f"{r['epochs']}×{r['train_images']:,} img, {r['train_seconds']:.0f} s"
        lines.append(
            f"{r['model']:<12}{r['accuracy']:>9.3f}{_cell(r['hit_rate'], '.3f'):>9}"
            f"{_cell(r['centred_hit_rate'], '.3f'):>8}{r['ms_per_image_b1']:>10.1f}"
            f"{r['ms_per_image_b16']:>11.1f}{r['peak_mb_b16']:>8.0f}"
            f"{_cell(r['looked_fraction'], '.2%'):>8}"
            f"{trained_on:>20}"
        )
    return "\n".join(lines)


def what_it_shows(rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence from the measured rows: the saccader against each baseline."""
    by = {r["model"]: r for r in rows}
    s = by.get("saccader")
    if s is None:
        return "The table compares each model's test accuracy with its inference cost."
    parts = []
    for other in ("resize-224", "proxy-only", "every pixel"):
        if other in by:
            diff = s["accuracy"] - by[other]["accuracy"]
            parts.append(f"{diff:+.2f} against {other}")
    speed = ""
    if "every pixel" in by:
        factor = by["every pixel"]["ms_per_image_b16"] / s["ms_per_image_b16"]
        speed = f", and it is {factor:.0f}× faster than every pixel at batch 16"
    looked = _cell(s["looked_fraction"], ".1%")
    return (
        f"The saccader read {looked} of each image at full resolution; its test accuracy is "
        f"{', '.join(parts)}{speed}. Hit-rate: share of glimpses holding the digit's centre "
        "(centred: a box of that size at the image centre)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        raise ValueError(f"--models {args.models!r}: unknown or none; choose from {list(MODELS)}")
    if args.original_size < MIN_ORIGINAL:
        raise ValueError(
            f"--original-size {args.original_size}: the proxy is the original blurred ×10 and "
            f"must show the digit's blob; use {MIN_ORIGINAL} or more"
        )
    config = _build_config(args)
    preflight(config)
    out = console.start("quickstart", verbose=args.verbose)
    out.say(
        f"quickstart: one digit in clutter on {args.original_size}-px images, "
        f"{args.train:,} training images; models: {', '.join(chosen)}"
    )
    start_ray(args.num_cpus, _demand(chosen))
    dataset = _build(config)
    trained = {label: _train(label, dataset, args) for label in chosen}
    # Ray's own processes would share the cores with the timed requests; evaluating needs no Ray
    import ray

    ray.shutdown()
    rows = []
    with out.bar("evaluate and time on the test split", len(trained), unit="model") as bar:
        for label, (outcome, images) in trained.items():
            rows.append(_row(label, outcome, images, dataset, args.seed))
            bar.update(1)
    _summary(dataset, rows, trained["saccader"][0] if "saccader" in trained else None)
    if args.json:
        write_json(args.json, tradeoff_json(dataset=dataset, rows=rows, extra=_extra(args)))
        out.say(f"table written to {args.json}")
    return 0


def _extra(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": " ".join(["python -m jobs.quickstart", *sys.argv[1:]]),
        "timing": {"batches": [1, 16], **vars(TIMING)},
    }


def _summary(dataset: str, rows: list[dict], saccader: TrainOutcome | None) -> None:
    say = console.current().say
    say(f"\ntest split of {dataset}:")
    say(_table(rows))
    say("\n" + what_it_shows(rows))
    say("registered: " + ", ".join(r["model_uri"] for r in rows))
    if saccader is not None:
        say(f"glimpse picture: {_last_glimpse_picture(saccader.run_id)}")
    say(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri()} (then http://127.0.0.1:5000)")


def _last_glimpse_picture(run_id: str) -> str:
    """Where the run's latest glimpse picture is (a local path for the embedded store)."""
    client = store.client()
    pictures = sorted(a.path for a in client.list_artifacts(run_id, "glimpses"))
    if not pictures:
        return "(none logged)"
    root = client.get_run(run_id).info.artifact_uri
    return f"{root.removeprefix('file://')}/{pictures[-1]}"


if __name__ == "__main__":
    run_main(main)
