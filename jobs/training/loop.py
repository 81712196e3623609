"""The Ray Train worker loop: the one place where Ray Train is called (shards, DDP, report).

Per epoch: train on this worker's shard, validate this worker's share of the validation files
(summed over the workers), log to MLflow from rank 0, and report a checkpoint (model, optimiser,
scheduler, epoch) so a failed worker or an interrupted run resumes from the last finished epoch.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from jobs.core.data import StepOnRows, run_on_intact_rows
from jobs.core.evaluation import (
    EvalResult,
    evaluate_tables,
    peak_memory_mb,
    reduce_over_workers,
)
from jobs.core.pictures import confusion_picture, prediction_picture
from jobs.training.progress import Poster
from jobs.training.recipes import DataSpec, TrainConfig, build_model
from jobs.training.tracking import StepLog, Tracker
from model.interface import Batch, BatchClassifier
from model.step import BoxCurriculum, LossModule, train_step
from pipelines.schema import TRAIN_COLUMNS
from pipelines.storage import DatasetVersion

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
EPOCH_KEY = "train/epoch_seconds"  # a metric every epoch logs: which epochs the run has
PROGRESS_STEPS = 100  # a progress line within long epochs, every this many steps (rank 0)
VAL_BATCH = 32  # validation images per forward pass


def _restore(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Load the latest reported checkpoint, if any; returns the last finished epoch (0: none)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        state = torch.load(
            os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=False
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(state["epoch"])


def _train_epoch(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    *,
    before_step: Callable[[int], None],
    poster: Poster,
    step_log: StepLog,
    lead: bool,
) -> dict[str, float]:
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    world = ray.train.get_context().get_world_size()
    sums: dict[str, float] = {}
    steps, samples, corrupt, start = 0, 0, 0, time.perf_counter()
    last_intact: pa.Table | None = None

    def step(batch: Batch) -> dict[str, float]:
        # the scheduler counts optimiser steps and is checkpointed: a resumed run continues
        before_step(scheduler.last_epoch)
        return train_step(module, batch, optimizer, cfg.objective, clip_value=cfg.clip_value)

    for table in shard.iter_batches(
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        local_shuffle_buffer_size=4 * cfg.batch_size,
        local_shuffle_seed=cfg.seed * 100_003 + epoch,
    ):
        done: StepOnRows[dict[str, float]] = run_on_intact_rows(table, step, device=device)
        corrupt += len(done.skipped)
        if done.result is None and world > 1:
            done = _repeat_step(last_intact, step, device)
        if done.result is None:
            continue  # one worker: a batch with no intact row is no step
        last_intact = table
        parts = done.result
        scheduler.step()
        step_log.add(scheduler.last_epoch, parts)  # optimiser steps so far, across epochs
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        steps += 1
        samples += done.rows
        poster.step(epoch, world * samples)
        if steps % PROGRESS_STEPS == 0 and lead:
            rate = samples / (time.perf_counter() - start)
            mean = {k: v / steps for k, v in sums.items()}
            # the worker's log (Ray Train's files; the driver's log through log_to_driver)
            log.info(
                "epoch %d, step %d: loss %.4g, accuracy %.3f, %.1f samples/s on this worker",
                *(epoch, steps, mean["total"], mean["accuracy"], rate),
            )
    step_log.flush()
    seconds = time.perf_counter() - start
    world = ray.train.get_context().get_world_size()
    out = {f"train/{k}": v / max(steps, 1) for k, v in sums.items()}
    # Shards are equal-sized, so this worker's rate times the world size is the job's rate.
    out["train/samples_per_s"] = world * samples / max(seconds, 1e-9)
    out["train/images"] = float(world * samples)  # what the epoch read (`train_images` caps it)
    out["train/epoch_seconds"] = seconds
    out["train/corrupt_rows"] = float(_sum_over_workers(corrupt, world, device))
    return out


def _repeat_step(
    last_intact: pa.Table | None, step: Callable[[Batch], dict[str, float]], device: torch.device
) -> StepOnRows[dict[str, float]]:
    """Every worker must take every step (DDP all-reduces each step's gradients): a worker whose
    whole batch was corrupt takes its step on its previous intact batch instead of skipping."""
    if last_intact is None:
        raise RuntimeError(
            "every row of this worker's first training batch is corrupt: run "
            "`python -m jobs.verify --dataset ...` and rebuild the dataset"
        )
    return run_on_intact_rows(last_intact, step, device=device)


def _sum_over_workers(value: int, world: int, device: torch.device) -> int:
    """`value` summed over the training workers (each counts the rows of its own shard)."""
    if world == 1:
        return value
    total = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return int(total.item())


def _validation_share(url: str) -> tuple[DatasetVersion, list[str]]:
    """This worker's share of the validation files: file i goes to rank i mod world (each row
    once, none dropped to even the shares)."""
    import ray.train

    context = ray.train.get_context()
    version = DatasetVersion.open(url)
    return version, version.files("val")[context.get_world_rank() :: context.get_world_size()]


def _validate(
    model: BatchClassifier,
    share: tuple[DatasetVersion, list[str]],
    num_classes: int,
    device: torch.device,
) -> EvalResult:
    """Every worker evaluates its share of the validation files, and all get the sum."""
    import ray.train

    version, files = share
    world = ray.train.get_context().get_world_size()
    tables = version.iter_tables(files, batch_size=VAL_BATCH, columns=TRAIN_COLUMNS)
    result = evaluate_tables(model, ((t, None) for t in tables), num_classes, device=device)
    return reduce_over_workers(result, world, device)


def _pictures(
    model: BatchClassifier,
    picture_rows: pa.Table | None,
    result: EvalResult,
    tracker: Tracker,
    device: torch.device,
    *,
    cfg: TrainConfig,
    epoch: int,
    class_names: list[str],
) -> None:
    """The glimpse picture of the fixed validation images (titled with the model, the epoch and
    the validation accuracy; each image's predicted and true class) and the confusion matrix."""
    heading = f"{cfg.model} · epoch {epoch}/{cfg.epochs} · val accuracy {result.accuracy:.3f}"
    with tempfile.TemporaryDirectory() as directory:
        drawn = None
        if picture_rows is not None and picture_rows.num_rows:
            drawn = run_on_intact_rows(
                picture_rows, lambda b: (b, model.predict(b)), device=device
            ).result  # corrupt rows are left out of the picture
        if drawn is not None and drawn[1].boxes_BT4 is not None:
            batch, prediction = drawn
            path = os.path.join(directory, f"glimpses_epoch{epoch:04d}.png")
            picture = prediction_picture(batch, prediction, class_names, heading)
            picture.save(path)
            tracker.artifact(path, "glimpses")
            tracker.image(picture, "glimpses", step=epoch)
        png = os.path.join(directory, f"confusion_epoch{epoch:04d}.png")
        title = f"{cfg.model}, validation, epoch {epoch}: {result.images} images, accuracy "
        confusion = confusion_picture(
            result.confusion, class_names=class_names, title=f"{title}{result.accuracy:.3f}"
        )
        confusion.save(png)
        tracker.image(confusion, "confusion", step=epoch)
        csv = os.path.join(directory, f"confusion_epoch{epoch:04d}.csv")
        np.savetxt(csv, result.confusion, fmt="%d", delimiter=",")
        tracker.artifact(png, "confusion")
        tracker.artifact(csv, "confusion")


def _report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
    import ray.train

    if state is None:  # ranks other than 0 report metrics only
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        torch.save(state, os.path.join(directory, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """What every training worker is given (`train_loop_config={"spec": ...}`)."""

    train: TrainConfig
    data: DataSpec
    run_id: str | None  # the MLflow run rank 0 logs to
    tracking_uri: str
    picture_rows: bytes | None  # the validation images drawn each few epochs (Arrow IPC)
    progress: Any = None  # the board rank 0 posts its progress to (jobs.training.progress)


def train_loop_per_worker(loop_config: dict[str, WorkerSpec]) -> None:
    """Entry of every Ray Train worker; `loop_config["spec"]` says what to train. Rank 0 alone
    logs, draws, checkpoints and posts progress: its `Tracker` is the one gate (`lead`)."""
    import ray.train
    import ray.train.torch

    spec = loop_config["spec"]
    cfg, data = spec.train, spec.data
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg, data).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warmup = max(cfg.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    done = _restore(model, optimizer, scheduler)
    torch.manual_seed(cfg.seed * 1009 + rank + 7919 * done)  # sampling noise differs per rank
    # Some parameters get no gradient in some configurations (a one-glimpse saccader's LSTM:
    # its state after the last glimpse is never read), which DDP refuses unless told to look.
    module = ray.train.torch.prepare_model(
        LossModule(model), parallel_strategy_kwargs={"find_unused_parameters": True}
    )
    tracker = Tracker(spec.run_id, enabled=rank == 0, uri=spec.tracking_uri)
    pictures = spec.picture_rows
    picture_rows = pa.ipc.open_stream(pictures).read_all() if pictures else None
    curriculum = BoxCurriculum(cfg.curriculum_start, cfg.curriculum_steps)
    # Progress reaches the driver through the board, not stdout (see jobs/training/progress.py).
    poster = Poster(spec.progress, enabled=tracker.lead)
    # Epochs a lost attempt logged after its last kept checkpoint (rank 0 logs an epoch before
    # reporting its checkpoint, and Ray Train registers a reported one later still): retrained
    # from the same checkpoint and seeds, they keep their first log, so each epoch is in the
    # run's history once.
    logged = tracker.logged_steps(EPOCH_KEY)
    step_log = StepLog(tracker)
    val_share = _validation_share(cfg.dataset)
    for epoch in range(done + 1, cfg.epochs + 1):
        metrics = _train_epoch(
            module,
            optimizer,
            scheduler,
            cfg,
            epoch,
            device,
            before_step=lambda step: curriculum.apply(model, step),
            poster=poster,
            step_log=step_log,
            lead=tracker.lead,
        )
        state = None
        result = _validate(model, val_share, data.num_classes, device)  # on every rank
        if tracker.lead:
            metrics.update(result.metrics("val", data.label_counts))
            metrics["peak_memory_mb"] = peak_memory_mb(device)
            if epoch not in logged:
                tracker.metrics(metrics, step=epoch)
            if epoch % cfg.picture_every == 0 or epoch == cfg.epochs:
                _pictures(
                    model,
                    picture_rows,
                    result,
                    tracker,
                    device,
                    cfg=cfg,
                    epoch=epoch,
                    class_names=data.class_names,
                )
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "epoch": epoch,
                "train": cfg.to_dict(),
                "data": data.to_dict(),
            }
        metrics["epoch"] = epoch
        poster.epoch(epoch, _progress_line(epoch, cfg.epochs, metrics))
        _report(metrics, state)


def _progress_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """One line per epoch, e.g. ``epoch 2/4: loss 3.21, accuracy train 0.231 val 0.250,
    hit-rate 0.41 (centred 0.25), 76 img/s, 41 s``."""
    m = metrics
    accuracy = f"accuracy train {m['train/accuracy']:.3f}"
    if "val/accuracy" in m:
        accuracy += f" val {m['val/accuracy']:.3f}"
    parts = [f"loss {m['train/total']:.3g}", accuracy]
    if "val/mae" in m:
        parts.append(f"count error {m['val/mae']:.2f} (within one {m['val/within_one']:.2f})")
    if "val/hit_rate" in m:
        parts.append(f"hit-rate {m['val/hit_rate']:.2f} (centred {m['val/centred_hit_rate']:.2f})")
    parts.append(f"{m['train/samples_per_s']:.0f} img/s, {m['train/epoch_seconds']:.0f} s")
    return f"epoch {epoch}/{epochs}: " + ", ".join(parts)
