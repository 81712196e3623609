"""Tier 1: the preflight every job runs before Ray starts — settings parsed by the annotated
types of their dataclasses, ranges, consistency with the dataset, and resources against what the
Ray the job will use can give."""

from __future__ import annotations

import math

import pytest

from jobs.preflight import (
    BUILD_DEMAND,
    Capacity,
    check_against_dataset,
    check_demand,
    local_capacity,
    prediction_demand,
    training_demand,
)
from jobs.training.recipes import DataSpec, make_recipe

DATA = DataSpec(num_classes=55, channels=1)


def _model_cfg(**overrides: str) -> dict:
    settings = {f"model_cfg.{k}": v for k, v in overrides.items()}
    return make_recipe("tiny_cpu", "d", settings).model_cfg


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("no", False), ("false", False), ("0", False), ("NO", False), ("yes", True), ("1", True)],
)
def test_bool_settings_parse_by_the_field_type(raw: str, expected: bool) -> None:
    # "no" used to reach the model as the string "no", which is truthy: the option went ON
    assert _model_cfg(inhibit_return=raw)["inhibit_return"] is expected
    assert make_recipe("tiny_cpu", "d", {"use_gpu": raw}).use_gpu is expected


@pytest.mark.parametrize("raw", ["off", "on", "maybe", "", "2"])
def test_bool_settings_accept_only_the_listed_words(raw: str) -> None:
    with pytest.raises(ValueError, match=f"feed_glimpse={raw!r} must be one of true/false"):
        _model_cfg(feed_glimpse=raw)


def test_tuple_settings_are_comma_separated_ints() -> None:
    assert _model_cfg(encoder_blocks="2")["encoder_blocks"] == (2,)
    assert _model_cfg(encoder_blocks="1, 1,1")["encoder_blocks"] == (1, 1, 1)
    with pytest.raises(ValueError, match="encoder_blocks='1,x' is not a valid int tuple"):
        _model_cfg(encoder_blocks="1,x")
    with pytest.raises(ValueError, match="cannot be given on the command line"):
        _model_cfg(class_parts="1,2")


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("model_cfg.glimpses", "2.5", "model_cfg.glimpses='2.5' is not a valid int"),
        ("model_cfg.window", "wide", "model_cfg.window='wide' is not a valid int"),
        ("model_cfg.max_image_fraction", "nan", "must be a finite number"),
        ("model_cfg.init_noise", "inf", "must be a finite number"),
        ("lr", "nan", "lr='nan' must be a finite number"),
        ("lr", "-inf", "lr='-inf' must be a finite number"),
        ("objective.kl_weight", "lots", "kl_weight='lots' is not a valid float"),
        ("epochs", "2.5", "epochs='2.5' is not a valid int"),
        ("model_cfg.wings", "2", "unknown saccader_test settings ['wings']"),
    ],
)
def test_bad_values_are_named(key: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        make_recipe("tiny_cpu", "d", {key: raw})


def test_optional_settings_take_none_and_a_value() -> None:
    assert _model_cfg(proxy_channels="none")["proxy_channels"] is None
    assert _model_cfg(proxy_channels="3")["proxy_channels"] == 3


def test_model_settings_follow_a_model_override() -> None:
    # `--set model=...` decides which config the model_cfg keys belong to, whatever their order
    config = make_recipe("tiny_cpu", "d", {"model_cfg.width": "8", "model": "proxy_only_test"})
    assert config.model_cfg == {"width": 8}
    with pytest.raises(ValueError, match=r"unknown proxy_only_test settings \['glimpses'\]"):
        make_recipe("tiny_cpu", "d", {"model": "proxy_only_test", "model_cfg.glimpses": "2"})


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("max_failures", "-1", "max_failures must be >= 0"),  # Ray's "retry forever"
        ("objective.kl_weight", "-1", "kl_weight must be a finite number >= 0"),
        ("clip_value", "0", "clip_value must be a finite number > 0"),
        ("cpus_per_worker", "0", "cpus_per_worker must be a finite number > 0"),
        ("warmup_steps", "-5", "warmup_steps must be >= 0"),
        ("seed", "-1", "seed must be >= 0"),
        ("registered_model", " ", "setting registered_model is empty"),
    ],
)
def test_ranges(key: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_recipe("tiny_cpu", "d", {key: raw})


def test_settings_the_dataset_fixes_must_agree_with_it() -> None:
    check_against_dataset({"num_classes": 55, "in_channels": 1}, DATA, "d/v0001")  # the same: ok
    check_against_dataset({"proxy_channels": None}, DATA, "d/v0001")
    with pytest.raises(ValueError, match=r"model_cfg.num_classes=3 contradicts the dataset"):
        check_against_dataset({"num_classes": 3}, DATA, "d/v0001")
    with pytest.raises(ValueError, match=r"model_cfg.in_channels=3 contradicts .* 1 channels"):
        check_against_dataset({"in_channels": 3}, DATA, "d/v0001")


def test_cpus_are_refused_when_the_workers_and_the_read_do_not_fit() -> None:
    two_cores = Capacity(where="this machine", cpus=2, gpus=0)
    check_demand(training_demand(2, 0.5, False), two_cores)  # 2 × 0.5 + 1: fits exactly
    with pytest.raises(ValueError, match=r"num_workers=2 × cpus_per_worker=1 \+ 1 CPU .* = 3 CPUs"):
        check_demand(training_demand(2, 1.0, False), two_cores)  # the hang ENVIRONMENT.md names
    with pytest.raises(ValueError, match=r"num_workers=64 .* = 33 CPUs, but this machine has 2"):
        check_demand(training_demand(64, 0.5, False), two_cores)
    with pytest.raises(ValueError, match=r"--actors 2 × --actor-cpus 1 \+ 1 CPU"):
        check_demand(prediction_demand(2, 1.0), two_cores)
    check_demand(training_demand(3, 0.1, False), Capacity(where="x", cpus=1.3, gpus=0))


def test_gpus_are_refused_where_there_are_none() -> None:
    check_demand(training_demand(2, 0.5, True), Capacity(where="c", cpus=8, gpus=2))
    with pytest.raises(ValueError, match=r"use_gpu=true .* needs 1 GPU\(s\), but c has 0"):
        check_demand(training_demand(1, 0.5, True), Capacity(where="c", cpus=8, gpus=0))
    check_demand(prediction_demand(2, 1.0, 0.5), Capacity(where="c", cpus=8, gpus=1))
    with pytest.raises(ValueError, match=r"--actors 2 × --actor-gpus 1 needs 2 GPU\(s\)"):
        check_demand(prediction_demand(2, 1.0, 1.0), Capacity(where="c", cpus=8, gpus=1))


def test_local_capacity() -> None:
    import torch

    assert local_capacity(3).cpus == 3
    machine = local_capacity(None)
    assert machine.cpus >= 1 and machine.gpus == torch.cuda.device_count()
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"--num-cpus must be >= 1, got {bad}"):
            local_capacity(bad)
    with pytest.raises(ValueError, match="at least one CPU"):
        check_demand(BUILD_DEMAND, Capacity(where="x", cpus=0.5, gpus=0))
    assert not math.isnan(machine.cpus)
