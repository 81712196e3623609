"""Trade-off benchmark (issue 11): accuracy against inference cost, from the same trained models.

    python -m jobs.benchmark tradeoff --dataset ROOT/vNNNN --recipes R1,R2,... [--seeds 0,1]
        [--set KEY=VALUE ...] [--state DIR] [--tag [RECIPE=]TAG,...] [--json FILE]
        [--also-test URL,...] [--pictures DIR]

One row per model: each recipe once, and a saccader recipe once per seed (baselines take the
first seed). For each model, three phases, each in processes of its own so that memory and Ray
state are the model's alone:
1. **train** through the train job (``python -m jobs.train``: Ray Train, an MLflow run, a
   registered model), with ``--set`` overrides, ``seed`` and ``registered_model`` (``tradeoff-
   <recipe>``, unless set); its time and throughput come from the run's per-epoch metrics;
2. **evaluate** the registered model on the test split through the evaluate job
   (``python -m jobs.evaluate``): accuracy, glimpse hit-rate beside a centred box;
3. **measure** inference with the trained weights from encoded tiles exactly as
   ``jobs.benchmark inference`` does (rows of the test split held encoded in memory, a fresh
   region reader per request, median latency, the working set as peak memory; one worker process
   per batch size, 1 and 16), then over the whole test split the looked fraction (area of the
   union of the glimpse boxes / image area; saccader only) and the tiles decoded per image
   (full resolution and level) / the image's tiles.

Resumable per model and per phase: each finished phase is written to ``--state DIR`` at once, and a
rerun skips it; a training interrupted midway resumes from its last checkpoint (the train job
resumes by run name), and a finished training found in MLflow is never repeated. The run name and
the state key hash the dataset, recipe, seed and overrides, so other settings make other models; the
code is not in the key, so after a model change give a new ``--tag``: ``--tag v2`` renames every
model, ``--tag signs_cpu=v2`` only that recipe's (the others keep their trained models).
``--json FILE`` writes ``tradeoff_json``'s layout: top-level ``dataset``, ``source``,
``image_size``, ``date``, ``machine`` (and the command, commit, settings) and ``rows``.
``--also-test URL`` evaluates every trained model on another dataset version with the same
classes (StarCraft II: scenes of real replays beside the simulated ones; a test split is all it
needs), a phase of its own in the state; its rows (the evaluated fields) go into the JSON's
``also_tested`` and a table of their own. For a count label (the manifest's ``label_kind``) the
rows also carry ``mae``, ``within_one`` and the share of objects some glimpse covers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.benchmarks._common import write_json
from jobs.benchmarks._tradeoff import (
    BATCHES,
    KINDS,
    draw_picture,
    evaluated,
    format_table,
    measure_model,
    tradeoff_json,
    tradeoff_row,
)
from jobs.common import JobParser, parse_key_values
from jobs.core.data import open_dataset
from jobs.store import client as store_client
from jobs.training.recipes import make_recipe
from jobs.training.tracking import RUN_NAME_TAG
from model.variants import config_type
from pipelines.schema import Manifest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(
        prog="python -m jobs.benchmark tradeoff",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="a published version: <root>/<version>")
    p.add_argument("--recipes", required=True, help="comma list of recipes, one row each")
    p.add_argument("--seeds", default="0", help="comma list: one row per seed for saccaders")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="every recipe")
    p.add_argument("--state", default="checkpoints/tradeoff", help="finished phases per model")
    p.add_argument(
        "--tag",
        default="",
        help="part of every model's key and run name: new models after a code change (the "
        "key covers the dataset, recipe, seed and --set, not the code); RECIPE=TAG,... tags "
        "only those recipes' models",
    )
    p.add_argument(
        "--also-test",
        default="",
        metavar="URL[,URL]",
        help="other dataset versions with the same classes to evaluate every model on (e.g. "
        "scenes from real replays beside simulated ones): their rows go into the JSON's "
        "also_tested",
    )
    p.add_argument("--json", help="write the rows and the run's details to this file")
    p.add_argument(
        "--pictures",
        metavar="DIR",
        help="draw each saccader's glimpses on the first test images into "
        "DIR/<recipe>-seed<N>_glimpses.png",
    )
    p.add_argument("--storage", default=os.environ.get("SACCADE_CHECKPOINTS", "checkpoints"))
    p.add_argument("--experiment", default="saccade", help="MLflow experiment of the trainings")
    p.add_argument("--num-cpus", type=int, help="CPUs for each training's local Ray")
    p.add_argument("--repeats", type=int, default=5, help="timed requests per batch size")
    p.add_argument("--max-seconds", type=float, default=30.0, help="cap on a batch size's timing")
    p.add_argument("--threads", type=int, default=2, help="torch and tile-decoding threads")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# the plan: one model per (recipe, seed)


@dataclass(frozen=True)
class ModelPlan:
    """One row of the table: what to train and the names it goes by."""

    recipe: str
    seed: int
    kind: str  # KINDS' value
    overrides: dict[str, str]  # --set, seed and registered_model, as jobs.train takes them
    key: str  # state file and run name: recipe, seed and a hash of dataset and overrides

    @property
    def run_name(self) -> str:
        return f"tradeoff-{self.key}"


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} is empty; give at least one value")
    return values


def plan_models(
    dataset: str,
    recipes: Sequence[str],
    seeds: Sequence[int],
    overrides: Mapping[str, str],
    tag: str | Mapping[str, str] = "",
) -> list[ModelPlan]:
    """The models in table order; unknown recipes, bad overrides and impossible model settings
    fail here, before anything runs."""
    if "seed" in overrides:
        raise ValueError("--set seed=... is not for this benchmark; use --seeds")
    plans = []
    for recipe in recipes:
        config = make_recipe(recipe, dataset, overrides)
        recipe_tag = tag.get(recipe, "") if isinstance(tag, Mapping) else tag
        kind = KINDS.get(config_type(config.model).__name__, config.model)
        for seed in seeds if kind == "saccader" else seeds[:1]:
            settings = {"registered_model": f"tradeoff-{recipe}", **overrides, "seed": str(seed)}
            make_recipe(recipe, dataset, settings)
            parts = [
                dataset,
                recipe,
                sorted(settings.items()),
                *([recipe_tag] if recipe_tag else []),
            ]
            digest = json.dumps(parts).encode()  # untagged keys as before tags existed
            name = f"{recipe}-{recipe_tag}" if recipe_tag else recipe
            key = f"{name}-seed{seed}-{hashlib.sha256(digest).hexdigest()[:10]}"
            plans.append(ModelPlan(recipe, seed, kind, settings, key))
    return plans


# ---------------------------------------------------------------------------------------------
# state: one JSON file per model, rewritten atomically after each phase


@dataclass
class State:
    """Finished phases per model under ``root``: ``rows/<key>.json`` and ``logs/``."""

    root: Path
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.root / "rows").mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)

    def load(self, key: str) -> dict[str, Any]:
        path = self.root / "rows" / f"{key}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def save(self, key: str, record: dict[str, Any]) -> None:
        path = self.root / "rows" / f"{key}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, path)  # a crash leaves the old record or the new one, never half

    def log(self, key: str, phase: str) -> Path:
        return self.root / "logs" / f"{key}-{phase}.log"


# ---------------------------------------------------------------------------------------------
# phase 1: train


def _job(module: str, args: Sequence[str], log: Path) -> None:
    """``python -m module args`` with its output in ``log``; a failure names the log's tail."""
    with open(log, "a") as out:
        out.write(f"\n$ python -m {module} {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(
            [sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{module} failed (exit {done.returncode}); log {log}:\n{tail}")


def train_model(plan: ModelPlan, dataset: str, args: argparse.Namespace, log: Path) -> None:
    """The train job for `plan` (the same run name resumes an interrupted training)."""
    cmd = ["--recipe", plan.recipe, "--dataset", dataset, "--name", plan.run_name]
    cmd += ["--storage", args.storage, "--experiment", args.experiment]
    for key, value in plan.overrides.items():
        cmd += ["--set", f"{key}={value}"]
    if args.num_cpus:
        cmd += ["--num-cpus", str(args.num_cpus)]
    _job("jobs.train", cmd, log)


def finished_training(run_name: str, experiment: str) -> dict[str, Any] | None:
    """The finished, registered training named `run_name`, with its figures from the run's
    per-epoch metrics; None when there is none (not started, interrupted, failed)."""
    client = store_client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'"
    )
    if not runs or runs[0].info.status != "FINISHED":
        return None
    run_id = runs[0].info.run_id
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return None
    version = max(versions, key=lambda v: int(v.version))
    # One value per epoch (a resumed run logs each epoch once; the last value of a step wins).
    seconds = {m.step: m.value for m in client.get_metric_history(run_id, "train/epoch_seconds")}
    return {
        "run_id": run_id,
        "model_uri": f"models:/{version.name}/{version.version}",
        "epochs": len(seconds),
        "train_seconds": sum(seconds.values()),
    }


# ---------------------------------------------------------------------------------------------
# phase 2: evaluate


def evaluate_model(model_uri: str, dataset: str, log: Path) -> dict[str, Any]:
    """The evaluate job on the test split: its metrics and MLflow run."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "eval.json")
        _job("jobs.evaluate", ["--model", model_uri, "--dataset", dataset, "--json", path], log)
        result = json.loads(Path(path).read_text())
    return {**evaluated(result), "evaluation_run_id": result["run_id"]}


# ---------------------------------------------------------------------------------------------
# driver


def run_model(
    plan: ModelPlan, position: str, dataset: str, args: argparse.Namespace, state: State
) -> dict[str, Any]:
    """Train, evaluate and measure one model, skipping the phases `state` holds; one progress
    line per phase."""
    record = state.load(plan.key) or {"recipe": plan.recipe, "seed": plan.seed}
    say = _say(f"{position} {plan.recipe} seed {plan.seed}")
    if "train" in record:
        say(f"train: done before ({record['train']['model_uri']})")
    else:
        record["train"] = _train_phase(plan, dataset, args, state, say)
        state.save(plan.key, record)
    model_uri = record["train"]["model_uri"]
    if "evaluate" in record:
        say("evaluate: done before")
    else:
        start = time.perf_counter()
        record["evaluate"] = evaluate_model(model_uri, dataset, state.log(plan.key, "evaluate"))
        state.save(plan.key, record)
        accuracy = record["evaluate"]["accuracy"]
        say(f"evaluated in {time.perf_counter() - start:.0f} s: test accuracy {accuracy:.3f}")
    for other in args.also_test:
        phase = f"evaluate@{other}"
        if phase not in record:
            log = state.log(plan.key, "evaluate-also")
            record[phase] = evaluate_model(model_uri, other, log)
            state.save(plan.key, record)
        say(f"on {other}: test accuracy {record[phase]['accuracy']:.3f}")
    if "measure" in record:
        say("measure: done before")
    else:
        start = time.perf_counter()
        record["measure"] = measure = measure_model(model_uri, dataset, args)
        state.save(plan.key, record)
        timings = ", ".join(
            f"batch {b} {measure[f'ms_per_image_b{b}']:.3g} ms/image" for b in BATCHES
        )
        say(f"measured in {time.perf_counter() - start:.0f} s: {timings}")
    return record


def _picture(plan: ModelPlan, record: dict[str, Any], args: argparse.Namespace) -> None:
    """The trained glimpses on the first test images of the dataset and of each --also-test
    dataset (``..._glimpses-<source>-<version>.png``); redrawn on every run: it is cheap."""
    Path(args.pictures).mkdir(parents=True, exist_ok=True)
    for dataset in [args.dataset, *args.also_test]:
        phase = "evaluate" if dataset == args.dataset else f"evaluate@{dataset}"
        suffix = "" if dataset == args.dataset else "-" + _dataset_label(dataset)
        path = str(Path(args.pictures) / f"{plan.recipe}-seed{plan.seed}_glimpses{suffix}.png")
        accuracy = record[phase]["accuracy"]
        title = f"{plan.recipe}, seed {plan.seed}: test images{suffix.replace('-', ' ')} "
        title += f"(test accuracy {accuracy:.3f})"
        draw_picture(record["train"]["model_uri"], dataset, path, title, args.threads)
        _say(f"{plan.recipe} seed {plan.seed}")(f"glimpse picture: {path}")


def _dataset_label(dataset: str) -> str:
    """``<source>-<version>`` of a dataset version, for file names and titles."""
    source = open_dataset(dataset, "test").manifest.source
    return f"{source}-{dataset.rstrip('/').rsplit('/', 1)[-1]}"


def _train_phase(
    plan: ModelPlan, dataset: str, args: argparse.Namespace, state: State, say: Any
) -> dict[str, Any]:
    """The finished training of `plan`: found in MLflow, or trained now (resuming by name)."""
    found = finished_training(plan.run_name, args.experiment)
    if found is not None:
        say(f"train: found the finished run in MLflow ({found['model_uri']})")
        return found
    log = state.log(plan.key, "train")
    say(f"training (run {plan.run_name}, log {log})")
    start = time.perf_counter()
    train_model(plan, dataset, args, log)
    found = finished_training(plan.run_name, args.experiment)
    if found is None:
        raise RuntimeError(f"training {plan.run_name} ended without a registered model; see {log}")
    say(f"trained in {time.perf_counter() - start:.0f} s: {found['model_uri']}")
    return found


def _also_tested(other: str, plans: Sequence[ModelPlan], state: State) -> dict[str, Any]:
    """The models' figures on another dataset: a row per model of the evaluated fields."""
    rows = []
    for plan in plans:
        record = state.load(plan.key) or {}
        found = record.get(f"evaluate@{other}", {})
        rows.append({"model": plan.kind, "recipe": plan.recipe, "seed": plan.seed, **found})
    manifest = open_dataset(other, "test").manifest
    return {"dataset": other, "source": manifest.source, "rows": rows}


def _say(prefix: str) -> Any:
    def say(message: str) -> None:
        print(f"[tradeoff] {prefix}: {message}", flush=True)

    return say


def _tags(text: str, recipes: Sequence[str]) -> str | dict[str, str]:
    """--tag: one tag for every model, or RECIPE=TAG pairs for some recipes' models."""
    if "=" not in text:
        pairs = {"": text}
    else:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if any("=" not in item for item in items):
            raise ValueError(f"--tag {text!r}: give one TAG, or RECIPE=TAG pairs only")
        pairs = dict(item.split("=", 1) for item in items)
    for recipe, tag in pairs.items():
        if recipe and recipe not in recipes:
            raise ValueError(f"--tag {text!r}: {recipe!r} is not one of --recipes {list(recipes)}")
        if not tag.replace("-", "").replace("_", "").isalnum() and (tag or recipe):
            raise ValueError(f"--tag {text!r}: use letters, digits, '-' and '_' only")
    return pairs.get("", pairs)


def check_dataset(dataset: str) -> Manifest:
    """The version's manifest; refused when it cannot fill a batch of the largest size."""
    manifest = open_dataset(dataset).manifest
    test = manifest.counts.get("test", 0)
    if test < max(BATCHES):
        raise ValueError(
            f"dataset {dataset} has {test} test images; the benchmark times batches of "
            f"{max(BATCHES)}, so build it with --test {max(BATCHES)} or more"
        )
    return manifest


def prepare(argv: Sequence[str]) -> tuple[argparse.Namespace, Manifest, list[ModelPlan]]:
    """Arguments, the dataset's manifest and the models; any bad input fails here."""
    args = parse_args(argv)
    for name in ("repeats", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    overrides = parse_key_values(args.set, flag="--set")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not recipes:
        raise ValueError("--recipes is empty; give at least one recipe")
    tags = _tags(args.tag, recipes)
    plans = plan_models(args.dataset, recipes, _ints(args.seeds, "--seeds"), overrides, tags)
    manifest = check_dataset(args.dataset)
    args.also_test = [u.strip() for u in args.also_test.split(",") if u.strip()]
    for other in args.also_test:
        check_same_classes(manifest, other)
    return args, manifest, plans


def check_same_classes(manifest: Manifest, other: str) -> None:
    """An --also-test dataset must name the classes the models were trained on, in order."""
    theirs = open_dataset(other, "test").manifest
    if theirs.class_names != manifest.class_names:
        raise ValueError(
            f"--also-test {other}: its classes differ from the benchmark dataset's, so the "
            "trained models cannot be scored on it"
        )
    if not theirs.counts.get("test", 0):
        raise ValueError(f"--also-test {other} has no test split")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, manifest, plans = prepare(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = State(Path(args.state))
    train_images = manifest.counts["train"]
    rows = []
    for i, plan in enumerate(plans, start=1):
        record = run_model(plan, f"{i}/{len(plans)}", args.dataset, args, state)
        if args.pictures and plan.kind == "saccader":
            _picture(plan, record, args)
        rows.append(
            tradeoff_row(
                model=plan.kind,
                recipe=plan.recipe,
                seed=plan.seed,
                training=record["train"],
                evaluation=record["evaluate"],
                measured=record["measure"],
                train_images=make_recipe(
                    plan.recipe, args.dataset, plan.overrides
                ).images_per_epoch(train_images),
            )
        )
    also_tested = [_also_tested(other, plans, state) for other in args.also_test]
    figures = tradeoff_json(
        dataset=args.dataset,
        rows=rows,
        extra={
            "also_tested": also_tested,
            "command": " ".join(["python -m jobs.benchmark tradeoff", *argv]),
            "overrides": parse_key_values(args.set, flag="--set"),
            "timing": {
                "batches": list(BATCHES),
                "repeats": args.repeats,
                "max_seconds": args.max_seconds,
                "threads": args.threads,
            },
        },
    )
    print(format_table(rows))
    for tested in also_tested:
        print(f"\nThe same models on {tested['dataset']} (test split):")
        print(format_table(tested["rows"]))
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
