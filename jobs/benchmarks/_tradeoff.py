"""What a trade-off row is and how its inference figures are measured, for every caller (the
trade-off benchmark, the quickstart): from a registered model and a dataset version.

- ``measure_model``: latency and working-set memory of requests of 1 and 16 test images from
  encoded tiles, exactly as ``jobs.benchmark inference`` measures them (``_common.time_inference``:
  rows held encoded in memory, a fresh region reader per request), each batch size in a fresh
  worker process (``python -m jobs.benchmarks._tradeoff --worker ...``); then, over the whole test
  split, the looked fraction (area of the union of the glimpse boxes / image area, mean over
  images; null for models without glimpses) and the tiles decoded fraction (full-resolution and
  level tiles decoded / the image's tiles, mean over images).
- ``tradeoff_row``, ``tradeoff_json``, ``format_table``: one row's fields (``ROW_FIELDS``), the
  JSON object (``dataset``, ``source``, ``image_size``, ``date``, ``machine``, ..., ``rows``) and
  the printed table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from jobs.benchmarks._common import infer_stored, machine, table, time_inference, worker_json
from jobs.core.assess import load_classifier
from jobs.core.data import open_dataset, table_to_batch
from jobs.core.pictures import prediction_picture
from jobs.training.tracking import git_commit
from pipelines.region import TiledImage
from pipelines.schema import MODEL_INPUT_COLUMNS
from pipelines.storage import DatasetVersion

BATCHES = (1, 16)
PICTURE_IMAGES = 8  # test images in a saccader's glimpse picture
# What a request carries, less the proxy's size (the proxy is decoded whole)
STORED_COLUMNS = [c for c in MODEL_INPUT_COLUMNS if c not in ("proxy_height", "proxy_width")]
# What each model class is in the table (model.config's classes by name).
KINDS = {
    "SaccaderConfig": "saccader",
    "ResizeConfig": "resize-224",
    "PatchesConfig": "every pixel",
    "ProxyOnlyConfig": "proxy-only",
}
# What a row takes from the evaluate job beside the accuracy, each null where it does not apply.
EVALUATED = (
    "within_one",
    "mae",
    "hit_rate",
    "centred_hit_rate",
    "object_coverage",
    "centred_object_coverage",
)
ROW_FIELDS = (
    "model",
    "recipe",
    "seed",
    "accuracy",
    *EVALUATED,
    "ms_per_image_b1",
    "ms_per_image_b16",
    "peak_mb_b1",
    "peak_mb_b16",
    "looked_fraction",
    "tiles_decoded_fraction",
    "confusion",
    "train_seconds",
    "train_samples_per_s",
    "epochs",
    "train_images",
    "model_uri",
    "run_id",
)


# ---------------------------------------------------------------------------------------------
# measuring a trained model (worker processes)


def stored_batches(dataset: str, batch: int) -> Iterator[list[dict[str, Any]]]:
    """The test split as stored rows (``{"tiled", "proxy"}``: encoded tiles, encoded proxy), in
    lists of `batch` (the last one may be shorter)."""
    import pyarrow.parquet as pq

    version = DatasetVersion.open(dataset)
    rows: list[dict[str, Any]] = []
    for path in version.files("test"):
        with version.fs.open(path, "rb") as f:
            for records in pq.ParquetFile(f).iter_batches(batch_size=batch, columns=STORED_COLUMNS):
                for row in records.to_pylist():
                    rows.append({"tiled": TiledImage.from_row(row), "proxy": row["proxy"]})
                    if len(rows) == batch:
                        yield rows
                        rows = []
    if rows:
        yield rows


def union_area(boxes_T4: Sequence[Sequence[float]]) -> float:
    """Area of the union of boxes (y0, x0, y1, x1) in image fractions, clipped to the image."""
    clipped = [[min(max(v, 0.0), 1.0) for v in box] for box in boxes_T4]
    ys = sorted({b[0] for b in clipped} | {b[2] for b in clipped})
    xs = sorted({b[1] for b in clipped} | {b[3] for b in clipped})
    area = 0.0
    # Exact on the grid of box edges: a cell is inside the union or outside it whole.
    for y0, y1 in itertools.pairwise(ys):
        for x0, x1 in itertools.pairwise(xs):
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            if any(b[0] <= cy < b[2] and b[1] <= cx < b[3] for b in clipped):
                area += (y1 - y0) * (x1 - x0)
    return area


def _load_model(model_uri: str, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    model, _ = load_classifier(model_uri)
    return model.eval()


def time_worker(model_uri: str, dataset: str, batch: int, args: argparse.Namespace) -> dict:
    """Requests of `batch` test images, as the inference benchmark times them."""
    model = _load_model(model_uri, args.threads)
    rows = next(stored_batches(dataset, batch))
    if len(rows) < batch:
        raise ValueError(f"the test split of {dataset} has {len(rows)} images; batch {batch}")
    return time_inference(
        model, rows, threads=args.threads, repeats=args.repeats, max_seconds=args.max_seconds
    )


def coverage_worker(model_uri: str, dataset: str, args: argparse.Namespace) -> dict:
    """Over the whole test split: looked fraction (glimpse models) and tiles decoded fraction."""
    model = _load_model(model_uri, args.threads)
    looked, decoded = [], []
    for rows in stored_batches(dataset, max(BATCHES)):
        prediction, decoded_by_image = infer_stored(model, rows, args.threads)
        for b, row in enumerate(rows):
            tiled = row["tiled"]
            decoded.append(decoded_by_image[b] / (len(tiled.tiles) + len(tiled.level_tiles)))
            if prediction.boxes_BT4 is not None:
                looked.append(union_area(prediction.boxes_BT4[b].tolist()))
    return {
        "looked_fraction": sum(looked) / len(looked) if looked else None,
        "tiles_decoded_fraction": sum(decoded) / len(decoded),
        "test_images": len(decoded),
    }


def measure_model(model_uri: str, dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """Latency and memory at each batch size and the coverage figures, each in a fresh worker."""
    base = [sys.executable, "-m", "jobs.benchmarks._tradeoff", "--worker"]
    settings = ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    settings += ["--max-seconds", str(args.max_seconds)]
    out: dict[str, Any] = {}
    for batch in BATCHES:
        cmd = [*base, "time", model_uri, dataset, str(batch), *settings]
        timed = worker_json(cmd, f"{model_uri} batch {batch}")
        out[f"ms_per_image_b{batch}"] = timed["ms_per_image"]
        out[f"peak_mb_b{batch}"] = timed["peak_mb"]
        out[f"timed_runs_b{batch}"] = timed["runs"]
    cmd = [*base, "coverage", model_uri, dataset, "0", *settings]
    out.update(worker_json(cmd, f"{model_uri} coverage"))
    return out


def picture_worker(model_uri: str, dataset: str, images: int, args: argparse.Namespace) -> dict:
    """The model's glimpses on the first `images` test images (proxy and original, numbered
    boxes, ground truth, predicted and true class), drawn to ``args.out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    model = _load_model(model_uri, args.threads)
    version = DatasetVersion.open(dataset)
    with version.fs.open(version.files("test")[0], "rb") as f:
        # one record batch of the first rows: a test shard of 4000×3000 images is gigabytes
        first = next(pq.ParquetFile(f).iter_batches(batch_size=images))
    batch = table_to_batch(pa.Table.from_batches([first]), threads=args.threads)
    with torch.no_grad():
        prediction = model.predict(batch)
    if prediction.boxes_BT4 is None:
        raise ValueError(f"{model_uri} has no glimpses to draw")
    names = version.manifest.class_names
    prediction_picture(batch, prediction, names, args.title).save(args.out)
    return {"picture": args.out}


