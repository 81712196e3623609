"""Tier 1: CI runs exactly the README's test command (README, "The two commands")."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("# 2. set up and run the test suite")
    return lines[start + 1].strip()


def test_ci_runs_the_readme_test_command_and_the_linter() -> None:
    command = readme_test_command()
    assert "ruff check ." in command and "ruff format --check ." in command
    assert command.endswith("-m pytest")  # no `|| true`: a failure or no tests (exit 5) fails CI
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1].strip() == command
