"""Resuming a run by name: the same training may go on (longer, on other workers, after a code
change), another configuration under the same name is refused instead of being logged under the
first attempt's parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.store import client, ensure_experiment
from jobs.training.tracking import start_or_resume_run

FIRST = {
    "train.batch_size": 32,
    "train.epochs": 3,
    "train.num_workers": 1,
    "dataset.url": "data/mpx/v0001",
    "git_commit": "aaaa",
}


@pytest.fixture
def experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)  # the embedded artifact root
    return ensure_experiment("resume")


def test_the_same_training_resumes_its_run(experiment: str) -> None:
    run_id = start_or_resume_run(experiment, "r", FIRST)
    assert start_or_resume_run(experiment, "r", FIRST) == run_id
    longer = {**FIRST, "train.epochs": 6, "train.num_workers": 2, "git_commit": "bbbb"}
    assert start_or_resume_run(experiment, "r", longer) == run_id
    # a run started before recipes registered under their own names resumes under the new one
    renamed = {**FIRST, "train.registered_model": "tiny_cpu"}
    assert start_or_resume_run(experiment, "r", renamed) == run_id


def test_parameters_mlflow_logs_for_the_model_do_not_block_a_resume(experiment: str) -> None:
    """A logged model's `model_config` (`device`) lands among the run's parameters: it says
    nothing about what is trained."""
    run_id = start_or_resume_run(experiment, "m", FIRST)
    client().log_param(run_id, "device", "auto")
    assert start_or_resume_run(experiment, "m", FIRST) == run_id


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"train.batch_size": 8}, "train.batch_size: 32 → 8"),
        ({"dataset.url": "data/mpx/v0002"}, "dataset.url: data/mpx/v0001 → data/mpx/v0002"),
        ({"train.train_images": 1500}, "train.train_images: None → 1500"),
    ],
)
def test_another_configuration_under_the_same_name_is_refused(
    experiment: str, change: dict, named: str
) -> None:
    start_or_resume_run(experiment, "r", FIRST)
    with pytest.raises(ValueError, match="another configuration") as refused:
        start_or_resume_run(experiment, "r", {**FIRST, **change})
    assert named in str(refused.value) and "--name" in str(refused.value)


def test_a_run_logged_before_the_objective_was_nested_resumes(experiment: str) -> None:
    """Runs logged their objective flat (`train.kl_weight`); the same training resumes them, and
    another weight under the old name is still a change."""
    old = {**FIRST, "train.objective": "additive", "train.kl_weight": 0.1}
    run_id = start_or_resume_run(experiment, "r", old)
    now = {**FIRST, "train.objective.kind": "additive", "train.objective.kl_weight": 0.1}
    assert start_or_resume_run(experiment, "r", now) == run_id
    with pytest.raises(ValueError, match=r"train.objective.kl_weight: 0.1 → 0.5"):
        start_or_resume_run(experiment, "r", {**now, "train.objective.kl_weight": 0.5})
