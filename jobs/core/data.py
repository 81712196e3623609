"""From dataset rows (schema v3) to the model's `Batch`, and the Ray Data side of training.

The model never sees Parquet: a batch carries the decoded proxies, the labels, the object boxes and
a `TileRegionReader` over the encoded tiles, which decodes only what the glimpses touch.

Corrupt rows never stop a run: `run_on_intact_rows` drops the rows whose stored digest does not
match their bytes, and the rows whose tiles or proxy fail to decode when the step reads them, runs
the step on the rest, and says which rows it dropped and why, for the caller to count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from model.interface import Batch
from pipelines.integrity import RowCheck, check_digests
from pipelines.region import CorruptImageError, TiledImage, TileRegionReader
from pipelines.schema import TRAIN_COLUMNS, SchemaError, box_to_model, validate_schema
from pipelines.storage import DatasetVersion, open_parquet, with_scheme
from pipelines.tiling import decode_proxy


def open_dataset(url: str, split: str = "train") -> DatasetVersion:
    """Open a published version and check the schema of the first shard of `split` (the one the
    caller reads: an evaluation set has no training split), before any worker starts.

    Raises StorageError (no such version) or SchemaError (no such split, another contract
    version or a mismatched column) with the URL in the message.
    """
    version = DatasetVersion.open(url)
    files = version.files(split)
    if not files:
        hint = "; build one with train > 0" if split == "train" else ""
        raise SchemaError(f"dataset {url} has no {split!r} split{hint}")
    with open_parquet(version.fs, files[0]) as parquet:
        try:
            validate_schema(parquet.schema_arrow)
        except SchemaError as exc:
            raise SchemaError(f"dataset {url}: {exc}") from None
    return version


def read_split(version: DatasetVersion, split: str, *, shuffle_seed: int | None = None) -> Any:
    """The split as a Ray Dataset (the shards are plain Parquet; schema checked by open_dataset).
    With `shuffle_seed`, its files in another seeded order at each execution (each epoch):
    training batches then mix files, where a reading in file order with a shuffle buffer of a
    few batches mixes neighbouring rows only."""
    import ray

    files = version.files(split)
    if not files:
        raise SchemaError(f"dataset {version.url} has no {split!r} split")
    # select_columns, not read_parquet(columns=) (deprecated): Ray pushes the projection into
    # the read, so `meta` is still never read
    paths = [with_scheme(version.url, f) for f in files]
    shuffle = None
    if shuffle_seed is not None:
        shuffle = ray.data.FileShuffleConfig(seed=shuffle_seed, reseed_after_execution=True)
    dataset = ray.data.read_parquet(paths, partitioning=None, shuffle=shuffle)
    return dataset.select_columns(TRAIN_COLUMNS)


def _decode_proxy(index: int, data: bytes) -> np.ndarray:
    try:
        return decode_proxy(data)
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise CorruptImageError(index, f"proxy: {exc}") from exc


def _tiled_image(index: int, row: dict[str, Any]) -> TiledImage:
    try:
        return TiledImage.from_row(row)
    except ValueError as exc:  # a tile count or format that does not fit the image
        raise CorruptImageError(index, str(exc)) from exc


def _proxies(table: pa.Table) -> torch.Tensor:
    """Decoded proxies as a float B×C×h×w tensor in [0, 1]; odd-sized ones resized to the first."""
    arrays = [_decode_proxy(i, b) for i, b in enumerate(table.column("proxy").to_pylist())]
    tensors = [torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 255 for a in arrays]
    size = tensors[0].shape[1:]
    tensors = [
        t if t.shape[1:] == size else F.interpolate(t[None], size=tuple(size), mode="area")[0]
        for t in tensors
    ]
    return torch.stack(tensors)


def _gt_objects(table: pa.Table) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image an N×4 tensor of (y0, x0, y1, x1), the model's box order, and the N classes."""
    boxes_out, classes_out = [], []
    for boxes in table.column("boxes").to_pylist():
        rows = [box_to_model(b) for b in boxes or []]
        boxes_out.append(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4))
        classes_out.append(torch.tensor([b["cls"] for b in boxes or []], dtype=torch.int64))
    return boxes_out, classes_out


def table_to_batch(
    table: pa.Table, *, device: torch.device | str = "cpu", threads: int = 1
) -> Batch:
    """A model `Batch` for the rows of `table` (the reader stays on the CPU; glimpses move).
    A row that cannot be read raises CorruptImageError with its index in `table`."""
    image_columns = ["height", "width", "channels", "tile_size", "tile_format", "tiles"]
    # the pooled level where the table has it (schema v2 rows; prediction requests too)
    image_columns += [c for c in ("level_factor", "level_tiles") if c in table.column_names]
    rows = table.select(image_columns)
    images = [_tiled_image(i, r) for i, r in enumerate(rows.to_pylist())]
    # Unlabelled rows (prediction requests) get label 0 and no boxes: nothing reads them.
    labels = (
        table.column("label").to_pylist() if "label" in table.column_names else [0] * len(images)
    )
    gt_boxes, gt_classes = _gt_objects(table) if "boxes" in table.column_names else (None, None)
    batch = Batch(
        proxy_BCHW=_proxies(table),
        labels_B=torch.tensor(labels, dtype=torch.int64),
        reader=TileRegionReader(images, threads=threads),
        gt_boxes=gt_boxes,
        gt_classes=gt_classes,
    )
    return batch.to(device)


T = TypeVar("T")


@dataclass
class StepOnRows(Generic[T]):
    """What `run_on_intact_rows` did with one table of rows."""

    result: T | None  # the step's result; None when no row could be used
    rows: int  # rows the step ran on
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image_id, reason) per row


def run_on_intact_rows(
    table: pa.Table,
    step: Callable[[Batch], T],
    *,
    device: torch.device | str = "cpu",
    threads: int = 1,
    check: RowCheck | None = None,
) -> StepOnRows[T]:
    """Run `step` on the batch of `table`'s usable rows: rows whose stored digest does not match
    their bytes are dropped first (`check`: an earlier `check_digests(table)`); a row whose tiles
    or proxy fail to decode while the step reads them is dropped and the step run again on the
    others (a failed forward pass has changed nothing: the step's backward never ran)."""
    check = check or check_digests(table)
    skipped = [(image_id, reason) for _, image_id, reason in check.problems]
    if check.problems:
        table = table.filter(pa.array(check.intact))
    while table.num_rows:
        try:
            result = step(table_to_batch(table, device=device, threads=threads))
        except CorruptImageError as exc:
            skipped.append((_image_id(table, exc.index), f"cannot decode: {exc}"))
            table = _without_row(table, exc.index)
            continue
        return StepOnRows(result, table.num_rows, skipped)
    return StepOnRows(None, 0, skipped)


def intact_rows(table: pa.Table) -> pa.Table:
    """The rows of `table` whose stored digest matches their bytes."""
    check = check_digests(table)
    return table.filter(pa.array(check.intact)) if check.problems else table


def _image_id(table: pa.Table, index: int) -> str:
    if "image_id" not in table.column_names:
        return f"row {index}"
    return str(table.column("image_id")[index].as_py())


def _without_row(table: pa.Table, index: int) -> pa.Table:
    return pa.concat_tables([table.slice(0, index), table.slice(index + 1)])
