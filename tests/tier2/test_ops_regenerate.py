"""Tier 2: scheduled regeneration on a real local Ray cluster and a real MLflow store — skip what
has not changed, publish what has, keep `latest` where it was when a build fails midway."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import pipelines.storage
from jobs import regenerate
from pipelines.storage import MANIFEST, DatasetVersion, list_versions, read_latest

pytestmark = pytest.mark.tier2


def _write_spec(path: Path, root: Path, *, size: int, extra: list[dict] | None = None) -> str:
    spec = {
        "defaults": {"tile_size": 64, "rows_per_file": 16, "retention": 2},
        "datasets": [
            {
                "name": "cm",
                "source": "cluttered_mnist",
                "out": str(root / "cm"),
                "counts": {"train": 6, "val": 2, "test": 2},
                "params": {"original_size": size},
            },
            *(extra or []),
        ],
    }
    path.write_text(json.dumps(spec))
    return str(path)


def _runs(mlflow_uri: str, since_ms: int) -> list[dict[str, str]]:
    """This test's dataset runs (the session's store also holds other tests' runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("saccade-datasets")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.start_time >= {since_ms}",
        order_by=["attributes.start_time ASC"],
    )
    return [r.data.params for r in runs]


def test_regeneration_skips_publishes_and_survives_a_failed_publish(
    ray_cluster: str,
    mlflow_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started_ms = int(time.time() * 1000)
    root = tmp_path / "datasets"
    cm = str(root / "cm")
    spec = _write_spec(tmp_path / "spec.json", root, size=128)

    assert regenerate.main(["--spec", spec]) == 0
    first = read_latest(cm)
    assert first is not None and first["version"] == "v0001"
    manifest = DatasetVersion.open(f"{cm}/v0001").manifest
    # For a generated source the content hash is the manifest's own input hash.
    assert first["content_hash"] == manifest.input_hash == first["input_hash"]

    # The same spec again: nothing is built, nothing moves.
    assert regenerate.main(["--spec", spec]) == 0
    assert "cm: skipped -> latest" in capsys.readouterr().out
    assert list_versions(cm) == ["v0001"] and read_latest(cm) == first

    # A changed parameter: a new version, and latest follows it.
    spec = _write_spec(tmp_path / "spec.json", root, size=160)
    assert regenerate.main(["--spec", spec]) == 0
    assert read_latest(cm)["version"] == "v0002"
    assert DatasetVersion.open(f"{cm}/v0002").manifest.params["original_size"] == 160

    # Changed again, but the publish of `cm` dies after moving its files, before the manifest
    # (the worst moment on S3). A second dataset in the same spec is still built.
    real_write_json = pipelines.storage.write_json

    def crash_on_cm_manifest(fs, path, payload):  # type: ignore[no-untyped-def]
        if path.endswith(MANIFEST) and "/cm/" in path:
            raise OSError("connection reset while publishing")
        real_write_json(fs, path, payload)

    monkeypatch.setattr(pipelines.storage, "write_json", crash_on_cm_manifest)
    other = {
        "name": "other",
        "source": "cluttered_mnist",
        "out": str(root / "other"),
        "counts": {"train": 2, "val": 0, "test": 0},
        "params": {"original_size": 128},
    }
    spec = _write_spec(tmp_path / "spec.json", root, size=192, extra=[other])
    assert regenerate.main(["--spec", spec]) == 1
    out = capsys.readouterr().out
    assert "cm: failed -> latest" in out and "connection reset while publishing" in out
    assert read_latest(cm)["version"] == "v0002"  # latest did not move
    assert list_versions(cm) == ["v0001", "v0002"]  # the half-published v0003 is not a version
    assert (root / "cm" / "v0003").is_dir()
    assert read_latest(str(root / "other"))["version"] == "v0001"

    # Repaired: the next run builds cm again as v0004 (v0003's leftovers are never reused) and
    # retention (2) deletes v0001; `other` is unchanged and skipped.
    monkeypatch.setattr(pipelines.storage, "write_json", real_write_json)
    assert regenerate.main(["--spec", spec]) == 0
    assert read_latest(cm)["version"] == "v0004"
    assert list_versions(cm) == ["v0002", "v0004"]
    assert "deleted v0001" in capsys.readouterr().out

    runs = _runs(mlflow_uri, started_ms)
    recorded = [(p["dataset.name"], p["action"], p["dataset.version"]) for p in runs]
    assert recorded == [
        ("cm", "built", "v0001"),
        ("cm", "skipped", "v0001"),
        ("cm", "built", "v0002"),
        ("cm", "failed", "v0002"),
        ("other", "built", "v0001"),
        ("cm", "built", "v0004"),
        ("other", "skipped", "v0001"),
    ]
    last = _runs(mlflow_uri, started_ms)[-2]
    assert last["dataset.content_hash"] == read_latest(cm)["content_hash"]
    assert last["pruned"] == "v0001"


def test_regeneration_refuses_a_bad_spec_before_any_work(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("datasets:\n  - name: cm\n    source: cluttered_mnist\n    out: x\n    seed: [")
    with pytest.raises(ValueError, match="not valid YAML/JSON"):
        regenerate.main(["--spec", str(spec)])
    with pytest.raises(FileNotFoundError, match=r"regeneration spec .* does not exist"):
        regenerate.main(["--spec", str(tmp_path / "missing.yaml")])
