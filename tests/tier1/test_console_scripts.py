"""Tier 1: every job has a console command, and the commands are the jobs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
JOBS = sorted(
    p.stem
    for p in (REPO_ROOT / "jobs").glob("*.py")
    if "run_main(main)" in p.read_text() or p.stem == "benchmark"
)


def test_every_job_has_a_command() -> None:
    assert sorted(s.removeprefix("saccade-").replace("-", "_") for s in SCRIPTS) == JOBS


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_command_points_at_a_callable(script: str) -> None:
    module, _, attr = SCRIPTS[script].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_an_installed_command_runs_its_job() -> None:
    command = Path(sys.executable).parent / "saccade-train"
    if not command.exists():
        pytest.skip(f"{command} is not installed (pip install -e . installs it)")
    done = subprocess.run(
        [str(command), "--recipe", "tiny_cpu", "--set", "epochs=3", "--print-config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs"] == 3
