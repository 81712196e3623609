"""Evaluate a model over batches: accuracy (overall and per class), the confusion matrix, the
glimpse localisation scores beside a centred box of the same size, for a count label how far off
the predicted counts are, latency and peak memory, and the rows skipped as corrupt (counted, never
fatal)."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from jobs.core.data import run_on_intact_rows
from model.interface import Batch, BatchClassifier
from model.step import eval_step
from pipelines.integrity import RowCheck


@dataclass
class EvalResult:
    """Sums over the evaluated images; the properties turn them into rates."""

    num_classes: int
    images: int = 0
    correct: int = 0
    ce_sum: float = 0.0
    glimpses: int = 0  # glimpses on images that have ground-truth boxes
    hits: float = 0.0  # of those, glimpses whose box contains an object's centre
    centred_hits: float = 0.0  # the same for a centred box of the same size
    objects: int = 0  # ground-truth objects on images the model glimpsed
    covered: int = 0  # of those, objects whose centre some glimpse box holds
    centred_covered: int = 0  # the same for centred boxes of the same sizes
    seconds: float = 0.0  # wall time inside the model (decoding the glimpses' tiles included)
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # skipped rows: (id, reason)
    corrupt_elsewhere: int = 0  # skipped rows counted by other workers (`reduce_over_workers`)
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, batch: Batch, out: dict, seconds: float) -> None:
        n = int(batch.labels_B.shape[0])
        predicted = out["prediction"].labels_B.cpu().numpy()
        truth = batch.labels_B.cpu().numpy()
        np.add.at(self.confusion, (truth, predicted), 1)
        self.images += n
        self.correct += int((predicted == truth).sum())
        self.ce_sum += out["ce"] * n
        self.seconds += seconds
        if "hit_rate" in out:
            boxes = out["prediction"].boxes_BT4
            g = int(boxes.shape[0] * boxes.shape[1])
            self.glimpses += g
            self.hits += out["hit_rate"] * g
            self.centred_hits += out["centred_hit_rate"] * g
            self.objects += out["objects"]
            self.covered += out["covered"]
            self.centred_covered += out["centred_covered"]

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.images, 1)

    def per_class_accuracy(self) -> dict[int, float]:
        totals = self.confusion.sum(axis=1)
        return {
            k: float(self.confusion[k, k] / totals[k]) for k in range(self.num_classes) if totals[k]
        }

    def count_errors(self, counts: Sequence[int]) -> dict[str, float]:
        """``mae`` (mean absolute error of the predicted count) and ``within_one`` (share of
        images whose predicted count is within ±1), where class k means `counts[k]` things."""
        values = np.asarray(counts, dtype=np.float64)
        if values.shape != (self.num_classes,):
            raise ValueError(f"{len(values)} counts for {self.num_classes} classes")
        error = np.abs(values[:, None] - values[None, :])  # [truth, predicted]
        n = max(self.images, 1)
        return {
            "mae": float((self.confusion * error).sum() / n),
            "within_one": float(self.confusion[error <= 1].sum() / n),
        }

    def metrics(self, prefix: str, counts: Sequence[int] | None = None) -> dict[str, float]:
        """The figures under `prefix`; `counts` (class k means counts[k] things) adds the count
        errors."""
        out = {
            f"{prefix}/accuracy": self.accuracy,
            f"{prefix}/ce": self.ce_sum / max(self.images, 1),
            f"{prefix}/latency_ms": 1000 * self.seconds / max(self.images, 1),
            f"{prefix}/corrupt_rows": float(len(self.corrupt) + self.corrupt_elsewhere),
            f"{prefix}/images": float(self.images),
        }
        if self.glimpses:
            out[f"{prefix}/hit_rate"] = self.hits / self.glimpses
            out[f"{prefix}/centred_hit_rate"] = self.centred_hits / self.glimpses
        if self.objects:
            out[f"{prefix}/object_coverage"] = self.covered / self.objects
            out[f"{prefix}/centred_object_coverage"] = self.centred_covered / self.objects
        if counts is not None:
            out.update({f"{prefix}/{k}": v for k, v in self.count_errors(counts).items()})
        return out


SUMS = (
    "images",
    "correct",
    "ce_sum",
    "glimpses",
    "hits",
    "centred_hits",
    "objects",
    "covered",
    "centred_covered",
    "seconds",
)


def reduce_over_workers(result: EvalResult, world: int, device: torch.device) -> EvalResult:
    """`result` summed over the data-parallel workers, each of which evaluated its own files:
    every worker gets the whole split's result (a collective: every worker must call it)."""
    if world == 1:
        return result
    sums = [float(getattr(result, name)) for name in SUMS] + [float(len(result.corrupt))]
    flat = np.concatenate([np.array(sums), result.confusion.ravel().astype(np.float64)])
    total = torch.tensor(flat, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    values = total.cpu().numpy()
    merged = EvalResult(num_classes=result.num_classes, corrupt=list(result.corrupt))
    for i, name in enumerate(SUMS):
        kind = type(getattr(result, name))
        setattr(merged, name, kind(round(values[i]) if kind is int else values[i]))
    merged.corrupt_elsewhere = round(values[len(SUMS)]) - len(result.corrupt)
    merged.confusion = (
        values[len(SUMS) + 1 :].round().astype(np.int64).reshape(result.confusion.shape)
    )
    return merged


def evaluate(model: BatchClassifier, batches: Iterable[Batch], num_classes: int) -> EvalResult:
    """Run `eval_step` over `batches` (eval mode, deterministic) and sum the results."""
    result = EvalResult(num_classes=num_classes)
    for batch in batches:
        start = time.perf_counter()
        out = eval_step(model, batch)
        result.add(batch, out, time.perf_counter() - start)
    return result


def evaluate_tables(
    model: BatchClassifier,
    tables: Iterable[tuple[pa.Table, RowCheck | None]],
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
) -> EvalResult:
    """`evaluate` over tables of dataset rows (each with its digest check, if already made):
    corrupt rows are skipped and listed in `EvalResult.corrupt`."""
    result = EvalResult(num_classes=num_classes)

    def step(batch: Batch) -> tuple[Batch, dict, float]:
        start = time.perf_counter()
        out = eval_step(model, batch)
        return batch, out, time.perf_counter() - start

    for table, check in tables:
        done = run_on_intact_rows(table, step, device=device, check=check)
        result.corrupt.extend(done.skipped)
        if done.result is not None:
            result.add(*done.result)
    return result


class PeakRss:
    """Samples this process's resident set every few milliseconds while open: the peak growth
    over the RSS at entry is what the work inside needed (`ru_maxrss` cannot tell that once an
    earlier step, such as loading MLflow, set a higher high-water mark)."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = self.rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory of this process: GPU allocations on a GPU, else the resident set (Linux KB)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
