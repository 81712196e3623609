"""Tier 2: faults under load. A worker node of a real multi-node Ray cluster (separate raylets on
this machine) is killed in the middle of a build, a training run and a batch prediction:

- the build publishes a whole version or nothing, never a partial one;
- training resumes from its last checkpoint, and its MLflow run logs every epoch exactly once;
- prediction writes every input exactly once.

The head node has no CPUs, so every task and actor that needs one runs on the single worker node,
the one that is killed; a replacement node joins right after the kill so the work can go on. The
jobs run as subprocesses joined to this module's cluster (``RAY_ADDRESS``): they never touch the
in-process Ray of the session's `ray_cluster` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ops_support import REPO_ROOT, register_constant_model

from jobs.store import ensure_experiment
from pipelines.storage import LATEST, MANIFEST, STAGING, DatasetVersion

pytestmark = pytest.mark.tier2

WORKER_CPUS = 2  # logical CPUs of the killed node (and of its replacement)
JOB_TIMEOUT_S = 420  # a job that hangs after the kill fails its test instead of the suite
SIGN_TIMEOUT_S = 180  # for the sign that a job's work is under way


class NodeCluster:
    """A head node without CPUs and one worker node, which a test kills and replaces."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        # include_dashboard=False: the session's Ray already holds the dashboard's port.
        self.cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        self.worker = self.cluster.add_node(num_cpus=WORKER_CPUS)

    @property
    def address(self) -> str:
        return self.cluster.address

    def kill_worker_and_replace(self) -> None:
        """SIGKILL every process of the worker node (its raylet, object store and workers, as a
        lost machine), then start a fresh worker node for the work to be rescheduled on."""
        self.cluster.remove_node(self.worker, allow_graceful=False)
        self.worker = self.cluster.add_node(num_cpus=WORKER_CPUS)

    def worker_titles(self) -> list[str]:
        """The process titles of the worker node's Ray workers (``ray::Class.method`` while an
        actor runs a method): which work is on the node right now."""
        raylet = self.worker.all_processes["raylet"][0].process.pid
        titles = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and int(_status(proc)["PPid"]) == raylet:
                    titles.append((proc / "cmdline").read_bytes().split(b"\0")[0].decode())
            except (OSError, KeyError, ValueError):  # the process ended while being read
                continue
        return titles

    def shutdown(self) -> None:
        self.cluster.shutdown()


