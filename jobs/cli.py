"""Console commands (``[project.scripts]``): ``saccade-train ARGS`` = ``python -m jobs.train ARGS``.

Each command imports its job only when run, so one command's start-up does not pay for the
others' imports.
"""

from __future__ import annotations

import importlib
import sys

from jobs.common import run_main


def _job(name: str) -> None:
    run_main(importlib.import_module(f"jobs.{name}").main)


def build_dataset() -> None:
    _job("build_dataset")


def export_images() -> None:
    _job("export_images")


def train() -> None:
    _job("train")


def evaluate() -> None:
    _job("evaluate")


def predict() -> None:
    _job("predict")


def promote() -> None:
    _job("promote")


def regenerate() -> None:
    _job("regenerate")


def verify() -> None:
    _job("verify")


def quickstart() -> None:
    _job("quickstart")


def benchmark() -> None:
    sys.exit(importlib.import_module("jobs.benchmark").main())
