"""MLflow runs of training: one run per training (resumable), rank-0-only logging, per-step
metrics. Where the store is and the registry's names live in `jobs.store`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.store import client
from jobs.training.recipes import RENAMED
from pipelines.storage import url_scheme

RUN_NAME_TAG = "saccade.run_name"


@dataclass(frozen=True)
class DatasetRef:
    """The dataset version a run trains on, as MLflow's run input (the UI's Datasets column)."""

    url: str  # the version: <root>/<version>
    manifest_sha256: str  # its Manifest.sha256()
    counts: Mapping[str, int]  # images per split


def start_or_resume_run(
    experiment_id: str,
    run_name: str,
    params: Mapping[str, Any],
    dataset: DatasetRef | None = None,
) -> str:
    """The id of the run named `run_name` (resuming it), or of a new one with `params`, MLflow's
    standard source tags and `dataset` as its input logged."""
    from mlflow.entities import Param

    store = client()
    runs = store.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1
    )
    if runs:
        _check_same_training(run_name, runs[0].data.params, params)
        store.update_run(runs[0].info.run_id, status="RUNNING")
        return runs[0].info.run_id
    tags = {RUN_NAME_TAG: run_name, **source_tags()}
    run = store.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow's batch limit
        store.log_batch(run.info.run_id, params=items[i : i + 100])
    if dataset is not None:
        store.log_inputs(run.info.run_id, datasets=[_dataset_input(dataset)])
    return run.info.run_id


def _param_value(value: Any) -> str:
    """A parameter as MLflow stores it (a string, cut at its length limit)."""
    return str(value)[:6000]


# What may change between the attempts of one run: where and how it runs, how long it goes on,
# where its model is registered, the code's commit. Everything else in `train.*` and `dataset.*`
# is what is being trained.
RESUMABLE_CHANGES = frozenset(
    {
        "train.epochs",
        "train.num_workers",
        "train.cpus_per_worker",
        "train.use_gpu",
        "train.max_failures",
        "train.picture_every",
        "train.picture_images",
        "train.registered_model",  # where the result is registered, not what is trained
        "git_commit",
    }
)


# The run's parameters that say what is trained; others are MLflow's (a logged model's
# `model_config` becomes run parameters) and say nothing about it.
TRAINING_IDENTITY = ("train.", "dataset.")


def _check_same_training(
    run_name: str, logged: Mapping[str, str], params: Mapping[str, Any]
) -> None:
    """Resuming `run_name` with another training configuration would continue its checkpoint
    under the first attempt's logged parameters: refuse, naming what differs. Parameters logged
    under a setting's former name count as the setting's."""
    current = {f"train.{old}": f"train.{new}" for old, new in RENAMED.items()}
    logged = {current.get(k, k): v for k, v in logged.items()}
    changed = sorted(
        k
        for k in logged.keys() | params.keys()
        if k.startswith(TRAINING_IDENTITY)
        and k not in RESUMABLE_CHANGES
        and logged.get(k) != (_param_value(params[k]) if k in params else None)
    )
    if changed:
        detail = ", ".join(f"{k}: {logged.get(k)} → {params.get(k)}" for k in changed[:5])
        raise ValueError(
            f"run {run_name!r} was started with another configuration ({detail}); resuming it "
            "would mix the two: give the new training another --name, or delete the old run"
        )


def source_tags() -> dict[str, str]:
    """MLflow's standard tags for who ran what (the UI's Source, User and commit columns)."""
    import getpass

    from mlflow.utils import mlflow_tags

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    return {
        mlflow_tags.MLFLOW_SOURCE_NAME: " ".join(["python", *sys.argv])[:500],
        mlflow_tags.MLFLOW_SOURCE_TYPE: "JOB",
        mlflow_tags.MLFLOW_GIT_COMMIT: git_commit(),
        mlflow_tags.MLFLOW_USER: user,
    }


def _dataset_input(dataset: DatasetRef) -> Any:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils import mlflow_tags

    scheme = url_scheme(dataset.url) or "local"
    return DatasetInput(
        Dataset(
            name="/".join(dataset.url.rstrip("/").split("/")[-2:]),  # <root name>/<version>
            # MLflow stores 36 characters of digest; the whole hash is the run's
            # `dataset.manifest_sha256` parameter
            digest=dataset.manifest_sha256[:36],
            source_type=scheme,
            source=json.dumps({"uri": dataset.url}),
            profile=json.dumps({"counts": dict(dataset.counts)}),
        ),
        tags=[InputTag(mlflow_tags.MLFLOW_DATASET_CONTEXT, "training")],
    )


def end_run(run_id: str, *, ok: bool) -> None:
    client().set_terminated(run_id, status="FINISHED" if ok else "FAILED")


def git_commit() -> str:
    """The commit of the code being run ('unknown' outside a git checkout, e.g. in a Ray job's
    uploaded working directory)."""
    try:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(
            ["git", "-C", repo, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SACCADE_GIT_COMMIT", "unknown")


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts as dotted MLflow params."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(flatten(name, value))
        else:
            out[name] = value
    return out


class Tracker:
    """Logs to one MLflow run from rank 0; a no-op on every other rank (STYLE.md, side effects)."""

    def __init__(self, run_id: str | None, *, enabled: bool, uri: str | None = None) -> None:
        self.run_id = run_id
        self.lead = enabled  # rank 0: the one worker with side effects (logs, checkpoints)
        self.client = None
        if enabled and run_id:
            self.client = client(uri)

    def metrics(self, values: Mapping[str, float], *, step: int) -> None:
        self.metric_rows([(step, values)])

    def metric_rows(self, rows: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Several steps' metrics in as few requests as MLflow's batch limit allows."""
        if self.client is None or not rows:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for step, values in rows for k, v in values.items()]
        for i in range(0, len(batch), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[i : i + METRICS_PER_BATCH])

    def image(self, image: Any, key: str, *, step: int) -> None:
        """A PIL image as MLflow's step image `key` (the UI's image grid, with a step slider)."""
        if self.client is not None:
            self.client.log_image(self.run_id, image, key=key, step=step)

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which `key` is already logged in the run (none on a disabled tracker)."""
        if self.client is None:
            return set()
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, local_path, artifact_path)


METRICS_PER_BATCH = 1000  # MLflow's limit of metrics in one log_batch


class StepLog:
    """Per-step training metrics (`step/<part>` at the optimiser step), so MLflow's charts show
    more than one point an epoch: sent every `every_s` seconds and at each epoch's end. Steps a
    lost attempt already logged are not logged again (a resumed run retrains them)."""

    def __init__(self, tracker: Tracker, *, every_s: float = 10.0) -> None:
        self.tracker = tracker
        self.every_s = every_s
        self.pending: list[tuple[int, dict[str, float]]] = []
        self.sent = time.monotonic()
        self.logged_up_to = max(tracker.logged_steps(STEP_KEY), default=-1)

    def add(self, step: int, parts: Mapping[str, float]) -> None:
        if self.tracker.client is None or step <= self.logged_up_to:
            return
        self.pending.append((step, {f"step/{k}": v for k, v in parts.items()}))
        if time.monotonic() - self.sent >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self.tracker.metric_rows(self.pending)
        self.pending, self.sent = [], time.monotonic()


STEP_KEY = "step/total"  # a metric every logged step has
