"""The README's main command: everything end to end on the embedded defaults.

1. build a small two-digit cluttered MNIST dataset with Ray Data (local Ray, ./data);
2. train the saccader and the three baselines with Ray Train (each an MLflow run, registered);
3. evaluate each registered model on the test split (a separate process each, so peak memory is
   each model's own);
4. print one table and where the glimpse pictures and the MLflow UI are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from jobs import console
from jobs.build_dataset import build_with_progress
from jobs.common import JobParser, run_main
from jobs.preflight import Demand, positive_int, start_ray, training_demand
from jobs.training.progress import epoch_bar
from jobs.training.recipes import make_recipe
from jobs.training.tracking import tracking_uri
from jobs.training.trainer import TrainOutcome, TrainRequest, train
from pipelines.build import BuildConfig, preflight
from pipelines.storage import next_version

MODELS = {  # table label → (recipe, registered model name)
    "saccader": ("quickstart_cpu", "quickstart-saccader"),
    "resize-224 (a)": ("quickstart_cpu_resize224", "quickstart-resize224"),
    "every-pixel (b)": ("quickstart_cpu_patches", "quickstart-patches"),
    "proxy-only": ("quickstart_cpu_proxy_only", "quickstart-proxy-only"),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.quickstart", description=__doc__)
    p.add_argument("--out", default="data/quickstart", help="dataset root (local path or s3://)")
    p.add_argument("--train", type=positive_int, default=3072, help="training images")
    p.add_argument(
        "--original-size", type=positive_int, default=200, help="side of the originals, px"
    )
    p.add_argument("--epochs", type=positive_int, help="override every recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=",".join(MODELS), help="comma list of table labels")
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP)
    return p.parse_args(argv)


def _build_config(args: argparse.Namespace) -> BuildConfig:
    held_out = max(args.train // 8, 8)
    return BuildConfig(
        source="cluttered_mnist",
        out=args.out,
        version=next_version(args.out),
        seed=args.seed,
        counts={"train": args.train, "val": held_out, "test": held_out},
        # The CPU benchmark's geometry (BENCHMARKS.md): a 100-px canvas whose proxy, blurred ×10,
        # shows blobs but not digits.
        params={
            "original_size": args.original_size,
            "canvas_size": 100,
            "downsample_scale": 10,
            "proxy_size": 40,
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


def _train(label: str, dataset: str, args: argparse.Namespace) -> TrainOutcome:
    recipe, registered = MODELS[label]
    overrides = {"registered_model": registered, "seed": str(args.seed)}
    if args.epochs:
        overrides["epochs"] = str(args.epochs)
    config = make_recipe(recipe, dataset, overrides)
    name = f"quickstart-{recipe}-{os.path.basename(dataset)}"
    with epoch_bar(f"train {label}", args.train, config.epochs) as progress:
        request = TrainRequest(config=config, name=name, storage="checkpoints")
        outcome = train(request, progress=progress)
    accuracy = outcome.metrics.get("val/accuracy", float("nan"))
    console.current().say(
        f"  registered models:/{outcome.registered_model}/{outcome.model_version} "
        f"(val accuracy {accuracy:.3f})"
    )
    return outcome


def _evaluate(model_uri: str, dataset: str) -> dict:
    """`python -m jobs.evaluate` in its own process: the peak memory is this model's alone."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "eval.json")
        # --verbose: its whole output goes where this job's goes (the log, when quiet).
        command = [sys.executable, "-m", "jobs.evaluate", "--verbose"]
        command += ["--model", model_uri, "--dataset", dataset, "--json", path]
        if subprocess.run(command, stdout=sys.stderr).returncode != 0:
            raise RuntimeError(f"evaluating {model_uri} failed; its output is in the log")
        with open(path) as f:
            return json.load(f)


def _table(rows: dict[str, dict]) -> str:
    head = (
        f"{'model':<17}{'test acc':>9}{'hit-rate':>10}{'centred':>9}{'ms/image':>10}{'+mem MB':>9}"
    )
    lines = [head, "-" * len(head)]
    for label, m in rows.items():
        hit, centred = m.get("test/hit_rate"), m.get("test/centred_hit_rate")
        lines.append(
            f"{label:<17}{m['test/accuracy']:>9.3f}"
            f"{(f'{hit:.3f}' if hit is not None else '-'):>10}"
            f"{(f'{centred:.3f}' if centred is not None else '-'):>9}"
            f"{m['test/latency_ms']:>10.1f}{m['test/peak_memory_growth_mb']:>9.0f}"
        )
    return "\n".join(lines)


def _last_glimpse_picture(run_id: str) -> str:
    """Where the run's latest glimpse picture is (a local path for the embedded store)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    pictures = sorted(a.path for a in client.list_artifacts(run_id, "glimpses"))
    if not pictures:
        return "(none logged)"
    root = client.get_run(run_id).info.artifact_uri
    return f"{root.removeprefix('file://')}/{pictures[-1]}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        raise ValueError(f"--models {args.models!r}: unknown or none; choose from {list(MODELS)}")
    config = _build_config(args)
    preflight(config)
    out = console.start("quickstart", verbose=args.verbose)
    out.say(f"quickstart: {args.train:,} training images; models: {', '.join(chosen)}")
    start_ray(args.num_cpus, _demand(chosen))
    dataset = _build(config)
    outcomes = {label: _train(label, dataset, args) for label in chosen}
    uris = {
        label: f"models:/{o.registered_model}/{o.model_version}" for label, o in outcomes.items()
    }
    results = {}
    with out.bar("evaluate on the test split", len(uris), unit="model") as bar:
        for label, uri in uris.items():
            results[label] = _evaluate(uri, dataset)
            bar.update(1)
    _summary(dataset, outcomes, uris, {label: r["metrics"] for label, r in results.items()})
    return 0


def _summary(
    dataset: str,
    outcomes: dict[str, TrainOutcome],
    uris: dict[str, str],
    metrics: dict[str, dict],
) -> None:
    say = console.current().say
    say(f"\ntest split of {dataset}:")
    say(_table(metrics))
    say(
        "\nThe table compares the models' test accuracy with what each costs at inference "
        "(ms/image, memory added); hit-rate is the share of glimpses whose box holds an "
        "object's centre, centred the same for a box of that size at the image centre."
    )
    say("registered: " + ", ".join(uris.values()))
    if "saccader" in outcomes:
        say(f"glimpse picture: {_last_glimpse_picture(outcomes['saccader'].run_id)}")
    say(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri()} (then http://127.0.0.1:5000)")


if __name__ == "__main__":
    run_main(main)
