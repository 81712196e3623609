"""Tier 1: every bad input to `python -m jobs.build_dataset` gives one clear error, exit code 2,
and leaves no version visible. These fail in the preflight, before Ray starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_support import assert_clear_failure, run_job
from manifest_support import manifest

from pipelines.build import BuildConfig
from pipelines.storage import Staging, list_versions


def _build(*args: str) -> subprocess.CompletedProcess:
    return run_job("jobs.build_dataset", *args)


def test_unknown_source(tmp_path: Path) -> None:
    result = _build("--source", "imagenet", "--out", str(tmp_path))
    assert_clear_failure(result, "unknown source 'imagenet'; use one of ['cluttered_mnist'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("canvas_size=40", "cannot hold 2 non-overlapping 28 px digits"),
        ("original_size=50", "original_size=50 is below canvas_size=100"),
        ("task=triple", "task='triple' is unknown"),
        ("clutter=lots", "parameter clutter='lots' is not a valid int"),
        ("window=64", "unknown parameter(s) ['window']"),
    ],
)
def test_impossible_parameters(tmp_path: Path, setting: str, message: str) -> None:
    result = _build("--source", "cluttered_mnist", "--out", str(tmp_path), "--set", setting)
    assert_clear_failure(result, message)
    assert list(tmp_path.iterdir()) == []


def test_megapixel_canvas_too_small(tmp_path: Path) -> None:
    result = _build(
        "--source", "megapixel_mnist", "--out", str(tmp_path), "--set", "canvas_size=60"
    )
    assert_clear_failure(result, "MegapixelMnistConfig")
    assert list(tmp_path.iterdir()) == []


def test_existing_version(tmp_path: Path) -> None:
    Staging.create(str(tmp_path), "v0001").publish(manifest(extra={"marker": True}))
    result = _build("--source", "cluttered_mnist", "--out", str(tmp_path), "--version", "v0001")
    assert_clear_failure(result, "v0001 already exists (published)")
    assert (tmp_path / "v0001" / "manifest.json").read_text().count("marker") == 1


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _build("--source", "cluttered_mnist", "--out", str(blocker / "data"))
    assert_clear_failure(result, "cannot write under")


def test_missing_idx_files(tmp_path: Path) -> None:
    result = _build(
        "--source",
        "cluttered_mnist",
        "--out",
        str(tmp_path / "out"),
        "--mnist-idx",
        str(tmp_path / "no-such-dir"),
    )
    assert_clear_failure(result, "MNIST IDX directory")
    assert not (tmp_path / "out").exists() or list_versions(str(tmp_path / "out")) == []


def test_bad_counts_and_tiles() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        BuildConfig(source="cluttered_mnist", out="x", counts={"training": 3})
    with pytest.raises(ValueError, match="at least one image"):
        BuildConfig(source="cluttered_mnist", out="x", counts={"train": 0})
    with pytest.raises(ValueError, match="tile_size must be >= 16"):
        BuildConfig(source="cluttered_mnist", out="x", tile_size=8)