def _status(proc: Path) -> dict[str, str]:
    lines = (proc / "status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.fixture(scope="module")
def nodes() -> Iterator[NodeCluster]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = NodeCluster()
    yield cluster
    cluster.shutdown()


class Job:
    """`python -m MODULE ARGS` joined to the module's cluster, its output in a log file."""

    def __init__(self, nodes: NodeCluster, log: Path, module: str, *args: str) -> None:
        self.module, self.log = module, log
        self.stream = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env={**os.environ, "RAY_ADDRESS": nodes.address},
            stdout=self.stream,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> int:
        try:
            code = self.process.wait(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"{self.module} did not finish in {JOB_TIMEOUT_S} s:\n{self.tail()}")
        finally:
            self.stream.close()
        return code

    def tail(self) -> str:
        # Without the raylets' state dumps, which Ray prints when a raylet dies.
        lines = [line for line in self.output().splitlines() if "[state-dump]" not in line]
        return "\n".join(lines)[-4000:]


def _wait_for(job: Job, sign: Callable[[], Any], what: str) -> Any:
    """Poll for `sign` while `job` runs; fail if the job ends (or the sign never comes) first,
    since a kill after the work is done would test nothing."""
    deadline = time.monotonic() + SIGN_TIMEOUT_S
    while time.monotonic() < deadline:
        value = sign()
        if value:
            if not job.running():
                pytest.fail(f"{job.module} ended before the kill; give it more work")
            return value
        if not job.running():
            pytest.fail(f"{job.module} ended before {what}:\n{job.tail()}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {SIGN_TIMEOUT_S} s:\n{job.tail()}")


def _build_args(out: Path, train: int, test: int) -> list[str]:
    return [
        "--source",
        "cluttered_mnist",
        "--out",
        str(out),
        "--train",
        str(train),
        "--val",
        "8",
        "--test",
        str(test),
        "--set",
        "original_size=128",
        "--tile-size",
        "64",
        "--rows-per-file",
        "8",
    ]


@pytest.fixture(scope="module")
def dataset(nodes: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A version built on the module's cluster, without faults: 32 train, 8 val, 96 test."""
    root = tmp_path_factory.mktemp("node-faults")
    job = Job(nodes, root / "build.log", "jobs.build_dataset", *_build_args(root / "cm", 32, 96))
    assert job.wait() == 0, job.tail()
    return str(root / "cm" / "v0001")


def _published(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}"))


def _staged_shards(root: Path) -> list[Path]:
    return list(root.glob(f"{STAGING}/*/split=*/*.parquet"))


def test_a_build_that_loses_its_worker_node_publishes_whole_or_nothing(
    nodes: NodeCluster, tmp_path: Path
) -> None:
    root = tmp_path / "cm"
    root.mkdir()
    (root / LATEST).write_text(json.dumps({"version": "v0000"}))  # a pointer the build must keep
    latest = (root / LATEST).read_text()
    job = Job(nodes, tmp_path / "build.log", "jobs.build_dataset", *_build_args(root, 120, 8))
    _wait_for(job, lambda: _staged_shards(root), "staged shard")
    nodes.kill_worker_and_replace()
    code = job.wait()

    assert (root / LATEST).read_text() == latest
    assert not list(root.glob(f"{STAGING}/*")), "the build left its staging directory behind"
    if code != 0:  # nothing published
        assert _published(root) == [], job.tail()
        assert sorted(p.name for p in root.iterdir()) == sorted([LATEST, STAGING])
        return
    assert _published(root) == ["v0001"]
    version = DatasetVersion.open(str(root / "v0001"))
    stored = {split: version.read(split, ["image_id"]) for split in version.manifest.counts}
    assert version.manifest.counts == {s: t.num_rows for s, t in stored.items()}
    assert version.manifest.counts == {"train": 120, "val": 8, "test": 8}
    ids = [i for t in stored.values() for i in t.column("image_id").to_pylist()]
    assert len(ids) == len(set(ids)), "a retried task stored some rows twice"
    verify = subprocess.run(
        [sys.executable, "-m", "jobs.verify", "--dataset", str(root / "v0001")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _run_by_name(tracking_uri: str, experiment: str, name: str) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        filter_string=f"tags.mlflow.runName = '{name}'",
    )
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _logged_epochs(tracking_uri: str, name: str) -> int:
    """The last epoch run `name` logged to MLflow (0: none, or no run yet)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("node-faults")
    if experiment is None:
        return 0
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.runName = '{name}'"
    )
    history = client.get_metric_history(runs[0].info.run_id, "train/total") if runs else []
    return max((m.step for m in history), default=0)


def test_training_that_loses_its_worker_node_resumes_without_losing_or_repeating_an_epoch(
    nodes: NodeCluster, dataset: str, mlflow_uri: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    # Made here, before the job: the store's tables are created once, not by two processes;
    # its artifacts go beside the store (MLflow's default is ./mlruns of this checkout).
    ensure_experiment("node-faults")
    epochs = 3
    storage = tmp_path / "ckpt"
    job = Job(
        nodes,
        tmp_path / "train.log",
        "jobs.train",
        "--recipe",
        "tiny_cpu",
        "--dataset",
        dataset,
        "--name",
        "node-killed",
        "--storage",
        str(storage),
        "--experiment",
        "node-faults",
        "--set",
        f"epochs={epochs}",
        "--set",
        "registered_model=node-faults-trained",  # not the default name other tests count
    )
    # Killed as soon as epoch 2's metrics reach MLflow: epoch 1's checkpoint exists, and epoch 2
    # is between its MLflow log and its checkpoint (or just past it), where a restart could log
    # it a second time.
    _wait_for(job, lambda: _logged_epochs(mlflow_uri, "node-killed") >= 2, "epoch 2 in MLflow")
    assert list((storage / "node-killed").glob("checkpoint_*")), "no checkpoint to resume from"
    nodes.kill_worker_and_replace()
    assert job.wait() == 0, job.tail()

    run = _run_by_name(mlflow_uri, "node-faults", "node-killed")
    assert run.info.status == "FINISHED"
    for key in ("train/total", "val/accuracy"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, epochs + 1)), f"{key} logged at epochs {steps}"
    output = job.output()
    assert f"epoch {epochs}/{epochs}" in output
    assert "registered models:/node-faults-trained/1" in output


def _predicting(nodes: NodeCluster) -> bool:
    titles = nodes.worker_titles()
    return any("Predictor" in t and not t.endswith(".__init__") for t in titles)


def test_prediction_that_loses_its_worker_node_writes_every_input_once(
    nodes: NodeCluster, dataset: str, mlflow_uri: str, tmp_path: Path
) -> None:
    version = register_constant_model("node-faults-constant", dataset, answer=0)
    out = tmp_path / "predictions.parquet"
    job = Job(
        nodes,
        tmp_path / "predict.log",
        "jobs.predict",
        "--model",
        f"models:/node-faults-constant/{version}",
        "--dataset",
        dataset,
        "--split",
        "test",
        "--out",
        str(out),
        "--batch-size",
        "1",  # many small model calls: the kill lands with most of the split still to do
    )
    # The output reaches the driver as one block once the split is predicted: the sign is the
    # model actor done loading and at work on the node (its read block is there too).
    _wait_for(job, lambda: _predicting(nodes), "a model actor at work")
    assert not out.exists(), "the predictions were all written before the kill"
    nodes.kill_worker_and_replace()
    assert job.wait() == 0, job.tail()

    expected = DatasetVersion.open(dataset).read("test", ["image_id"]).column("image_id")
    written = pq.read_table(out, columns=["image_id", "error", "label"])
    assert sorted(written.column("image_id").to_pylist()) == sorted(expected.to_pylist())
    assert written.column("error").null_count == written.num_rows  # every input predicted
    assert set(written.column("label").to_pylist()) == {0}
