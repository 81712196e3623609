"""Tier 2: the trade-off benchmark end to end on a tiny dataset (real Ray Train, MLflow registry,
evaluate job, timed inference workers), its JSON, and its resumability."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from jobs.benchmarks import reader
from jobs.benchmarks._tradeoff import ROW_FIELDS

pytestmark = pytest.mark.tier2
REPO_ROOT = Path(__file__).resolve().parents[2]
# The saccader per seed and the every-pixel baseline it is measured against (resize-224 and
# proxy-only run the same phases; a few minutes more on 2 cores).
RECIPES = ["tiny_cpu", "tiny_cpu_patches"]
KINDS = {
    "tiny_cpu": "saccader",
    "tiny_cpu_resize224": "resize-224",
    "tiny_cpu_patches": "every pixel",
    "tiny_cpu_proxy_only": "proxy-only",
}


@pytest.fixture(scope="module")
def dataset(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Cluttered MNIST at 128 px in 64-px tiles (4 tiles and 1 level tile per image); 16 test
    images, one timed batch of 16."""
    from pipelines.build import BuildConfig, build_dataset

    config = BuildConfig(
        source="cluttered_mnist",
        out=str(tmp_path_factory.mktemp("tradeoff") / "cm"),
        counts={"train": 16, "val": 4, "test": 16},
        params={"original_size": 128},
        tile_size=64,
        rows_per_file=16,
    )
    return build_dataset(config, progress=lambda _: None).url


