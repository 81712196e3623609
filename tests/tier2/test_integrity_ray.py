"""Tier 2: a copy of a dataset built with Ray Data whose tiles got corrupted — `jobs.verify` lists
the rows and exits 1, Ray Train and evaluation finish with the corrupt rows counted, and the
evaluation logs another dataset hash than on the intact original (promotion tells them apart)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.common import run_main
from jobs.core.assess import assess
from jobs.training.recipes import make_recipe
from jobs.training.trainer import TrainRequest, train
from pipelines.schema import IMAGE_SCHEMA
from pipelines.storage import DatasetVersion

pytestmark = pytest.mark.tier2


def _corrupt(path: str, rows: list[int]) -> list[str]:
    """Overwrite the tiles of `rows` in one stored file with junk, as a bad disk or copy would
    (the stored digests stay as they were); returns their image ids."""
    table = pq.read_table(path)
    records = table.to_pylist()
    for index in rows:
        records[index]["tiles"] = [b"\0junk" * 7 for _ in records[index]["tiles"]]
        records[index]["level_tiles"] = [b"junk" for _ in records[index]["level_tiles"]]
    corrupted = pa.Table.from_pylist(records, schema=IMAGE_SCHEMA)
    pq.write_table(corrupted, path)
    return [records[i]["image_id"] for i in rows]


def test_corrupt_tiles_are_found_skipped_and_counted(
    ray_cluster: str,
    mlflow_uri: str,
    tiny_dataset: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow.tracking import MlflowClient

    from jobs import verify

    copy = str(tmp_path / "cm" / "v0001")
    shutil.copytree(tiny_dataset, copy)
    version = DatasetVersion.open(copy)
    bad_train = _corrupt(version.files("train")[0], [0, 5, 9])
    bad_test = _corrupt(version.files("test")[0], [1, 2])

    with pytest.raises(SystemExit) as verified:
        run_main(verify.main, ["--dataset", copy])
    out = capsys.readouterr().out
    assert verified.value.code == 1
    for image_id in bad_train + bad_test:
        assert f"({image_id}): digest mismatch" in out, out
    with pytest.raises(SystemExit) as intact:
        run_main(verify.main, ["--dataset", tiny_dataset])
    assert intact.value.code == 0

    config = make_recipe("tiny_cpu", copy, {"epochs": "1", "registered_model": "integrity-model"})
    outcome = train(TrainRequest(config=config, name="corrupt", storage=str(tmp_path / "ckpt")))
    assert outcome.metrics["epoch"] == 1
    assert outcome.metrics["train/corrupt_rows"] == 3
    client = MlflowClient(mlflow_uri)
    assert client.get_run(outcome.run_id).data.metrics["train/corrupt_rows"] == 3

    model_uri = f"models:/integrity-model/{outcome.model_version}"
    on_copy = assess(model_uri, copy, split="test")
    assert on_copy.metrics["test/corrupt_rows"] == 2
    assert sorted(image_id for image_id, _ in on_copy.corrupt) == sorted(bad_test)
    on_original = assess(model_uri, tiny_dataset, split="test")
    assert on_original.metrics["test/corrupt_rows"] == 0
    hashes = [
        client.get_run(r.run_id).data.tags["dataset.manifest_sha256"]
        for r in (on_copy, on_original)
    ]
    assert version.manifest == DatasetVersion.open(tiny_dataset).manifest  # the same manifest,
    assert hashes[0] != hashes[1]  # but not the same data
