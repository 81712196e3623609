"""Tier 1: a generated source written as a JPEG photo folder, and the dslr stages reading it back
(labels from the folders; the sign's box from the labels file)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import assert_clear_failure, run_job
from dslr_support import run_stages
from PIL import Image

from pipelines.dslr import (
    DslrConfig,
    inputs_fingerprint,
)
from pipelines.export import LABELS_HEADER, ExportConfig, export_image, write_labels
from pipelines.sources import get_source, make_config
from pipelines.street_signs import street_sign_class_names
from pipelines.synthetic import sample_rng
from pipelines.tiling import REJECT_REASON

# Small scenes: what is checked is the layout and the labels, not the size.
SMALL_SIGNS = {"width": 320, "height": 240, "sign_min_frac": 0.05, "sign_max_frac": 0.08}
COUNTS = {"train": 4, "test": 2}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportConfig, list[dict]]:
    out = tmp_path_factory.mktemp("export") / "signs"
    config = ExportConfig(
        source="street_signs", out=str(out), counts=COUNTS, seed=3, params=SMALL_SIGNS
    )
    records = [export_image(config, {}, split, index) for split, index in config.tasks()]
    write_labels(config.labels_url, records)
    return config, records


def _stages(cfg: DslrConfig) -> tuple[list[dict], list[str]]:
    """The dslr pipeline without Ray, in 64-px jpeg tiles."""
    staged, class_names, _ = run_stages(cfg)
    return staged.to_pylist(), class_names


def test_the_folder_holds_the_build_scenes_as_jpeg_files(exported) -> None:
    config, records = exported
    source = get_source("street_signs")
    source_config = make_config(source, SMALL_SIGNS)
    names = street_sign_class_names()
    files = sorted(p.relative_to(config.out).as_posix() for p in Path(config.out).rglob("*.*"))
    assert files == sorted(r["path"] for r in records) and len(files) == 6
    for (split, index), record in zip(config.tasks(), records, strict=True):
        # The same (seed, split, index) stream as build_dataset: the same scene and label.
        sample = source.sample(source_config, None, sample_rng(3, split, index))
        label = names[sample.label]
        assert record["path"] == f"{split}/{label}/street_signs-s3-{split}-{index:07d}.jpg"
        with Image.open(Path(config.out) / record["path"]) as pil:
            assert pil.format == "JPEG" and pil.size == (320, 240)
            pixels = np.asarray(pil.convert("RGB")).astype(np.int16)
        assert np.abs(pixels - sample.image).mean() < 8  # JPEG q92 of the same grainy pixels
        x0, y0, x1, y1, cls = sample.boxes[0]
        assert (record["x0"], record["y0"], record["x1"], record["y1"]) == (x0, y0, x1, y1)
        assert cls == sample.label
    # The labels file lies beside the folder, so a folder ingest never lists it.
    assert config.labels_url == config.out + ".labels.csv"
    with open(config.labels_url, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LABELS_HEADER
    assert [r["path"] for r in rows] == [r["path"] for r in records]
    assert [float(r["x1"]) for r in rows] == [r["x1"] for r in records]


def test_dslr_reads_the_folder_as_photos_labels_from_folder_names(exported) -> None:
    config, records = exported
    rows, class_names = _stages(DslrConfig(input=config.out))
    assert [r[REJECT_REASON] for r in rows] == [None] * 6
    assert class_names == sorted({r["label"] for r in records}, key=int)
    by_path = {json.loads(r["meta"])["path"]: r for r in rows}
    for record in records:
        row = by_path[record["path"]]
        assert row["split"] == record["split"] and row["label_name"] == record["label"]
        assert class_names[row["label"]] == record["label"]
        assert row["boxes"] == []  # a plain folder carries no boxes


def test_dslr_takes_the_sign_box_from_the_labels_file(exported) -> None:
    config, records = exported
    rows, class_names = _stages(DslrConfig(input=config.out, labels=config.labels_url))
    by_path = {json.loads(r["meta"])["path"]: r for r in rows}
    assert len(by_path) == 6
    for record in records:
        row = by_path[record["path"]]
        assert row[REJECT_REASON] is None and row["split"] == record["split"]
        (box,) = row["boxes"]
        got = [box[k] for k in ("x0", "y0", "x1", "y1")]
        assert np.allclose(got, [record[k] for k in ("x0", "y0", "x1", "y1")], atol=1e-6)
        assert box["cls"] == row["label"] == class_names.index(record["label"])


def test_bad_boxes_in_a_labels_file_are_rejects(exported, tmp_path: Path) -> None:
    config, records = exported
    first, second, third, fourth = (r["path"] for r in records[:4])
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label,split,x0,y0,x1,y1\n"
        f"{first},a,train,0.1,0.2,0.3,0.4\n"
        f"{second},a,train,0.3,0.2,0.1,0.4\n"  # x1 < x0
        f"{third},a,train,0.1,0.2,,0.4\n"  # a cell missing
        f"{fourth},a,train,,,,\n"  # no box at all: a photo without one
    )
    rows, _ = _stages(DslrConfig(input=config.out, labels=str(labels)))
    reasons = [r[REJECT_REASON] for r in rows]
    assert reasons[0] is None and rows[0]["boxes"][0]["x1"] == pytest.approx(0.3)
    assert reasons[1].startswith("bad box") and "0 <= x0 < x1 <= 1" in reasons[1]
    assert reasons[2].startswith("bad box") and "not 4 numbers" in reasons[2]
    assert reasons[3] is None and rows[3]["boxes"] == []


def test_a_box_is_part_of_the_input_hash() -> None:
    item = {"_index": 0, "ref": "a.jpg", "size": 10, "label_name": "a", "split": "train"}
    plain = inputs_fingerprint([{**item, "box": None}])
    boxed = inputs_fingerprint([{**item, "box": "[0.1, 0.1, 0.2, 0.2]"}])
    moved = inputs_fingerprint([{**item, "box": "[0.1, 0.1, 0.3, 0.2]"}])
    assert len({plain, boxed, moved}) == 3


def test_export_refuses_an_existing_folder_and_file_sources(exported, tmp_path: Path) -> None:
    config, _ = exported
    assert_clear_failure(
        run_job("jobs.export_images", "--out", config.out, "--train", "1"), "already holds files"
    )
    assert_clear_failure(
        run_job("jobs.export_images", "--source", "dslr", "--out", str(tmp_path / "x")),
        "reads files",
    )
    assert_clear_failure(
        run_job("jobs.export_images", "--out", str(tmp_path / "y"), "--set", "width=10"),
        "StreetSignsConfig",
    )
    assert not (tmp_path / "y").exists()


def test_jpeg_of_a_grey_source_is_grey(tmp_path: Path) -> None:
    config = ExportConfig(
        source="megapixel_mnist",
        out=str(tmp_path / "mp"),
        counts={"train": 1},
        params={"canvas_size": 300},
    )
    record = export_image(config, {"train": _digits()}, "train", 0)
    with Image.open(io.BytesIO((tmp_path / "mp" / record["path"]).read_bytes())) as pil:
        assert pil.mode == "L" and pil.size == (300, 300)
    assert "x0" not in record  # five digits: no single box for the labels file


def _digits():
    from pipelines.digits import load_digits, split_digits

    return split_digits(load_digits(), seed=0)["train"]
