"""The driver side of a training run: checks, the MLflow run, the TorchTrainer, registration."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch

from jobs import console
from jobs.core.data import (
    intact_rows,
    open_dataset,
    read_split,
)
from jobs.core.packaging import log_and_register
from jobs.preflight import check_against_dataset
from jobs.store import ensure_experiment, tracking_uri
from jobs.training.loop import STATE_FILE, WorkerSpec, train_loop_per_worker
from jobs.training.progress import Event, board
from jobs.training.recipes import DataSpec, TrainConfig, build_model
from jobs.training.tracking import DatasetRef, end_run, flatten, git_commit, start_or_resume_run
from pipelines.schema import TRAIN_COLUMNS
from pipelines.storage import DatasetVersion, url_scheme


@dataclass(kw_only=True)
class TrainRequest:
    """A training run as the job asks for it."""

    config: TrainConfig  # the recipe with its overrides
    name: str  # run name: Ray Train's run directory and the MLflow run (same name = resume)
    storage: str  # checkpoint root (local path or s3://)
    experiment: str = "saccade"  # MLflow experiment
    data: DataSpec | None = None  # filled by check(): the dataset's classes and channels

    def check(self) -> DatasetVersion:
        """Open the dataset (exists, schema v2) and build the model once on the CPU, so that a
        bad configuration fails with one clear message before any worker starts."""
        version = open_dataset(self.config.dataset)
        first = version.read_head("train", 1, columns=["channels"])
        self.data = DataSpec.of(version.manifest, int(first.column("channels")[0].as_py()))
        check_against_dataset(self.config.model_cfg, self.data, self.config.dataset)
        build_model(self.config, self.data)  # unknown model or settings → ValueError
        return version


@dataclass
class TrainOutcome:
    name: str
    run_id: str
    model_version: str
    registered_model: str
    metrics: dict[str, float]

    def format(self) -> str:
        keys = ("val/accuracy", "val/mae", "val/hit_rate", "val/centred_hit_rate")
        keys += ("train/samples_per_s",)
        shown = ", ".join(f"{k}={self.metrics[k]:.4g}" for k in keys if k in self.metrics)
        return (
            f"run {self.name} (MLflow run {self.run_id}) epoch {self.metrics.get('epoch')}: "
            f"{shown}\nregistered models:/{self.registered_model}/{self.model_version}"
        )


def _picture_rows(version: DatasetVersion, n: int) -> bytes | None:
    """The fixed validation images drawn every few epochs, as Arrow IPC bytes."""
    table = intact_rows(version.read_head("val", n, columns=TRAIN_COLUMNS))
    if table.num_rows == 0:
        return None
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _trainer(request: TrainRequest, version: DatasetVersion, run_id: str, progress: Any) -> Any:
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = request.config
    assert request.data is not None, "TrainRequest.check() fills the dataset's DataSpec first"
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": WorkerSpec(
                train=cfg,
                data=request.data,
                run_id=run_id,
                tracking_uri=tracking_uri(),
                picture_rows=_picture_rows(version, cfg.picture_images),
                progress=progress,
            )
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        # validation is read by each worker from its share of the files (loop._validate)
        datasets={"train": _train_split(version, cfg)},
        # Validation runs whole on rank 0; only the training split is sharded.
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=_ordered()),
        run_config=RunConfig(
            name=request.name,
            storage_path=_absolute(request.storage),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )


def _ordered() -> Any:
    """Ray Data's ingest options with the blocks in order (by default they come as their read
    tasks finish, so two runs of one seed would train on different batches)."""
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def _train_split(version: DatasetVersion, cfg: TrainConfig) -> Any:
    """The training split, its files in a new seeded order each epoch; a budget of
    `train_images` reads the same first images, in file order, every epoch."""
    if cfg.train_images is None:
        return read_split(version, "train", shuffle_seed=cfg.seed)
    return read_split(version, "train").limit(cfg.train_images)


def _absolute(storage: str) -> str:
    return storage if url_scheme(storage) else os.path.abspath(storage)


def _epoch_lines(event: Event) -> None:
    if "line" in event:
        console.current().say(event["line"])


def train(
    request: TrainRequest, *, progress: Callable[[Event], None] | None = None
) -> TrainOutcome:
    """Run the training described by `request` (Ray initialised; `request.check()` done).
    `progress` receives the workers' progress events (default: each epoch's line is printed)."""
    version = request.check()
    cfg = request.config
    params = {
        **flatten("train", cfg.to_dict()),
        "dataset.url": cfg.dataset,
        "dataset.version": version.manifest.version,
        "dataset.manifest_sha256": version.manifest.sha256(),
        "git_commit": git_commit(),
    }
    dataset = DatasetRef(
        url=cfg.dataset,
        manifest_sha256=params["dataset.manifest_sha256"],
        counts=version.manifest.counts,
    )
    experiment_id = ensure_experiment(request.experiment)
    run_id = start_or_resume_run(experiment_id, request.name, params, dataset)
    ok = False
    try:
        with board(progress or _epoch_lines) as progress_board:
            result = _trainer(request, version, run_id, progress_board).fit()
        with result.checkpoint.as_directory() as directory:
            state = torch.load(
                os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=False
            )
        example = intact_rows(version.read_head("val", 8, columns=TRAIN_COLUMNS)).slice(0, 2)
        model_version = log_and_register(
            state,
            example,
            run_id=run_id,
            registered_model=cfg.registered_model,
            validation=result.metrics,
        )
        ok = True
    finally:
        end_run(run_id, ok=ok)
    return TrainOutcome(
        name=request.name,
        run_id=run_id,
        model_version=model_version,
        registered_model=cfg.registered_model,
        metrics=dict(result.metrics),
    )
