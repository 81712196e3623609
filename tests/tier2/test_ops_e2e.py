"""Tier 2, end to end through `ray job submit` against a local Ray head started by
`python -m infra.stack up --only ray`, with the repository's runtime environment: regenerate a
tiny dataset on the S3 server, train and register a model, promote it, and predict with
`models:/NAME@champion` into a Parquet file on the S3 server.

The head comes from the stack rather than the session's in-process cluster: a job's driver finds
its cluster through the head's temp dir, and only a `ray start` head records itself there (with
several Ray instances on one machine, a driver of an in-process cluster may join another one).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ops_support import exported, free_port_block, run_stack, submit

from pipelines.storage import filesystem, read_latest

pytestmark = pytest.mark.tier2
ROOT = "s3://datasets/e2e-ops"


@pytest.fixture
def ray_head(
    s3_endpoint: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head whose environment (inherited from this process) names moto and MLflow."""
    state = tmp_path_factory.mktemp("head")
    gcs, dashboard = free_port_block(2), free_port_block(2)
    up = run_stack(
        "up",
        *("--only", "ray", "--ray-port", str(gcs), "--dashboard-port", str(dashboard)),
        *("--num-cpus", "2", "--object-store-mb", "400"),
        state_dir=state,
    )
    assert up.returncode == 0, up.stderr[-3000:]
    env = exported(up.stdout)
    try:
        yield env["RAY_API_SERVER_ADDRESS"], env
    finally:
        down = run_stack("down", state_dir=state)
        assert down.returncode == 0, down.stderr
        shutil.rmtree(f"/tmp/saccade-ray-{gcs}", ignore_errors=True)


def test_regenerate_train_promote_predict_through_ray_job_submit(
    ray_head: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    address, env = ray_head
    spec = tmp_path / "datasets.yaml"
    dataset_spec = {
        "name": "cm",
        "source": "cluttered_mnist",
        "out": f"{ROOT}/cm",
        "counts": {"train": 16, "val": 4, "test": 8},
        "params": {"original_size": 128},
        "tile_size": 64,
        "rows_per_file": 16,
    }
    spec.write_text(yaml.safe_dump({"datasets": [dataset_spec]}))
    out = submit(address, env, "jobs.regenerate", "--spec", str(spec))
    assert "cm: built -> latest s3://datasets/e2e-ops/cm/v0001" in out
    assert read_latest(f"{ROOT}/cm")["version"] == "v0001"
    dataset = f"{ROOT}/cm/v0001"

    out = submit(
        address,
        env,
        "jobs.train",
        *("--recipe", "tiny_cpu", "--dataset", dataset, "--name", "e2e-ops"),
        *("--storage", str(tmp_path / "ckpt"), "--set", "epochs=1"),
        *("--set", "registered_model=e2e-ops"),
    )
    assert "registered models:/e2e-ops/1" in out

    # The newest version, on the dataset root: evaluated on the version `latest` names.
    promotion = ("--model", "e2e-ops", "--candidate", "latest", "--dataset", f"{ROOT}/cm")
    out = submit(address, env, "jobs.promote", *promotion)
    assert "promoted: models:/e2e-ops/1 is now @champion" in out

    predictions = f"{ROOT}/predictions/test.parquet"
    out = submit(
        address,
        env,
        "jobs.predict",
        *("--model", "models:/e2e-ops@champion", "--dataset", dataset, "--split", "test"),
        *("--out", predictions, "--annotate", str(tmp_path / "annotated")),
    )
    assert "model models:/e2e-ops@champion -> models:/e2e-ops/1" in out
    fs, path = filesystem(predictions)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    assert table.num_rows == 8 and table.column("error").null_count == 8
    assert table.schema.metadata[b"saccade.model_uri"] == b"models:/e2e-ops/1"
    assert all(len(boxes) == 2 for boxes in table.column("boxes").to_pylist())
    assert len(list((tmp_path / "annotated").glob("*.png"))) == 8
