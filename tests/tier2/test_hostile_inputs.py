"""Tier 2: a FIFO and a file whose name is not valid UTF-8 in an input folder, through every entry
point that lists a folder. Each job finishes (a FIFO is never opened: opening it would block
forever) and reports both files by name and reason; the other files are used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ops_support import REPO_ROOT, register_constant_model
from PIL import Image

from pipelines.storage import DatasetVersion

pytestmark = pytest.mark.tier2

FIFO = "cats/fifo.jpg"
UNDECODABLE = b"dogs/\xff\xfe.png"  # Latin-1 bytes, as old cameras and zip files write them
UNDECODABLE_REF = "dogs/\\xff\\xfe.png"  # how rejects and errors name it
TIMEOUT_S = 400  # a hang fails the test instead of blocking the suite


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cats/ and dogs/ with three photos each, a FIFO and a photo with an undecodable name."""
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (40 + i, 60, 3), np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    os.mkfifo(root / FIFO)
    pixels = rng.integers(0, 256, (30, 30, 3), np.uint8)
    Image.fromarray(pixels).save(os.fsdecode(os.fsencode(root) + b"/" + UNDECODABLE), "PNG")
    return root


def _job(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS`, joined to the tests' Ray cluster; fails on a hang."""
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    try:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{module} {' '.join(args)} did not finish in {TIMEOUT_S} s")


def _rejects(url: str) -> dict[str, str]:
    table = DatasetVersion.open(url).read_rejects()
    return dict(
        zip(table.column("ref").to_pylist(), table.column("reason").to_pylist(), strict=True)
    )


def _assert_built(url: str) -> None:
    version = DatasetVersion.open(url)
    assert sum(version.manifest.counts.values()) == 6  # the six photos
    rejects = _rejects(url)
    assert rejects == {
        FIFO: "not a regular file: a FIFO",
        UNDECODABLE_REF: "file name is not valid UTF-8; rename the file",
    }


def test_build_dataset_rejects_a_fifo_and_an_undecodable_name(
    ray_cluster: str, hostile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "photos"
    job = _job("jobs.build_dataset", "--source", "dslr", "--input", str(hostile), "--out", str(out))
    assert job.returncode == 0, job.stderr[-3000:]
    assert "rejects: 2" in job.stdout
    _assert_built(str(out / "v0001"))


def test_regenerate_builds_then_skips_the_same_folder(
    ray_cluster: str, mlflow_uri: str, hostile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "photos"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"datasets:\n  - name: photos\n    source: dslr\n    out: {out}\n"
        f"    params: {{input: {hostile}}}\n"
    )
    first = _job("jobs.regenerate", "--spec", str(spec))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "photos: built -> latest" in first.stdout
    _assert_built(str(out / "v0001"))
    again = _job("jobs.regenerate", "--spec", str(spec))  # the content hash covers both names
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "photos: skipped -> latest" in again.stdout


def test_predict_images_reports_a_fifo_and_an_undecodable_name(
    ray_cluster: str, mlflow_uri: str, tiny_dataset: str, hostile: Path, tmp_path: Path
) -> None:
    version = register_constant_model("hostile-reader", tiny_dataset, 5)
    out = tmp_path / "predictions.parquet"
    model = f"models:/hostile-reader/{version}"
    job = _job("jobs.predict", "--model", model, "--images", str(hostile), "--out", str(out))
    assert job.returncode == 0, job.stderr[-3000:]
    rows = {r["image_id"]: r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == 8
    assert rows[FIFO]["error"].startswith("not a regular file: a FIFO")
    assert rows[UNDECODABLE_REF]["error"] == "file name is not valid UTF-8; rename the file"
    assert rows[UNDECODABLE_REF]["path"] is None
    predicted = [r for r in rows.values() if r["error"] is None]
    assert len(predicted) == 6 and {r["label"] for r in predicted} == {5}


def test_a_build_whose_every_input_is_rejected_publishes_nothing(
    ray_cluster: str, tmp_path: Path
) -> None:
    """Not an empty version that would become `latest`: an error naming the reject reasons."""
    from pipelines.build import BuildConfig, EmptyBuildError, build_dataset
    from pipelines.storage import list_versions, read_latest

    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    (photos / "cats" / "notes.jpg").write_text("not a photo")
    (photos / "cats" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    config = BuildConfig(source="dslr", out=str(out), params={"input": str(photos)}, tile_size=64)
    with pytest.raises(EmptyBuildError, match=r"no rows: all 2 input\(s\) were rejected") as error:
        build_dataset(config, progress=lambda _: None)
    assert "1 × empty file" in str(error.value) and "1 × not an image" in str(error.value)
    assert list_versions(str(out)) == [] and read_latest(str(out)) is None
    assert sorted(p.name for p in out.iterdir()) == ["_staging"]
    assert not any((out / "_staging").iterdir())
