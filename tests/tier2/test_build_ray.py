"""Tier 2: the Ray Data build on a real local cluster, to a local directory and to S3 (moto)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.build import BuildConfig, build_dataset
from pipelines.codec import decode_full
from pipelines.region import TiledImage, read_region
from pipelines.schema import IMAGE_SCHEMA, validate_schema
from pipelines.storage import DatasetVersion, list_versions
from pipelines.tiling import decode_proxy

pytestmark = pytest.mark.tier2
REPO_ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"train": 6, "val": 2, "test": 3}


def _config(out: str, **kw) -> BuildConfig:
    return BuildConfig(
        source="cluttered_mnist",
        out=out,
        counts=COUNTS,
        params={"original_size": 200},
        tile_size=64,
        rows_per_file=4,
        **kw,
    )


def _check_version(url: str) -> None:
    """Read a published version back and check it against the contract and its manifest."""
    version = DatasetVersion.open(url)
    manifest = version.manifest
    assert manifest.counts == COUNTS
    assert manifest.rejects == 0
    assert manifest.num_classes == 55 and len(manifest.class_names) == 55
    for split, n in COUNTS.items():
        table = version.read(split)
        validate_schema(table.schema)
        assert table.num_rows == n
        assert set(table.column("split").to_pylist()) == {split}
    row = version.read("train").to_pylist()[0]
    tiled = TiledImage.from_row(row)
    full = decode_full(
        tiled.tiles, height=200, width=200, channels=1, tile_size=64, tile_format="png"
    )
    assert np.array_equal(read_region(tiled, (50, 60, 130, 150)), full[50:130, 60:150])
    assert len(row["boxes"]) == 2  # both digits' ground-truth boxes
    assert decode_proxy(row["proxy"]).shape == (row["proxy_height"], row["proxy_width"], 1)
    assert row["label_name"] == manifest.class_names[row["label"]]


def test_build_to_local_directory(ray_cluster: str, tmp_path: Path) -> None:
    lines: list[str] = []
    summary = build_dataset(_config(str(tmp_path)), progress=lines.append)
    assert summary.version == "v0001"
    assert summary.rows == COUNTS and summary.rejects == 0 and summary.bytes > 0
    assert lines and lines[-1].startswith("[build] 11/11 images")
    _check_version(summary.url)
    assert list_versions(str(tmp_path)) == ["v0001"]
    assert list((tmp_path / "_staging").iterdir()) == []
    # More files than one: the work was split into Ray tasks of rows_per_file images.
    assert len(list((tmp_path / "v0001" / "split=train").glob("*.parquet"))) == 2


def test_build_is_deterministic(ray_cluster: str, tmp_path: Path) -> None:
    first = build_dataset(_config(str(tmp_path), version="a"), progress=lambda _: None)
    second = build_dataset(_config(str(tmp_path), version="b"), progress=lambda _: None)
    for split in COUNTS:
        a = DatasetVersion.open(first.url).read(split)
        b = DatasetVersion.open(second.url).read(split)
        assert a.equals(b)
    manifests = [DatasetVersion.open(u).manifest for u in (first.url, second.url)]
    assert manifests[0].input_hash == manifests[1].input_hash


def test_build_to_s3(ray_cluster: str, s3_endpoint: str) -> None:
    import ray

    summary = build_dataset(_config("s3://datasets/cm"), progress=lambda _: None)
    assert summary.url == "s3://datasets/cm/v0001"
    _check_version(summary.url)
    assert list_versions("s3://datasets/cm") == ["v0001"]
    # The shards are plain hive-partitioned Parquet that Ray Data reads straight from S3.
    ds = ray.data.read_parquet("s3://datasets/cm/v0001/split=train")
    assert ds.count() == COUNTS["train"]
    assert set(IMAGE_SCHEMA.names) <= set(ds.schema().names)


def test_build_through_ray_job_submit(ray_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            ray_cluster,
            "--working-dir",
            str(REPO_ROOT),
            "--",
            sys.executable,
            "-m",
            "jobs.build_dataset",
            "--source",
            "megapixel_mnist",
            "--out",
            str(out),
            "--train",
            "3",
            "--val",
            "0",
            "--test",
            "1",
            "--set",
            "canvas_size=300",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout.lower()
    assert "rows: train=3, test=1" in result.stdout
    manifest = json.loads((out / "v0001" / "manifest.json").read_text())
    assert manifest["source"] == "megapixel_mnist" and manifest["counts"] == {"train": 3, "test": 1}
