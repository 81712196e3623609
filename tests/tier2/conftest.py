"""Tier-2 fixtures: a real MLflow store, a tiny published dataset built with Ray Data and the
tiny recipe trained on it once through Ray Train."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real SQLite MLflow store (registry included) for the session; the env points at it."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def tiny_dataset(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two-digit cluttered MNIST, 128-px originals: 32 train, 8 val, 8 test images."""
    from pipelines.build import BuildConfig, build_dataset

    root: Path = tmp_path_factory.mktemp("datasets") / "cm"
    config = BuildConfig(
        source="cluttered_mnist",
        out=str(root),
        counts={"train": 32, "val": 8, "test": 8},
        params={"original_size": 128},
        tile_size=64,
        rows_per_file=16,
    )
    return build_dataset(config, progress=lambda _: None).url


@pytest.fixture(scope="session")
def trained_tiny(
    ray_cluster: str, mlflow_uri: str, tiny_dataset: str, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The tiny recipe trained once (2 epochs) and registered as `e2e-model`: the run and the
    model that the tier-2 tests read back, restore and serve."""
    from jobs.training.recipes import make_recipe
    from jobs.training.trainer import TrainRequest, train

    config = make_recipe("tiny_cpu", tiny_dataset, {"registered_model": "e2e-model"})
    storage = str(tmp_path_factory.mktemp("e2e") / "ckpt")
    return train(TrainRequest(config=config, name="e2e", storage=storage))