def draw_picture(model_uri: str, dataset: str, path: str, title: str, threads: int) -> None:
    """`picture_worker` in a worker process of its own, as the measurements are."""
    cmd = [sys.executable, "-m", "jobs.benchmarks._tradeoff", "--worker", "picture"]
    cmd += [model_uri, dataset, str(PICTURE_IMAGES), "--threads", str(threads)]
    worker_json([*cmd, "--out", path, "--title", title], f"{model_uri} picture")


def run_worker(argv: Sequence[str]) -> int:
    """``--worker time|coverage|picture MODEL_URI DATASET BATCH [settings]``: print one JSON
    line (BATCH is the number of images for a picture)."""
    p = argparse.ArgumentParser(prog="tradeoff worker")
    p.add_argument("what", choices=["time", "coverage", "picture"])
    p.add_argument("model_uri")
    p.add_argument("dataset")
    p.add_argument("batch", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--out", help="picture: the PNG to write")
    p.add_argument("--title", default="", help="picture: its title")
    a = p.parse_args(argv)
    if a.what == "time":
        result = time_worker(a.model_uri, a.dataset, a.batch, a)
    elif a.what == "coverage":
        result = coverage_worker(a.model_uri, a.dataset, a)
    else:
        result = picture_worker(a.model_uri, a.dataset, a.batch, a)
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# rows and the JSON layout (shared with the quickstart)


def tradeoff_row(
    *,
    model: str,
    recipe: str,
    seed: int,
    training: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    measured: Mapping[str, Any],
    train_images: int,
) -> dict[str, Any]:
    """One model's row: exactly ``ROW_FIELDS`` (hit-rates and coverage null for models without
    glimpses, count errors and the confusion matrix null for a dataset whose label is not a
    count)."""
    seconds = float(training["train_seconds"])
    epochs = int(training["epochs"])
    row = {
        "model": model,
        "recipe": recipe,
        "seed": int(seed),
        "accuracy": float(evaluation["accuracy"]),
        **{k: _float_or_none(evaluation.get(k)) for k in EVALUATED},
        **{f"ms_per_image_b{b}": float(measured[f"ms_per_image_b{b}"]) for b in BATCHES},
        **{f"peak_mb_b{b}": float(measured[f"peak_mb_b{b}"]) for b in BATCHES},
        "looked_fraction": _float_or_none(measured.get("looked_fraction")),
        "tiles_decoded_fraction": float(measured["tiles_decoded_fraction"]),
        # for a count label: the test split's confusion matrix, rows the true count
        "confusion": evaluation.get("confusion"),
        "train_seconds": seconds,
        "train_samples_per_s": epochs * train_images / seconds if seconds > 0 else 0.0,
        "epochs": epochs,
        "train_images": int(train_images),
        "model_uri": str(training["model_uri"]),
        "run_id": str(training["run_id"]),
    }
    assert tuple(row) == ROW_FIELDS
    return row


def evaluated(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a row takes from the evaluate job's ``--json`` on the test split: its metrics
    (``test/...``) and, for a count label, the confusion matrix (rows: true count)."""
    metrics = result["metrics"]
    extra = {k: metrics.get(f"test/{k}") for k in EVALUATED}
    counted = metrics.get("test/mae") is not None
    confusion = (result.get("confusion") or {}).get("matrix") if counted else None
    return {"accuracy": metrics["test/accuracy"], **extra, "confusion": confusion}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def tradeoff_json(
    *, dataset: str, rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The benchmark's JSON object: top-level ``dataset``, ``source``, ``image_size`` (of the
    first test image), ``date``, ``machine``, anything in `extra`, and the ``rows``."""
    version = open_dataset(dataset, "test")
    first = version.read_head("test", 1, columns=["height", "width", "channels"]).to_pylist()[0]
    return {
        "dataset": dataset,
        "source": version.manifest.source,
        "image_size": {k: int(first[k]) for k in ("height", "width", "channels")},
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "git_commit": git_commit(),
        **(extra or {}),
        "rows": [dict(r) for r in rows],
    }


# The table's columns: (header, row key); the count and coverage columns only for a count label.
COLUMNS = (
    ("model", "model"),
    ("recipe", "recipe"),
    ("seed", "seed"),
    ("test acc", "accuracy"),
    ("MAE", "mae"),
    ("within 1", "within_one"),
    ("hit-rate", "hit_rate"),
    ("centred", "centred_hit_rate"),
    ("covered", "object_coverage"),
    ("centred", "centred_object_coverage"),
    ("ms/img b1", "ms_per_image_b1"),
    ("ms/img b16", "ms_per_image_b16"),
    ("MB b1", "peak_mb_b1"),
    ("MB b16", "peak_mb_b16"),
    ("looked", "looked_fraction"),
    ("tiles decoded", "tiles_decoded_fraction"),
    ("train s", "train_seconds"),
    ("img/s", "train_samples_per_s"),
    ("epochs", "epochs"),
)
COUNT_KEYS = ("mae", "within_one", "object_coverage", "centred_object_coverage")


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table: the columns some row has (count errors and coverage only
    where some row has a count error)."""
    counted = any(r.get("mae") is not None for r in rows)
    columns = [
        (header, key)
        for header, key in COLUMNS
        if any(key in r for r in rows) and (counted or key not in COUNT_KEYS)
    ]
    cells = [["-" if r.get(key) is None else r[key] for _, key in columns] for r in rows]
    return table([header for header, _ in columns], cells)


if __name__ == "__main__":  # the workers
    sys.exit(run_worker(sys.argv[2:]) if sys.argv[1:2] == ["--worker"] else 2)
