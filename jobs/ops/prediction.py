"""Batch inference with Ray Data: dataset rows or raw image files → predictions Parquet.

Stages are plain functions (or a class) on a pyarrow batch; `predict` composes them:
- inputs: a dataset version's split (`dataset_rows`), or the files of a folder or bucket, decoded
  and tiled on the fly (`tile_image_files`) — an unreadable file becomes a row with its `error`;
- `Predictor`: one Ray actor loads the registered pyfunc once and predicts batch after batch;
  with an annotation folder it also writes, per image, the proxy and the original with the
  numbered glimpse boxes (`jobs.core.pictures.glimpse_picture`);
- the driver streams the predictions into one Parquet file (written under a temporary name
  locally and moved into place; one upload on S3, which is atomic).
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.data import open_dataset, read_split, table_to_batch
from jobs.core.packaging import MODEL_COLUMNS, model_frame
from jobs.core.pictures import class_name, glimpse_picture
from jobs.store import tracking_uri
from pipelines.inputs import list_files, read_bytes
from pipelines.photos import tile_encoded_image
from pipelines.schema import IMAGE_SCHEMA, MODEL_INPUT_COLUMNS, box_from_model
from pipelines.storage import filesystem, join

BOX = pa.struct([(k, pa.float32()) for k in ("x0", "y0", "x1", "y1")])
# The Predictor's input: the pyfunc's columns plus identity, ground truth and errors.
REQUEST_SCHEMA = pa.schema(
    [IMAGE_SCHEMA.field(c) for c in MODEL_INPUT_COLUMNS]
    + [
        pa.field("image_id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("true_label", pa.int32()),
        pa.field("error", pa.string()),
    ]
)
PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),  # the dataset's id, or the file's path under the input
        pa.field("path", pa.string()),  # the file's URL (raw images); null for dataset rows
        pa.field("label", pa.int32()),  # predicted class index; null when `error` is set
        pa.field("label_name", pa.string()),
        pa.field("probabilities", pa.list_(pa.float32())),  # softmax over the classes
        pa.field("boxes", pa.list_(BOX)),  # glimpse boxes in [0, 1] image coordinates, in order
        pa.field("true_label", pa.int32()),  # dataset rows: the ground truth; else null
        pa.field("error", pa.string()),  # why the image could not be predicted; else null
    ]
)


# --- Inputs ---------------------------------------------------------------------------------------


def dataset_rows(batch: pa.Table) -> pa.Table:
    """Stage: rows of a dataset version (schema v2) → prediction requests."""
    n = batch.num_rows
    columns = {c: batch.column(c) for c in MODEL_INPUT_COLUMNS}
    columns.update(
        image_id=batch.column("image_id"),
        path=pa.nulls(n, pa.string()),
        true_label=batch.column("label").cast(pa.int32()),
        error=pa.nulls(n, pa.string()),
    )
    return pa.table(columns, schema=REQUEST_SCHEMA)


def tile_image_files(
    batch: pa.Table, *, tile_size: int, tile_format: str, proxy_max_side: int, channels: int
) -> pa.Table:
    """Stage: image files (`url`, `ref`, and the listing's `reason` when it is no input) →
    prediction requests, tiled on the fly.

    Images become grey (1 channel) or RGB (3) to match the model; EXIF orientation is applied.
    """
    rows = []
    for item in batch.to_pylist():
        row: dict[str, Any] = {"image_id": item["ref"], "path": item["url"]}
        if item.get("reason"):  # a special file or an undecodable name: never opened
            rows.append({**row, "error": item["reason"]})
            continue
        try:
            row.update(_tile(item["url"], tile_size, tile_format, proxy_max_side, channels))
        except Exception as exc:  # unreadable, not an image, truncated: a row that says why
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)


def _tile(
    url: str, tile_size: int, tile_format: str, proxy_max_side: int, channels: int
) -> dict[str, Any]:
    tiled = tile_encoded_image(
        read_bytes(url),
        tile_size=tile_size,
        tile_format=tile_format,
        proxy_max_side=proxy_max_side,
        channels=channels,
    )
    return tiled.columns()


# --- The model ------------------------------------------------------------------------------------


def load_pyfunc(model_uri: str, uri: str | None = None, device: str = "cpu") -> Any:
    """The registered pyfunc, its PyTorch model on `device` (models logged before the device
    option load on the CPU whatever it says)."""
    import mlflow

    mlflow.set_tracking_uri(uri or tracking_uri())
    return mlflow.pyfunc.load_model(model_uri, model_config={"device": device})


def model_channels(pyfunc: Any) -> int:
    """The image channels the wrapped model was trained on."""
    return int(pyfunc.unwrap_python_model().model.config.in_channels)


class Predictor:
    """Ray actor: the pyfunc loaded once; prediction requests in, PREDICTION_SCHEMA rows out.

    A batch the model cannot predict is retried row by row: a row that fails alone gets its own
    `error` and the batch's other rows keep their predictions.
    """

    def __init__(
        self,
        *,
        model_uri: str,
        tracking_uri: str,
        annotate: str | None = None,
        device: str = "cpu",
    ) -> None:
        self.pyfunc = load_pyfunc(model_uri, tracking_uri, device)
        self.annotate = annotate
        names = self.pyfunc.metadata.get_input_schema().input_names()
        self.packed = set(MODEL_COLUMNS) <= set(names)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ok = pc.is_null(batch.column("error"))
        good = batch.filter(ok)
        predicted = iter(self._predict(good) if good.num_rows else [])
        rows = []
        identity = batch.select(["image_id", "path", "true_label", "error"]).to_pylist()
        for request, fine in zip(identity, ok.to_pylist(), strict=True):
            row = dict(request)
            if fine:
                row.update(next(predicted))
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)

    def _predict(self, good: pa.Table) -> list[dict[str, Any]]:
        try:
            return self._predict_rows(good)
        except Exception as exc:
            if good.num_rows == 1:
                return [{"error": f"{type(exc).__name__}: {exc}"[:500]}]
        return [result for i in range(good.num_rows) for result in self._predict(good.slice(i, 1))]

    def _outputs(self, good: pa.Table) -> Any:
        if self.packed:
            return self.pyfunc.predict(model_frame(good))
        # A model packaged with list-of-binary tile columns: MLflow's schema enforcement of its
        # signature would drop the tiles' trailing NUL bytes, so its Python model is called as
        # the evaluation calls it.
        return self.pyfunc.unwrap_python_model().predict(
            None, model_frame(good, MODEL_INPUT_COLUMNS)
        )

    def _predict_rows(self, good: pa.Table) -> list[dict[str, Any]]:
        out = self._outputs(good)
        results = []
        for i, (label, name, probs, boxes) in enumerate(
            zip(out["label"], out["label_name"], out["probabilities"], out["boxes"], strict=True)
        ):
            results.append(
                {
                    "label": int(label),
                    "label_name": str(name),
                    "probabilities": [float(p) for p in probs],
                    "boxes": [box_from_model(b) for b in list(boxes)],
                }
            )
            if self.annotate:
                self._draw(good.slice(i, 1), list(boxes), str(good.column("image_id")[i]), name)
        return results

    def _draw(self, row: pa.Table, boxes: list[Any], image_id: str, predicted: str) -> None:
        import torch

        if not boxes:  # a baseline model: no glimpses to draw
            return
        boxes_1T4 = torch.tensor([[list(b) for b in boxes]], dtype=torch.float32)
        true_label = row.column("true_label")[0].as_py()  # None for image files
        names = getattr(self.pyfunc.unwrap_python_model(), "class_names", None)
        picture = glimpse_picture(
            table_to_batch(row),
            boxes_1T4,
            predicted=[predicted],
            truth=None if true_label is None else [class_name(true_label, names)],
            title=image_id,
        )
        fs, root = filesystem(self.annotate)
        path = join(root, annotation_name(image_id))
        fs.makedirs(os.path.dirname(path) if "file" in fs.protocol else root, exist_ok=True)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        with fs.open(path, "wb") as f:
            f.write(buffer.getvalue())


def annotation_name(image_id: str) -> str:
    """A safe relative file name for an image's annotation (sub-folders of its path kept)."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in image_id.split("/")]
    return "/".join(p for p in parts if p not in ("", ".", "..")) + ".png"


# --- Output ---------------------------------------------------------------------------------------


@dataclass
class PredictionSummary:
    out: str
    images: int
    errors: int
    seconds: float
    accuracy: float | None  # against the ground truth, for dataset rows

    def format(self) -> str:
        text = (
            f"predictions {self.out}\n  images: {self.images} ({self.errors} not predicted)\n"
            f"  time: {self.seconds:.1f} s ({self.images / max(self.seconds, 1e-9):.2f} images/s)"
        )
        if self.accuracy is not None:
            text += f"\n  accuracy against the dataset's labels: {self.accuracy:.4f}"
        return text


def write_predictions(
    batches: Any, out: str, metadata: dict[str, str], *, progress: Callable[[str], None]
) -> tuple[int, int, int]:
    """Stream prediction batches into one Parquet file; returns (rows, errors, correct)."""
    fs, path = filesystem(out)
    local = "file" in fs.protocol
    target = f"{path}.tmp-{uuid.uuid4().hex[:8]}" if local else path
    if local:
        fs.makedirs(os.path.dirname(path), exist_ok=True)
    schema = PREDICTION_SCHEMA.with_metadata({f"saccade.{k}": v for k, v in metadata.items()})
    rows = errors = correct = 0
    last = 0.0
    try:
        with fs.open(target, "wb") as f, pq.ParquetWriter(f, schema) as writer:
            for batch in batches:
                table = batch.cast(schema)
                writer.write_table(table)
                rows += table.num_rows
                errors += table.num_rows - table.column("error").null_count
                hits = pc.equal(table.column("true_label"), table.column("label"))
                correct += pc.sum(pc.fill_null(hits, False)).as_py() or 0
                if time.monotonic() - last > 5:
                    progress(f"[predict] {rows} images")
                    last = time.monotonic()
        if local:
            os.replace(target, path)
    finally:
        if local and os.path.exists(target):
            os.remove(target)
    return rows, errors, correct


# --- The job --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PredictRequest:
    """One batch prediction as `python -m jobs.predict` asks for it."""

    model_uri: str  # the pinned version to load: models:/NAME/VERSION
    out: str  # the predictions Parquet file: a local path or s3:// URL
    dataset: str | None = None  # a dataset version URL to predict ...
    split: str = "test"  # ... on this split of it
    images: str | None = None  # or: a folder or bucket prefix of image files
    annotate: str | None = None  # folder for one annotated PNG per image (None: none)
    batch_size: int = 16  # images per model call
    tile_size: int = 256  # raw images: tile edge, px
    tile_format: str = "jpeg"  # raw images: how tiles are encoded on the fly
    proxy_max_side: int = 256  # raw images: the proxy's longer side, px
    channels: int = 3  # raw images: the model's input channels (1 grey, 3 RGB)
    actors: int = 1  # model replicas (one Ray actor each)
    actor_cpus: float = 1.0  # CPUs reserved per model actor
    actor_gpus: float = 0.0  # GPUs per model actor (> 0: the model runs on its GPU)

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.images is None):
            raise ValueError("give exactly one input: --dataset URL or --images FOLDER")
        if self.batch_size < 1 or self.actors < 1 or self.actor_cpus <= 0 or self.actor_gpus < 0:
            raise ValueError(
                f"batch_size and actors must be >= 1, actor_cpus > 0 and actor_gpus >= 0, got "
                f"{self.batch_size}, {self.actors}, {self.actor_cpus}, {self.actor_gpus}"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.images is not None and self.tile_size < 16:
            raise ValueError(f"--tile-size must be >= 16 (as a build's), got {self.tile_size}")

    @property
    def device(self) -> str:
        """Where each actor's model runs: the GPU Ray gives it, if it asks for one."""
        return "cuda" if self.actor_gpus > 0 else "cpu"


def _requests(request: PredictRequest) -> Any:
    """The prediction requests as a (lazy) Ray dataset."""
    import ray

    if request.dataset is not None:
        split = read_split(open_dataset(request.dataset, request.split), request.split)
        return split.map_batches(dataset_rows, batch_size=None, batch_format="pyarrow")

    files = [
        {"url": url, "ref": ref, "reason": reason}
        for url, ref, _, reason in list_files(request.images)
    ]
    blocks = max(1, min(len(files), 4 * int(ray.cluster_resources().get("CPU", 1))))
    return ray.data.from_items(files, override_num_blocks=blocks).map_batches(
        tile_image_files,
        batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={
            "tile_size": request.tile_size,
            "tile_format": request.tile_format,
            "proxy_max_side": request.proxy_max_side,
            "channels": request.channels,
        },
    )


def predict(request: PredictRequest, *, progress: Callable[[str], None]) -> PredictionSummary:
    """Run the prediction pipeline (Ray initialised) and write the Parquet file."""
    from ray.data import ActorPoolStrategy

    start = time.perf_counter()
    predictions = _requests(request).map_batches(
        Predictor,
        fn_constructor_kwargs={
            "model_uri": request.model_uri,
            "tracking_uri": tracking_uri(),
            "annotate": request.annotate,
            "device": request.device,
        },
        compute=ActorPoolStrategy(size=request.actors),  # `concurrency` is deprecated
        num_cpus=request.actor_cpus,
        **({"num_gpus": request.actor_gpus} if request.actor_gpus else {}),
        batch_size=request.batch_size,
        batch_format="pyarrow",
    )
    metadata = {
        "model_uri": request.model_uri,
        "input": request.dataset or request.images or "",
        "split": request.split if request.dataset else "",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    batches = predictions.iter_batches(batch_format="pyarrow", batch_size=None)
    rows, errors, correct = write_predictions(batches, request.out, metadata, progress=progress)
    predicted = rows - errors
    return PredictionSummary(
        out=request.out,
        images=rows,
        errors=errors,
        seconds=time.perf_counter() - start,
        accuracy=correct / predicted if request.dataset and predicted else None,
    )
