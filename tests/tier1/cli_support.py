"""Running an entry point the way a user does, and checking it failed the way it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_job(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m <module> ARGS` from the repository root, never joining a cluster."""
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_clear_failure(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2, the last line `error: ...` naming `message`, no traceback, and no Ray started."""
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "Started a local Ray instance" not in result.stderr  # failed before Ray
