"""Tier 2: Ray Train on a real local cluster with a real MLflow store: an end-to-end run, resume,
the registered model, and `ray job submit`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs.benchmarks._tradeoff import ROW_FIELDS
from jobs.core.assess import assess
from jobs.core.packaging import model_frame
from jobs.training.recipes import make_recipe
from jobs.training.trainer import TrainOutcome, TrainRequest, train
from pipelines.storage import DatasetVersion

pytestmark = pytest.mark.tier2
REPO_ROOT = Path(__file__).resolve().parents[2]
# What Ray and MLflow print when their output reaches a terminal: worker prefixes ("(RayTrainWorker
# pid=..)", coloured), logger levels, Python warnings, Ray Data's plans and bars, registry notes.
RAY_OR_MLFLOW = re.compile(
    r"^\s*\(|\x1b\[|\b(DEBUG|INFO|WARNING|ERROR)\b|Warning|Traceback|Execution plan|Dataset "
    r"|Ray instance|PlacementGroup|Successfully registered|Created version|Downloading artifacts"
)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _request(dataset: str, tmp_path: Path, name: str, **overrides: str) -> TrainRequest:
    config = make_recipe("tiny_cpu", dataset, overrides)
    return TrainRequest(config=config, name=name, storage=str(tmp_path / "ckpt"))


def test_train_registers_a_model_that_loads_and_predicts(
    mlflow_uri: str, tiny_dataset: str, trained_tiny: TrainOutcome
) -> None:
    import mlflow

    outcome = trained_tiny
    assert outcome.metrics["epoch"] == 2
    client = _client(mlflow_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.model"] == "saccader_test"
    assert run.data.params["dataset.version"] == "v0001"
    assert len(run.data.params["dataset.manifest_sha256"]) == 64
    # MLflow's own columns: source, commit, user, and the dataset as the run's input
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"].startswith("python")
    assert tags["mlflow.source.git.commit"] == run.data.params["git_commit"]
    assert tags["mlflow.user"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == run.data.params["dataset.manifest_sha256"][:36]
    # MLflow keeps one dataset per (name, digest) in an experiment: an identical version built
    # elsewhere by another test may be the source it shows, so the name and digest are checked
    assert dataset_input.dataset.name == "/".join(tiny_dataset.rstrip("/").split("/")[-2:])
    assert json.loads(dataset_input.dataset.source)["uri"].endswith(dataset_input.dataset.name)
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]
    for key in (
        "train/ce",
        "train/kl",
        "train/recon",
        "val/accuracy",
        "val/hit_rate",
        "train/samples_per_s",
        "peak_memory_mb",
    ):
        assert [m.step for m in client.get_metric_history(outcome.run_id, key)] == [1, 2], key
    glimpses = [a.path for a in client.list_artifacts(outcome.run_id, "glimpses")]
    assert glimpses == ["glimpses/glimpses_epoch0001.png", "glimpses/glimpses_epoch0002.png"]
    assert client.list_artifacts(outcome.run_id, "confusion")
    # per-step points on the charts: every optimiser step of both epochs, once
    steps = [m.step for m in client.get_metric_history(outcome.run_id, "step/total")]
    assert len(steps) > 2 and steps == list(range(1, len(steps) + 1))
    # the pictures as MLflow step images (the UI's image grid): one per key and epoch
    # (MLflow names them images/<key>+step+<step>+timestamp+...png, beside a compressed copy)
    images = [
        a.path.split("/")[-1].split("+") for a in client.list_artifacts(run.info.run_id, "images")
    ]
    for key in ("glimpses", "confusion"):
        logged = [int(p[2]) for p in images if p[0] == key and p[-1].endswith(".png")]
        assert sorted(logged) == [1, 2], images

    mlflow.set_tracking_uri(mlflow_uri)
    # the last epoch's validation metrics on the logged model (MLflow's Models tab)
    source = client.get_model_version("e2e-model", outcome.model_version).source
    model_id = source.removeprefix("models:/")  # the version's logged model
    linked = {m.key: m.value for m in mlflow.get_logged_model(model_id).metrics}
    assert linked["val_accuracy"] == outcome.metrics["val/accuracy"] and "val_hit_rate" in linked
    model = mlflow.pyfunc.load_model(f"models:/e2e-model/{outcome.model_version}")
    rows = model_frame(DatasetVersion.open(tiny_dataset).read_head("test", 3))  # tiles packed
    predicted = model.predict(rows)
    assert len(predicted) == 3
    assert predicted["label"].between(0, 54).all()
    assert all(len(p) == 55 and abs(sum(p) - 1) < 1e-4 for p in predicted["probabilities"])
    assert all(len(b) == 2 and len(b[0]) == 4 for b in predicted["boxes"])  # T=2 glimpses
    assert predicted.equals(model.predict(rows))  # inference is deterministic

    report = assess(f"models:/e2e-model/{outcome.model_version}", tiny_dataset, split="test")
    assert 0 <= report.metrics["test/accuracy"] <= 1
    assert 0 <= report.metrics["test/hit_rate"] <= 1
    assert report.metrics["test/latency_ms"] > 0
    names = DatasetVersion.open(tiny_dataset).manifest.class_names
    test_labels = DatasetVersion.open(tiny_dataset).read("test", ["label_name"])
    # One entry per class present in the test split, named as in the manifest.
    assert set(report.per_class) == set(test_labels.column("label_name").to_pylist())
    assert set(report.per_class) <= set(names)
    logged = client.get_run(report.run_id)
    assert logged.data.tags["dataset.version"] == tiny_dataset
    assert logged.data.metrics["test/accuracy"] == pytest.approx(report.metrics["test/accuracy"])
    with pytest.raises(ValueError, match="cannot load model models:/no-such-model/1"):
        assess("models:/no-such-model/1", tiny_dataset)


def test_two_workers_each_validate_their_files_and_agree_with_the_evaluate_job(
    ray_cluster: str, mlflow_uri: str, tmp_path: Path
) -> None:
    """Validation is sharded by file across the workers and summed: every row once (none
    dropped to even the shares), and the same accuracy as evaluating the final model alone; with
    one glimpse, whose LSTM weights get no gradient under DDP."""
    from pipelines.build import BuildConfig, build_dataset

    url = build_dataset(
        BuildConfig(
            source="cluttered_mnist",
            out=str(tmp_path / "cm"),
            counts={"train": 16, "val": 12, "test": 4},
            params={"original_size": 128},
            tile_size=64,
            rows_per_file=4,
        ),
        progress=lambda _: None,
    ).url
    assert len(DatasetVersion.open(url).files("val")) == 3  # 2 for rank 0, 1 for rank 1
    # One glimpse: the LSTM's last state is never read, so its weights get no gradient, which
    # DDP refuses unless told to look for unused parameters (what signs_cpu trains with).
    overrides = {
        "epochs": "1",
        "num_workers": "2",
        "registered_model": "sharded",
        "model_cfg.glimpses": "1",
    }
    outcome = train(_request(url, tmp_path, "sharded", **overrides))
    assert outcome.metrics["val/images"] == 12
    report = assess(f"models:/sharded/{outcome.model_version}", url, split="val")
    assert report.metrics["val/images"] == 12
    assert outcome.metrics["val/accuracy"] == pytest.approx(report.metrics["val/accuracy"])
    assert outcome.metrics["val/hit_rate"] == pytest.approx(report.metrics["val/hit_rate"])


def test_train_images_caps_what_each_epoch_reads(
    ray_cluster: str, mlflow_uri: str, tiny_dataset: str, tmp_path: Path
) -> None:
    """The every-pixel baseline's budget: each epoch reads the split's first N images only."""
    request = _request(tiny_dataset, tmp_path, "capped", epochs="1", train_images="8")
    outcome = train(request)
    assert outcome.metrics["train/images"] == 8
    total = DatasetVersion.open(tiny_dataset).manifest.counts["train"]
    assert total > 8  # the cap, not the split, stopped the epoch


def test_resume_continues_from_the_last_epoch(
    ray_cluster: str, mlflow_uri: str, tiny_dataset: str, tmp_path: Path
) -> None:
    first = train(_request(tiny_dataset, tmp_path, "resume", epochs="1", picture_every="1"))
    assert first.metrics["epoch"] == 1
    second = train(_request(tiny_dataset, tmp_path, "resume", epochs="2", picture_every="1"))
    assert second.metrics["epoch"] == 2
    assert second.run_id == first.run_id  # the same MLflow run goes on
    history = _client(mlflow_uri).get_metric_history(first.run_id, "train/total")
    assert sorted(m.step for m in history) == [1, 2]  # epoch 1 was not trained or logged again


def test_one_seed_trains_the_same_model_twice(
    ray_cluster: str, mlflow_uri: str, tmp_path: Path
) -> None:
    """Two runs of one recipe and seed log the same losses to the last bit: the training split's
    blocks reach the workers in order (eight files here, read by parallel tasks that finish in
    any order)."""
    from pipelines.build import BuildConfig, build_dataset

    config = BuildConfig(
        source="cluttered_mnist",
        out=str(tmp_path / "cm"),
        counts={"train": 32, "val": 4},
        params={"original_size": 128},
        tile_size=64,
        rows_per_file=4,
    )
    dataset = build_dataset(config, progress=lambda _: None).url
    runs = [train(_request(dataset, tmp_path, f"same-seed-{n}", epochs="2")) for n in "ab"]
    assert runs[0].metrics["train/total"] == runs[1].metrics["train/total"]
    assert runs[0].metrics["val/accuracy"] == runs[1].metrics["val/accuracy"]


def test_train_through_ray_job_submit(
    job_server: str, mlflow_uri: str, tiny_dataset: str, tmp_path: Path
) -> None:
    # The job's environment names the tracking store, as a user's runtime env would.
    runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": mlflow_uri}})
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            job_server,
            "--working-dir",
            str(REPO_ROOT),
            "--runtime-env-json",
            runtime_env,
            "--",
            sys.executable,
            "-m",
            "jobs.train",
            "--recipe",
            "tiny_cpu",
            "--dataset",
            tiny_dataset,
            "--name",
            "submitted",
            "--storage",
            str(tmp_path / "ckpt"),
            "--set",
            "epochs=1",
            "--set",
            "registered_model=submitted-model",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "registered models:/submitted-model/1" in result.stdout
    versions = _client(mlflow_uri).search_model_versions("name = 'submitted-model'")
    assert [str(v.version) for v in versions] == ["1"]


def _training_worker_pids() -> set[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.pid for a in actors if a.class_name == "RayTrainWorker" and a.pid}


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_killed_worker_is_restarted_from_the_last_checkpoint(
    ray_cluster: str, mlflow_uri: str, tiny_dataset: str, tmp_path: Path
) -> None:
    """SIGKILL the training worker's process after the first checkpoint: FailureConfig restarts
    the group, which resumes from that checkpoint and finishes every epoch."""
    request = _request(tiny_dataset, tmp_path, "killed", epochs="4", picture_every="4")
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=train(request)))
    thread.start()
    try:
        run_dir = tmp_path / "ckpt" / "killed"
        _wait_for(lambda: list(run_dir.glob("checkpoint_*")), 300, "the first checkpoint")
        victims = _wait_for(_training_worker_pids, 60, "a live training worker")
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        # a new worker process takes over (the group is restarted, not the job failed)
        _wait_for(lambda: _training_worker_pids() - victims, 300, "a restarted worker")
    finally:
        thread.join(timeout=600)
    assert not thread.is_alive()
    result = outcome["result"]
    assert result.metrics["epoch"] == 4
    history = _client(mlflow_uri).get_metric_history(result.run_id, "train/total")
    assert {m.step for m in history} == {1, 2, 3, 4}
    assert _client(mlflow_uri).get_run(result.run_id).info.status == "FINISHED"


def test_quickstart_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    """The README's main command, shrunk: build, train two models with Ray Train, evaluate and
    time each in processes of its own, print the table and write the trade-off JSON; on its own
    local Ray and its own MLflow store."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.quickstart",
            "--out",
            str(tmp_path / "data"),
            "--train",
            "32",
            "--epochs",
            "1",
            "--models",
            "saccader,proxy-only",
            "--num-cpus",
            "2",
            "--original-size",
            "200",
            "--json",
            str(tmp_path / "quickstart.json"),
        ],
        cwd=tmp_path,  # checkpoints/ and mlartifacts/ land here, not in the repository
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # Quiet: Ray's, MLflow's and the workers' output went to the log named on the first line.
    assert result.stderr == ""
    log = Path(lines[0].removeprefix("log: "))
    assert log.is_file() and "Started a local Ray instance" in log.read_text()
    internal = [line for line in lines if RAY_OR_MLFLOW.search(line)]
    assert not internal, internal
    assert len(lines) <= 60, result.stdout
    dashboard = next(line for line in lines if line.startswith("Ray dashboard: "))
    assert dashboard.startswith("Ray dashboard: http://127.0.0.1:83"), dashboard  # not 8265
    assert sum(1 for line in lines if line.strip().startswith("epoch 1/1:")) == 2  # once a model
    head = lines.index(next(line for line in lines if line.startswith("model ")))
    rows = {line.split()[0]: line.split() for line in lines[head + 2 : head + 4]}
    assert 0 <= float(rows["saccader"][1]) <= 1 and 0 <= float(rows["saccader"][2]) <= 1
    assert rows["proxy-only"][2] == "-"  # no glimpses, no hit-rate
    assert lines[head + 4] == ""
    assert lines[head + 5].startswith("The saccader read ")
    assert "against proxy-only" in lines[head + 5]
    figures = json.loads((tmp_path / "quickstart.json").read_text())
    assert {"dataset", "source", "image_size", "date", "machine"} <= set(figures)
    assert figures["image_size"] == {"height": 200, "width": 200, "channels": 1}
    assert [r["model"] for r in figures["rows"]] == ["saccader", "proxy-only"]
    assert all(set(r) == set(ROW_FIELDS) for r in figures["rows"])
    saccader, proxy_only = figures["rows"]
    assert float(rows["saccader"][1]) == round(saccader["accuracy"], 3)
    assert 0 < saccader["looked_fraction"] < 1 and proxy_only["looked_fraction"] is None
    assert saccader["train_images"] == 32 and saccader["epochs"] == 1
    assert saccader["ms_per_image_b16"] > 0 and saccader["peak_mb_b1"] > 0
    registered = "registered: models:/quickstart-saccader/1, models:/quickstart-proxy-only/1"
    assert registered in lines
    picture = next(line for line in lines if line.startswith("glimpse picture: ")).split(": ")[1]
    assert picture.endswith("glimpses_epoch0001.png") and Path(picture).is_file()
    assert lines[-2].startswith("MLflow UI: mlflow ui --backend-store-uri sqlite:///")
    assert lines[-1] == f"table written to {tmp_path / 'quickstart.json'}"
