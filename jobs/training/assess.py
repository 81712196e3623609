"""Evaluate a registered model on a dataset split and record the figures in MLflow.

Used by `python -m jobs.evaluate` and the quickstart (and by promotion, which compares models
evaluated on the same dataset version).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from jobs.training.data import TRAIN_COLUMNS, manifest_hash, open_dataset, table_to_batch
from jobs.training.evaluation import EvalResult, PeakRss, evaluate
from jobs.training.tracking import ensure_experiment, tracking_uri
from model.interface import Batch, BatchClassifier
from pipelines.storage import DatasetVersion

EVAL_EXPERIMENT = "saccade-evaluations"


@dataclass
class Assessment:
    """One model on one dataset split: the figures and the MLflow run that holds them."""

    model_uri: str
    dataset: str
    split: str
    metrics: dict[str, float]
    per_class: dict[str, float]
    run_id: str


def load_classifier(model_uri: str) -> tuple[BatchClassifier, Any]:
    """The PyTorch model inside a registered pyfunc (`models:/NAME/VERSION`, `models:/NAME@alias`,
    `runs:/ID/model`), and the pyfunc itself."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    try:
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"cannot load model {model_uri}: {exc.message}") from None
    return pyfunc.unwrap_python_model().model, pyfunc


def _batches(version: DatasetVersion, split: str, batch_size: int) -> Iterator[Batch]:
    files = version.files(split)
    if not files:
        raise ValueError(f"dataset {version.url} has no {split!r} split")
    for path in files:
        with version.fs.open(path, "rb") as f:
            for record_batch in pq.ParquetFile(f).iter_batches(
                batch_size=batch_size, columns=TRAIN_COLUMNS
            ):
                import pyarrow as pa

                yield table_to_batch(pa.Table.from_batches([record_batch]))


def assess(
    model_uri: str,
    dataset: str,
    *,
    split: str = "test",
    batch_size: int = 16,
    tags: dict[str, str] | None = None,
) -> Assessment:
    """Accuracy (overall and per class), localisation, latency and peak memory, logged as a run
    of the evaluations experiment tagged with the model and the dataset version."""
    version = open_dataset(dataset)
    model_tags = _model_tags(model_uri)  # before loading: an alias could move meanwhile
    model_uri_loaded = (
        f"models:/{model_tags['model.name']}/{model_tags['model.version']}"
        if model_tags
        else model_uri
    )
    model, _ = load_classifier(model_uri_loaded)
    with PeakRss() as memory:
        result: EvalResult = evaluate(
            model, _batches(version, split, batch_size), int(version.manifest["num_classes"])
        )
    metrics = result.metrics(split)
    # Peak resident-set growth while evaluating (model already loaded): what inference needed.
    metrics[f"{split}/peak_memory_growth_mb"] = memory.growth_mb
    metrics[f"{split}/peak_rss_mb"] = memory.peak_mb
    names = version.manifest.get("class_names") or []
    per_class = {
        names[k] if k < len(names) else str(k): v for k, v in result.per_class_accuracy().items()
    }
    run_id = _log(model_uri, version, split, metrics, per_class, {**model_tags, **(tags or {})})
    return Assessment(
        model_uri=model_uri,
        dataset=dataset,
        split=split,
        metrics=metrics,
        per_class=per_class,
        run_id=run_id,
    )


def _log(
    model_uri: str,
    version: DatasetVersion,
    split: str,
    metrics: dict[str, float],
    per_class: dict[str, float],
    tags: dict[str, str],
) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment_id = ensure_experiment(EVAL_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"eval {model_uri}") as run:
        mlflow.set_tags(
            {
                "model_uri": model_uri,
                "dataset.version": version.url,
                "dataset.manifest_sha256": manifest_hash(version.manifest),
                **tags,
            }
        )
        mlflow.log_params({"split": split, "dataset.url": version.url})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(per_class, f"{split}_per_class_accuracy.json")
    return run.info.run_id


def _model_tags(model_uri: str) -> dict[str, str]:
    """``model.name`` and ``model.version`` of a registry URI (an alias resolved to its version
    now), so that promotion finds a version's recorded evaluations whatever URI evaluated it."""
    from jobs.ops.registry import resolve

    if not model_uri.startswith("models:/"):
        return {}
    try:
        ref = resolve(model_uri)
    except ValueError:  # another URI form, or no such version: loading it names the problem
        return {}
    return {"model.name": ref.name, "model.version": ref.version}
