"""Tier 2: batch prediction with Ray Data over a folder of raw image files, tiled on the fly, with
the registry's champion; unreadable files become rows that say why. Dataset rows whose raw level
tiles end in NUL bytes (a black corner) reach a model that reads the level intact."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ops_support import register_constant_model
from PIL import Image

from jobs import predict, store
from jobs.core.data import table_to_batch
from jobs.ops.prediction import PREDICTION_SCHEMA
from pipelines.schema import TRAIN_COLUMNS
from pipelines.storage import DatasetVersion

pytestmark = pytest.mark.tier2


def _write_originals(dataset: str, folder: Path, n: int) -> list[str]:
    """The first `n` test originals as PNG files (one in a sub-folder), like a user's photos."""
    rows = DatasetVersion.open(dataset).read_head("test", n, columns=TRAIN_COLUMNS)
    images = table_to_batch(rows).full_images()
    refs = []
    for i, image_CHW in enumerate(images):
        ref = f"sub/img{i}.png" if i == 0 else f"img{i}.png"
        (folder / ref).parent.mkdir(parents=True, exist_ok=True)
        pixels = (image_CHW[0] * 255).round().byte().numpy()
        Image.fromarray(pixels, mode="L").convert("RGB").save(folder / ref)  # RGB on disk
        refs.append(ref)
    return refs


def test_predict_raw_images_with_the_champion(
    ray_cluster: str, mlflow_uri: str, tiny_dataset: str, tmp_path: Path
) -> None:
    version = register_constant_model("predictor", tiny_dataset, 7)
    store.client().set_registered_model_alias("predictor", "champion", version)
    folder = tmp_path / "photos"
    refs = _write_originals(tiny_dataset, folder, 3)
    (folder / "notes.txt").write_text("not an image")
    out, annotated = tmp_path / "out" / "predictions.parquet", tmp_path / "annotated"

    argv = ["--model", "models:/predictor@champion", "--images", str(folder), "--out", str(out)]
    options = ["--annotate", str(annotated), "--tile-size", "64", "--tile-format", "png"]
    assert predict.main([*argv, *options]) == 0

    table = pq.read_table(out)
    assert table.schema.remove_metadata() == PREDICTION_SCHEMA
    assert table.schema.metadata[b"saccade.model_uri"] == f"models:/predictor/{version}".encode()
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted([*refs, "notes.txt"])
    assert "cannot decode image" in rows["notes.txt"]["error"]
    assert rows["notes.txt"]["label"] is None
    names = DatasetVersion.open(tiny_dataset).manifest.class_names
    for ref in refs:
        row = rows[ref]
        assert row["error"] is None and row["path"] == str(folder / ref)
        assert (row["label"], row["label_name"]) == (7, names[7])  # the constant model's answer
        assert len(row["probabilities"]) == 55 and abs(sum(row["probabilities"]) - 1) < 1e-4
        assert len(row["boxes"]) == 2  # T = 2 glimpses of the tiny saccader
        for box in row["boxes"]:
            assert 0 <= box["x0"] < box["x1"] <= 1 and 0 <= box["y0"] < box["y1"] <= 1
    pictures = sorted(str(p.relative_to(annotated)) for p in annotated.rglob("*.png"))
    assert pictures == sorted(f"{ref}.png" for ref in refs)
    assert Image.open(annotated / "img1.png.png").size[0] > 256  # proxy and original side by side


# Boxes of the whole image (128 px = 16 windows of 8 px): every glimpse reads the ×8 level.
LEVEL_READER = {"model_cfg.min_image_fraction": "1.0", "model_cfg.max_image_fraction": "1.0"}


def test_predict_dataset_rows_whose_level_tiles_end_in_nul(
    ray_cluster: str, mlflow_uri: str, tiny_dataset: str, tmp_path: Path
) -> None:
    version = register_constant_model("level-reader", tiny_dataset, 3, LEVEL_READER)
    rows = DatasetVersion.open(tiny_dataset).read("test", ["image_id", "level_tiles"])
    assert any(tiles[-1].endswith(b"\0") for tiles in rows.column("level_tiles").to_pylist())
    out = tmp_path / "predictions.parquet"
    argv = ["--model", f"models:/level-reader/{version}", "--dataset", tiny_dataset]
    assert predict.main([*argv, "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert sorted(table.column("image_id").to_pylist()) == sorted(
        rows.column("image_id").to_pylist()
    )
    assert table.column("error").null_count == table.num_rows  # no row failed
    assert set(table.column("label").to_pylist()) == {3}
