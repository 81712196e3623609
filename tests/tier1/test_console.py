"""A quiet job's terminal shows its own lines only; everything else is in the log it names."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from jobs.console import Console, LineBar

REPO_ROOT = Path(__file__).resolve().parents[2]

# A job that writes the way Ray, MLflow and their workers do, and its own lines.
JOB = """
import logging, os, subprocess, sys, warnings
from jobs import console
from jobs.common import run_main

def main(argv):
    out = console.start("probe", verbose="--verbose" in sys.argv)
    print("a library's print")
    logging.getLogger("ray.data").info("Execution plan of Dataset ...")
    warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)
    subprocess.run([sys.executable, "-c", "import sys; print('a child process'); "
                    "print('(RayTrainWorker pid=1) worker output', file=sys.stderr)"])
    os.write(2, b"[C++ core] E core_worker.cc: a native log line\\n")
    logging.getLogger("jobs.probe").warning("an ignored flag")
    out.say("our own line")
    with out.bar("phase", 3) as bar:
        bar.update(3)
    if "--fail" in sys.argv:
        raise RuntimeError("boom")
    return 0

run_main(main)
"""
NOISE = [
    "a library's print",
    "Execution plan",
    "something is deprecated",
    "a child process",
    "worker output",
    "a native log line",
]


def _run(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JOB), *flags],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "SACCADE_LOG_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_quiet_job_shows_its_own_lines_and_logs_the_rest(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("log: ")
    log = Path(lines[0].removeprefix("log: "))
    assert log.parent == tmp_path and log.is_file()
    assert lines[1] == "our own line"
    assert lines[2].startswith("phase:") and "100%" in lines[-1] and len(lines) == 4
    assert result.stderr == "warning: an ignored flag\n"  # the project's own warning stays
    logged = log.read_text()
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise
        assert noise in logged, noise


def test_a_failure_shows_the_error_and_where_the_log_is(tmp_path: Path) -> None:
    result = _run(tmp_path, "--fail")
    assert result.returncode == 1
    log = result.stdout.splitlines()[0].removeprefix("log: ")
    assert "error: RuntimeError: boom" in result.stderr
    assert result.stderr.rstrip().endswith(log)
    assert "Traceback" not in result.stderr  # the traceback is in the log
    assert "Traceback" in Path(log).read_text()


def test_verbose_redirects_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path, "--verbose")
    assert result.returncode == 0, result.stderr
    assert not result.stdout.startswith("log: ")
    assert "our own line" in result.stdout
    for noise in NOISE:
        assert noise in result.stdout + result.stderr, noise
    assert not list(tmp_path.glob("*.log"))


def test_a_bar_in_a_log_prints_whole_lines_without_repeating_the_last(capsys) -> None:
    with Console().bar("build", 64) as bar:
        bar.update(64)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "0/64" in lines[0] and "64/64" in lines[1]
    shown: list[str] = []
    with LineBar("train", 64, "img", say=shown.append, interval_s=1e-9) as bar:
        bar.update(32)
        bar.update(32)  # its line is the last: closing does not print it again
    assert [line.split("|")[2].split()[0] for line in shown] == ["0/64", "32/64", "64/64"]
    assert "\r" not in "".join(shown)
