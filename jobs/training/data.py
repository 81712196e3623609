"""From dataset rows (schema v2) to the model's `Batch`, and the Ray Data side of training.

The model never sees Parquet: a batch carries the decoded proxies, the labels, the object boxes and
a `TileRegionReader` over the encoded tiles, which decodes only what the glimpses touch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from model.interface import Batch
from pipelines.region import TiledImage, TileRegionReader
from pipelines.schema import IMAGE_SCHEMA, SchemaError, validate_schema
from pipelines.storage import DatasetVersion
from pipelines.tiling import decode_proxy

# Everything the models read; `meta` (free-form JSON) stays on disk.
TRAIN_COLUMNS = [n for n in IMAGE_SCHEMA.names if n != "meta"]


def open_dataset(url: str) -> DatasetVersion:
    """Open a published version and check the schema of its first shard, before any worker starts.

    Raises StorageError (no such version) or SchemaError (another contract version or a
    mismatched column) with the URL in the message.
    """
    version = DatasetVersion.open(url)
    files = version.files("train")
    if not files:
        raise SchemaError(f"dataset {url} has no training split; build one with train > 0")
    import pyarrow.parquet as pq

    with version.fs.open(files[0], "rb") as f:
        try:
            validate_schema(pq.ParquetFile(f).schema_arrow)
        except SchemaError as exc:
            raise SchemaError(f"dataset {url}: {exc}") from None
    return version


def manifest_hash(manifest: dict[str, Any]) -> str:
    """A stable hash of a version's manifest (logged with every run that used it)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def read_split(version: DatasetVersion, split: str) -> Any:
    """The split as a Ray Dataset (the shards are plain Parquet; schema checked by open_dataset)."""
    import ray

    files = version.files(split)
    if not files:
        raise SchemaError(f"dataset {version.url} has no {split!r} split")
    prefix = version.url.split("://")[0] + "://" if "://" in version.url else ""
    return ray.data.read_parquet(
        [prefix + f for f in files], columns=TRAIN_COLUMNS, partitioning=None
    )


def _proxies(table: pa.Table) -> torch.Tensor:
    """Decoded proxies as a float B×C×h×w tensor in [0, 1]; odd-sized ones resized to the first."""
    arrays = [decode_proxy(b) for b in table.column("proxy").to_pylist()]
    tensors = [torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 255 for a in arrays]
    size = tensors[0].shape[1:]
    tensors = [
        t if t.shape[1:] == size else F.interpolate(t[None], size=tuple(size), mode="area")[0]
        for t in tensors
    ]
    return torch.stack(tensors)


def _gt_boxes(table: pa.Table) -> list[torch.Tensor]:
    """Per image an N×4 tensor of (y0, x0, y1, x1), the model's box order."""
    out = []
    for boxes in table.column("boxes").to_pylist():
        rows = [[b["y0"], b["x0"], b["y1"], b["x1"]] for b in boxes or []]
        out.append(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4))
    return out


def table_to_batch(
    table: pa.Table, *, device: torch.device | str = "cpu", threads: int = 1
) -> Batch:
    """A model `Batch` for the rows of `table` (the reader stays on the CPU; glimpses move)."""
    image_columns = ["height", "width", "channels", "tile_size", "tile_format", "tiles"]
    # the pooled level where the table has it (schema v2 rows; prediction requests too)
    image_columns += [c for c in ("level_factor", "level_tiles") if c in table.column_names]
    rows = table.select(image_columns)
    images = [TiledImage.from_row(r) for r in rows.to_pylist()]
    # Unlabelled rows (prediction requests) get label 0 and no boxes: nothing reads them.
    labels = (
        table.column("label").to_pylist() if "label" in table.column_names else [0] * len(images)
    )
    batch = Batch(
        proxy_BCHW=_proxies(table),
        labels_B=torch.tensor(labels, dtype=torch.int64),
        reader=TileRegionReader(images, threads=threads),
        gt_boxes=_gt_boxes(table) if "boxes" in table.column_names else None,
    )
    return batch.to(device)
