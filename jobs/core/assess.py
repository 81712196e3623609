"""Evaluate a registered model on a dataset split and record the figures in MLflow.

Used by `python -m jobs.evaluate` and the quickstart (and by promotion, which compares models
evaluated on the same dataset version).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from jobs.core.data import open_dataset
from jobs.core.evaluation import EvalResult, PeakRss, evaluate_tables
from jobs.store import EVAL_EXPERIMENT, ensure_experiment, resolve, tracking_uri
from model.interface import BatchClassifier
from pipelines.integrity import RowCheck, SplitDigest, check_digests
from pipelines.schema import TRAIN_COLUMNS, Manifest
from pipelines.storage import DatasetVersion, open_parquet


@dataclass
class Assessment:
    """One model on one dataset split: the figures and the MLflow run that holds them."""

    model_uri: str
    dataset: str
    split: str
    metrics: dict[str, float]
    per_class: dict[str, float]
    # {"class_names": [...], "matrix": rows = true class, columns = predicted, image counts}
    confusion: dict[str, Any]
    run_id: str
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # skipped rows: (id, reason)


def load_classifier(model_uri: str) -> tuple[BatchClassifier, Any]:
    """The PyTorch model inside a registered pyfunc (`models:/NAME/VERSION`, `models:/NAME@alias`,
    `runs:/ID/model`), and the pyfunc itself; on the CPU, where evaluation builds its batches."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    try:
        pyfunc = mlflow.pyfunc.load_model(model_uri, model_config={"device": "cpu"})
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"cannot load model {model_uri}: {exc.message}") from None
    return pyfunc.unwrap_python_model().model, pyfunc


def _tables(
    version: DatasetVersion, split: str, batch_size: int, observed: SplitDigest
) -> Iterator[tuple[pa.Table, RowCheck]]:
    """The split's rows, file by file, each table with its digest check; the digests recomputed
    from what is stored go into `observed` (the split's digest as the data says)."""
    files = version.files(split)
    if not files:
        raise ValueError(f"dataset {version.url} has no {split!r} split")
    for path in files:
        with open_parquet(version.fs, path) as parquet:
            for record_batch in parquet.iter_batches(batch_size=batch_size, columns=TRAIN_COLUMNS):
                table = pa.Table.from_batches([record_batch])
                check = check_digests(table)
                observed.add(os.path.basename(path), check.recomputed)
                yield table, check


def _counted(tables: Iterator[Any], progress: Callable[[int], None]) -> Iterator[Any]:
    for item in tables:
        yield item
        progress(item[0].num_rows)  # after the consumer has evaluated it


def assess(
    model_uri: str,
    dataset: str,
    *,
    split: str = "test",
    batch_size: int = 16,
    tags: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Assessment:
    """Accuracy (overall, per class, the confusion matrix; for a count label its errors),
    localisation, latency and peak memory, logged as a run of the evaluations experiment tagged
    with the model and the dataset version. `progress` gets the number of rows of each table
    once it is evaluated."""
    version = open_dataset(dataset, split)
    model_tags = _model_tags(model_uri)  # before loading: an alias could move meanwhile
    model_uri_loaded = (
        f"models:/{model_tags['model.name']}/{model_tags['model.version']}"
        if model_tags
        else model_uri
    )
    model, _ = load_classifier(model_uri_loaded)
    observed = SplitDigest()
    tables = _tables(version, split, batch_size, observed)
    with PeakRss() as memory:
        result: EvalResult = evaluate_tables(
            model,
            _counted(tables, progress) if progress else tables,
            version.manifest.num_classes,
        )
    # The dataset as read: a copy whose bytes changed is another dataset, whatever its manifest.
    seen = version.manifest.with_digests({split: observed.hexdigest()})
    metrics = result.metrics(split, version.manifest.label_counts)
    # Peak resident-set growth while evaluating (model already loaded): what inference needed.
    metrics[f"{split}/peak_memory_growth_mb"] = memory.growth_mb
    metrics[f"{split}/peak_rss_mb"] = memory.peak_mb
    names = version.manifest.class_names
    per_class = {
        names[k] if k < len(names) else str(k): v for k, v in result.per_class_accuracy().items()
    }
    confusion = {"class_names": names, "matrix": result.confusion.tolist()}
    figures = {"per_class_accuracy": per_class, "confusion": confusion}
    run_id = _log(model_uri, version, seen, split, metrics, figures, {**model_tags, **(tags or {})})
    return Assessment(
        model_uri=model_uri,
        dataset=dataset,
        split=split,
        metrics=metrics,
        per_class=per_class,
        confusion=confusion,
        run_id=run_id,
        corrupt=result.corrupt,
    )


def _log(
    model_uri: str,
    version: DatasetVersion,
    manifest: Manifest,
    split: str,
    metrics: dict[str, float],
    figures: dict[str, dict[str, Any]],
    tags: dict[str, str],
) -> str:
    """One evaluations-experiment run: the metrics, and each of `figures` as
    ``<split>_<name>.json``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment_id = ensure_experiment(EVAL_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"eval {model_uri}") as run:
        mlflow.set_tags(
            {
                "model_uri": model_uri,
                "dataset.version": version.url,
                "dataset.manifest_sha256": manifest.sha256(),
                **tags,
            }
        )
        mlflow.log_params({"split": split, "dataset.url": version.url})
        mlflow.log_metrics(metrics)
        for name, figure in figures.items():
            mlflow.log_dict(figure, f"{split}_{name}.json")
    return run.info.run_id


def _model_tags(model_uri: str) -> dict[str, str]:
    """``model.name`` and ``model.version`` of a registry URI (an alias resolved to its version
    now), so that promotion finds a version's recorded evaluations whatever URI evaluated it."""
    if not model_uri.startswith("models:/"):
        return {}
    try:
        ref = resolve(model_uri)
    except ValueError:  # another URI form, or no such version: loading it names the problem
        return {}
    return {"model.name": ref.name, "model.version": ref.version}