@pytest.fixture(scope="module")
def evaluation_set(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An evaluation set with the same classes: a test split and nothing else."""
    from pipelines.build import BuildConfig, build_dataset

    config = BuildConfig(
        source="cluttered_mnist",
        out=str(tmp_path_factory.mktemp("tradeoff") / "cm-test"),
        counts={"test": 8},
        params={"original_size": 128},
        tile_size=64,
        seed=7,
    )
    return build_dataset(config, progress=lambda _: None).url


def _benchmark(
    dataset: str, tmp_path: Path, out: str, *extra: str
) -> tuple[subprocess.CompletedProcess, float]:
    import ray

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        # The trainings join this session's cluster instead of starting a Ray each.
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "PYTHONPATH": str(REPO_ROOT),
    }
    cmd = [sys.executable, "-m", "jobs.benchmark", "tradeoff", "--dataset", dataset]
    cmd += ["--recipes", ",".join(RECIPES), "--seeds", "0,1", "--set", "epochs=1"]
    cmd += ["--state", str(tmp_path / "state"), "--storage", str(tmp_path / "ckpt")]
    cmd += ["--json", str(tmp_path / out), "--repeats", "1", *extra]
    start = time.perf_counter()
    result = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, time.perf_counter() - start


def _versions(tmp_path: Path) -> list[tuple[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return sorted((v.name, v.version) for v in client.search_model_versions())


def _check_row(row: dict, recipe: str, seed: int, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    assert tuple(sorted(row)) == tuple(sorted(ROW_FIELDS))
    assert (row["model"], row["recipe"], row["seed"]) == (KINDS[recipe], recipe, seed)
    assert isinstance(row["seed"], int) and isinstance(row["epochs"], int)
    assert 0.0 <= row["accuracy"] <= 1.0
    for key in ("ms_per_image_b1", "ms_per_image_b16", "train_seconds", "train_samples_per_s"):
        assert isinstance(row[key], float) and row[key] > 0, key
    for key in ("peak_mb_b1", "peak_mb_b16"):
        assert isinstance(row[key], float) and row[key] >= 0, key
    assert (row["epochs"], row["train_images"]) == (1, 16)
    assert row["train_samples_per_s"] == pytest.approx(16 / row["train_seconds"])
    glimpses = KINDS[recipe] == "saccader"
    for key in ("hit_rate", "centred_hit_rate", "looked_fraction"):
        value = row[key]
        assert (isinstance(value, float) and 0 <= value <= 1) if glimpses else value is None, key
    if glimpses:
        assert row["looked_fraction"] > 0
    # 4 full-resolution tiles and 1 level tile per image: every pixel and resize-224 read the 4
    # full-resolution tiles, the proxy-only model none.
    expected = {"every pixel": 0.8, "resize-224": 0.8, "proxy-only": 0.0}.get(KINDS[recipe])
    if expected is None:
        assert 0 < row["tiles_decoded_fraction"] <= 1
    else:
        assert row["tiles_decoded_fraction"] == pytest.approx(expected)
    name, version = row["model_uri"].removeprefix("models:/").split("/")
    assert name == f"tradeoff-{recipe}"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_model_version(name, version).run_id == row["run_id"]
    assert client.get_run(row["run_id"]).info.status == "FINISHED"


def test_tradeoff_end_to_end_json_and_resume(
    dataset: str, evaluation_set: str, tmp_path: Path
) -> None:
    pictures = ["--pictures", str(tmp_path / "pics")]
    first, _ = _benchmark(dataset, tmp_path, "first.json", *pictures, "--also-test", evaluation_set)
    figures = json.loads((tmp_path / "first.json").read_text())
    assert figures["dataset"] == dataset and figures["source"] == "cluttered_mnist"
    assert figures["image_size"] == {"height": 128, "width": 128, "channels": 1}
    datetime.strptime(figures["date"], "%Y-%m-%dT%H:%M:%SZ")
    assert figures["machine"]["cores"] >= 1 and isinstance(figures["machine"]["cpu"], str)
    assert figures["command"].startswith("python -m jobs.benchmark tradeoff --dataset")
    rows = figures["rows"]
    expected = [("tiny_cpu", 0), ("tiny_cpu", 1)] + [(r, 0) for r in RECIPES[1:]]
    assert [(r["recipe"], r["seed"]) for r in rows] == expected
    for row, (recipe, seed) in zip(rows, expected, strict=True):
        _check_row(row, recipe, seed, tmp_path)
    assert rows[0]["model_uri"] != rows[1]["model_uri"]  # one registered version per seed
    # --also-test: every model evaluated on the evaluation set too (it has no training split)
    (also,) = figures["also_tested"]
    assert also["dataset"] == evaluation_set and also["source"] == "cluttered_mnist"
    assert [(r["recipe"], r["seed"]) for r in also["rows"]] == expected
    for row in also["rows"]:
        assert 0 <= row["accuracy"] <= 1 and row["evaluation_run_id"]
        assert (row["hit_rate"] is None) == (row["model"] != "saccader")
    assert first.stdout.count(f"The same models on {evaluation_set}") == 1
    # One progress line per phase and model; the table.
    for phase in ("trained in", "evaluated in", "measured in"):
        assert first.stdout.count(phase) == 3, phase
    assert re.search(r"\|\s+saccader \|", first.stdout)
    assert re.search(r"\|\s+every pixel \|", first.stdout)
    # A glimpse picture of the test images per saccader, none for the baselines.
    pictures = sorted(p.name for p in (tmp_path / "pics").iterdir())
    suffixes = ("", f"-cluttered_mnist-{evaluation_set.rsplit('/', 1)[-1]}")
    assert pictures == sorted(
        f"tiny_cpu-seed{seed}_glimpses{suffix}.png" for seed in (0, 1) for suffix in suffixes
    )
    with Image.open(tmp_path / "pics" / pictures[0]) as picture:
        assert picture.width > 200 and picture.height > 200
    versions = _versions(tmp_path)

    # A rerun with the same state retrains and re-measures nothing: the same rows, in seconds.
    again, seconds = _benchmark(dataset, tmp_path, "again.json")
    assert "training" not in again.stdout and "measured in" not in again.stdout
    assert again.stdout.count("done before") == 9
    assert json.loads((tmp_path / "again.json").read_text())["rows"] == rows
    assert _versions(tmp_path) == versions
    assert seconds < 60

    # A model whose state was lost (a crash before its first save): its finished training is
    # found in MLflow, not repeated; only its evaluation and measurement run again.
    (lost_state,) = (tmp_path / "state" / "rows").glob("tiny_cpu-seed1-*.json")
    lost_state.unlink()
    again, _ = _benchmark(dataset, tmp_path, "lost.json")
    assert "training" not in again.stdout
    assert again.stdout.count("found the finished run in MLflow") == 1
    assert again.stdout.count("measured in") == 1 and again.stdout.count("done before") == 6
    assert _versions(tmp_path) == versions
    lost = json.loads((tmp_path / "lost.json").read_text())["rows"]
    assert [(r["run_id"], r["model_uri"]) for r in lost] == [
        (r["run_id"], r["model_uri"]) for r in rows
    ]


def test_the_reader_benchmark_trains_the_recipes_glimpse_encoder(
    tiny_dataset: str, tmp_path: Path
) -> None:
    """`jobs.benchmark reader`: glimpses centred on the dataset's boxes, the recipe's encoder
    trained on them, its test curve in the JSON; a baseline recipe reads no glimpse."""
    out = tmp_path / "reader.json"
    argv = ["--dataset", tiny_dataset, "--recipe", "tiny_cpu", "--steps", "4", "--every", "2"]
    assert reader.main([*argv, "--shift", "fixed", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert [c["step"] for c in figures["curve"]] == [2, 4]
    assert all(0 <= c["test_accuracy"] <= 1 and c["train_loss"] > 0 for c in figures["curve"])
    assert figures["recipe"] == "tiny_cpu" and figures["shift"] == "fixed"
    with pytest.raises(ValueError, match="reads no glimpse"):
        reader.main(["--dataset", tiny_dataset, "--recipe", "tiny_cpu_proxy_only", "--steps", "1"])
