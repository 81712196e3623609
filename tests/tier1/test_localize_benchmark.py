"""Tier 1: the localize benchmark trains the saccader of a training recipe (its model settings,
objective, per-glimpse targets and curriculum, with the train job's `--set`), not a copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.benchmarks import localize
from jobs.training.recipes import make_recipe

SMALL = ["--train-per-epoch", "64", "--test", "32", "--epochs", "1", "--threads", "1"]


def test_the_saccader_is_the_recipes_after_set(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    argv = [*SMALL, "--models", "saccader", "--recipe", "tiny_cpu"]
    argv += ["--set", "model_cfg.glimpses=3", "--set", "objective.aux_weight=0.5"]
    assert localize.main([*argv, "--json", str(out)]) == 0
    recorded = json.loads(out.read_text())["recipe"]
    assert recorded["model"] == "saccader_test" and recorded["model_cfg"]["glimpses"] == 3
    assert recorded["objective"]["aux_weight"] == 0.5
    assert json.loads(out.read_text())["results"]["saccader"]["epochs"] == 1


@pytest.mark.parametrize("task", ["single", "pair"])
def test_the_model_and_its_parts_come_from_the_recipe(task: str) -> None:
    args = localize.parse(["--task", task, "--set", "model_cfg.heatmap_offset=true"])
    cfg = localize.recipe_config(args)
    assert cfg == make_recipe("cluttered_cpu", "-", {"model_cfg.heatmap_offset": "true"})
    classes = 10 if task == "single" else 55
    model = localize.build("saccader", args, cfg, classes)
    assert model.config.heatmap_offset and model.config.glimpses == 3  # cluttered_cpu's T
    assert model.config.locator == "heatmap" and model.config.inhibit_return
    assert len(model.config.class_parts) == classes  # glimpse_parts: each class's digits
    if task == "pair":
        assert {len(parts) for parts in model.config.class_parts} == {1, 2}
