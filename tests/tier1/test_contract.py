"""Tier 1: the data contract lives in one module (`pipelines.schema`).

A column added to the schema is one edit: the row builder, the writer, training's reader and the
model's input (prediction and the registered model's frame) all take their columns from it. The
test makes that edit in a copy of the code and runs a row through every reader there.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipelines.schema import (
    MODEL_INPUT_COLUMNS,
    TRAIN_COLUMNS,
    box_from_model,
    box_to_model,
    make_row,
)
from pipelines.tiling import image_columns

REPO = Path(__file__).resolve().parents[2]
NEW_COLUMN = '        ("exposure_ms", pa.float32()),  # a column the test adds\n'

# Runs inside the edited copy: build a row (the value passed as any source would pass it),
# write it with the build's writer, read it back for training and for prediction.
SCRIPT = textwrap.dedent(
    """
    import numpy as np, pyarrow as pa, torch
    from jobs.core.data import open_dataset, table_to_batch
    from jobs.core.packaging import model_frame, rows_table
    from jobs.ops.prediction import dataset_rows
    from jobs.training.recipes import DataSpec, make_recipe, build_model
    from pipelines.build import write_shard
    from pipelines.schema import MODEL_INPUT_COLUMNS, TRAIN_COLUMNS, Manifest, make_row
    from pipelines.storage import Staging
    from pipelines.tiling import image_row

    image = np.random.default_rng(0).integers(0, 255, (64, 64, 1), dtype=np.uint8)
    row = image_row(
        image_id="a", split="train", source="cluttered_mnist", label=3, label_name="3",
        image=image, proxy=image[::4, ::4], boxes=[(0.1, 0.2, 0.3, 0.4, 3)], meta={},
        tile_size=32, tile_format="png",
    )
    row = make_row({**row, "exposure_ms": 12.5})
    staging = Staging.create("data", "v0001")
    table = pa.Table.from_pylist([{**row, "_index": 0, "reject_reason": None}])
    write_shard(table, staging_url=staging.path)
    staging.publish(Manifest(
        schema_version=3, version="v0001", source="cluttered_mnist",
        class_names=[str(i) for i in range(10)], counts={"train": 1}, rejects=0, bytes=0,
        tile_size=32, tile_format="png", seed=0, params={}, inputs={}, input_hash="",
        created_at="", build_seconds=0.0,
    ))
    version = open_dataset("data/v0001")  # validates the stored schema against the edited one
    rows = version.read_head("train", 1, columns=TRAIN_COLUMNS)
    assert rows.column("exposure_ms").to_pylist() == [12.5], "training reads it"
    requests = dataset_rows(rows)
    assert requests.column("exposure_ms").to_pylist() == [12.5], "prediction passes it"
    frame = model_frame(requests.select(MODEL_INPUT_COLUMNS), MODEL_INPUT_COLUMNS)
    back = rows_table(frame)
    assert back.column("exposure_ms").to_pylist() == [12.5], "the model's frame carries it"
    cfg = make_recipe("tiny_cpu", "data/v0001", {})
    model = build_model(cfg, DataSpec(num_classes=10, channels=1)).eval()
    with torch.no_grad():
        print(model.predict(table_to_batch(back)).labels_B.shape[0], "prediction(s)")
    """
)


def _edited_copy(root: Path) -> Path:
    """The project's packages copied under `root`, the schema edited by one added line."""
    for package in ("pipelines", "jobs", "model", "infra"):
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    schema = root / "pipelines" / "schema.py"
    lines = schema.read_text().splitlines(keepends=True)
    at = lines.index('        ("proxy", pa.binary()),\n')
    schema.write_text("".join([*lines[:at], NEW_COLUMN, *lines[at:]]))
    return schema


def test_a_column_added_to_the_schema_flows_to_training_and_prediction(tmp_path: Path) -> None:
    schema = _edited_copy(tmp_path)
    original = (REPO / "pipelines" / "schema.py").read_text().splitlines(keepends=True)
    changed = [
        d
        for d in difflib.ndiff(original, schema.read_text().splitlines(keepends=True))
        if d[:2] in ("+ ", "- ")
    ]
    assert changed == [f"+ {NEW_COLUMN}"]  # the one edit
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 prediction(s)" in result.stdout


def test_column_sets_come_from_the_schema() -> None:
    assert "meta" not in TRAIN_COLUMNS and "digest" in TRAIN_COLUMNS
    assert MODEL_INPUT_COLUMNS == [
        "height",
        "width",
        "channels",
        "tile_size",
        "tile_format",
        "tiles",
        "level_factor",
        "level_tiles",
        "proxy",
        "proxy_height",
        "proxy_width",
    ]
    image = np.zeros((40, 30, 3), np.uint8)
    columns = image_columns(image, image[::4, ::4], tile_size=16, tile_format="png", quality=90)
    assert list(columns) == MODEL_INPUT_COLUMNS  # the in-memory image fills every input column


def test_the_row_builder_fills_the_schema_and_refuses_strangers() -> None:
    row = make_row({"image_id": "a", "meta": {"b": 1, "a": 2}})
    assert row["meta"] == '{"a": 2, "b": 1}' and row["digest"] is None
    with pytest.raises(ValueError, match=r"\['lable'\] are not columns"):
        make_row({"lable": 3})


def test_boxes_cross_between_the_stored_and_the_model_order_in_one_place() -> None:
    stored = {"x0": 0.1, "y0": 0.2, "x1": 0.3, "y1": 0.4, "cls": 7}
    assert box_to_model(stored) == pytest.approx([0.2, 0.1, 0.4, 0.3])
    assert box_from_model(box_to_model(stored)) == pytest.approx(
        {k: stored[k] for k in ("x0", "y0", "x1", "y1")}
    )
