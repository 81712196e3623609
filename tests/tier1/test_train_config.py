"""Tier 1: training configuration errors are named, before Ray or any worker starts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from cli_support import assert_clear_failure, run_job
from manifest_support import manifest

from jobs.training.recipes import RECIPES, TrainConfig, make_recipe
from model.glimpse import TensorRegionReader
from pipelines.schema import IMAGE_SCHEMA
from pipelines.storage import Staging, write_parquet


def _train(*args: str) -> subprocess.CompletedProcess:
    return run_job("jobs.train", *args)


def test_every_recipe_builds_a_valid_config() -> None:
    for name in RECIPES:
        config = make_recipe(name, "data/x/v0001", {})
        assert isinstance(config, TrainConfig)


def test_every_recipe_builds_its_model() -> None:
    """A recipe whose model settings the model refuses would fail only when a run starts."""
    from jobs.training.recipes import DataSpec, build_model

    for name in RECIPES:
        config = make_recipe(name, "data/x/v0001", {})
        parts = [[k % 3, k // 3] for k in range(10)]
        build_model(config, DataSpec(num_classes=10, channels=1, class_parts=parts))


@pytest.mark.parametrize("name", ["cluttered_2528_gpu", "sc2_gpu"])
def test_the_paper_scale_recipes_have_the_reference_batch_and_a_locator_that_learns(
    name: str,
) -> None:
    """The reference's batch is 100 in all, not per worker; the heat map's cell needs the
    score-function term (the guard would refuse it otherwise)."""
    config = make_recipe(name, "data/x/v0001", {})
    assert config.batch_size * config.num_workers == 100
    assert config.model_cfg["locator"] == "heatmap" and config.objective.score_weight > 0
    assert config.use_gpu and config.model_cfg["window"] == 64


@pytest.mark.parametrize("job", ["jobs.train", "jobs.evaluate"])
def test_a_dataset_root_means_the_version_its_latest_names(job: str, tmp_path: Path) -> None:
    """``--dataset ROOT`` follows ``ROOT/latest.json`` (as predict and promote do): the error
    about the (deliberately unreadable) version names the version it resolved to."""
    (tmp_path / "v0002").mkdir()
    (tmp_path / "latest.json").write_text(json.dumps({"version": "v0002"}))
    (tmp_path / "v0002" / "manifest.json").write_text(json.dumps({"version": "v0002"}))
    args = ["--dataset", str(tmp_path)]
    args += ["--recipe", "tiny_cpu"] if job == "jobs.train" else ["--model", "models:/m/1"]
    done = run_job(job, *args)
    assert done.returncode == 2
    assert f"dataset {tmp_path}/v0002 has schema version None" in done.stderr


def test_print_config_shows_the_resolved_configuration() -> None:
    done = _train("--recipe", "tiny_cpu", "--set", "model_cfg.inhibit_return=no", "--print-config")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert config["model_cfg"]["inhibit_return"] is False and config["model"] == "saccader_test"


def test_train_images_caps_what_an_epoch_reads() -> None:
    assert make_recipe("tiny_cpu", "d", {}).images_per_epoch(500) == 500
    capped = make_recipe("tiny_cpu", "d", {"train_images": "40"})
    assert capped.images_per_epoch(500) == 40 and capped.images_per_epoch(30) == 30
    with pytest.raises(ValueError, match="train_images must be >= 1"):
        make_recipe("tiny_cpu", "d", {"train_images": "0"})


def test_overrides_are_typed_and_reach_the_model_config() -> None:
    config = make_recipe(
        "tiny_cpu",
        "d",
        {
            "epochs": "3",
            "use_gpu": "false",
            "lr": "0.01",
            "model_cfg.glimpses": "3",
            "model_cfg.encoder_blocks": "1,1",
        },
    )
    assert (config.epochs, config.use_gpu, config.lr) == (3, False, 0.01)
    assert config.model_cfg["glimpses"] == 3
    assert config.model_cfg["encoder_blocks"] == (1, 1)
    objective = make_recipe("tiny_cpu", "d", {"objective.kind": "product"}).objective
    assert objective.kind == "product"
    kl = make_recipe("tiny_cpu", "d", {"objective.kl_weight": "0.25"}).objective.kl_weight
    assert kl == 0.25


def test_the_objective_is_one_dataclass_and_old_layouts_still_load() -> None:
    """`TrainConfig.objective` is the `ObjectiveConfig` the loss takes (no copied fields); a
    config saved flat (registered models and checkpoints of earlier versions) loads into it."""
    config = make_recipe("megapixel_cpu", "d", {})
    assert TrainConfig.from_dict(config.to_dict()) == config
    flat = {k: v for k, v in config.to_dict().items() if k != "objective"}
    flat.update(
        objective="additive",
        kl_weight=0.1,
        recon_weight=0.01,
        aux_weight=1.0,
        score_weight=0.0,
        locate_weight=5.0,
        glimpse_objects=True,
        guide_glimpses=True,
    )
    assert TrainConfig.from_dict(flat) == config


@pytest.mark.parametrize(
    ("model_cfg", "message"),
    [
        ({"glimpses": "2"}, "model_cfg.glimpses='2' is not of type int"),
        ({"inhibit_return": 1}, "model_cfg.inhibit_return=1 is not of type bool"),
        ({"glimpses": True}, "model_cfg.glimpses=True is not of type int"),
        ({"wings": 2}, r"unknown saccader_test settings \['wings'\]"),
    ],
)
def test_model_settings_are_typed_however_the_config_is_made(model_cfg: dict, message: str) -> None:
    """Not only `--set`: a config built in code or loaded is checked against the model's config
    dataclass (ints pass as floats, lists as tuples: what JSON gives back)."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(dataset="d", model="saccader_test", model_cfg=model_cfg)
    loaded = TrainConfig(
        dataset="d", model="saccader_test", model_cfg={"encoder_blocks": [1, 1], "init_noise": 0}
    )
    assert loaded.model_cfg == {"encoder_blocks": (1, 1), "init_noise": 0.0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": "many"}, "setting epochs='many' is not a valid int"),
        ({"epoch": "3"}, "unknown setting 'epoch'"),
        ({"objective.kind": "sum"}, "objective.kind='sum' must be one of product, additive"),
        ({"objective": "product"}, "setting 'objective' is now 'objective.kind'"),
        ({"kl_weight": "0.1"}, "setting 'kl_weight' is now 'objective.kl_weight'"),
        ({"objective.beta": "1"}, "unknown setting 'objective.beta'"),
        ({"batch_size": "0"}, "batch_size must be >= 1"),
        ({"use_gpu": "maybe"}, "must be one of true/false/1/0/yes/no"),
    ],
)
def test_bad_overrides(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_recipe("tiny_cpu", "d", overrides)


def test_unknown_recipe_cli() -> None:
    assert_clear_failure(_train("--recipe", "huge", "--dataset", "x"), "unknown recipe 'huge'")


def test_missing_dataset_version_cli(tmp_path: Path) -> None:
    result = _train("--recipe", "tiny_cpu", "--dataset", str(tmp_path / "v0009"))
    assert_clear_failure(result, "no published dataset version")


def test_schema_mismatch_cli(tmp_path: Path) -> None:
    staging = Staging.create(str(tmp_path), "v0001")
    os.makedirs(os.path.join(staging.path, "split=train"))
    old = IMAGE_SCHEMA.remove(IMAGE_SCHEMA.get_field_index("proxy"))  # a column short
    write_parquet(
        staging.fs, os.path.join(staging.path, "split=train", "part-0.parquet"), old.empty_table()
    )
    staging.publish(manifest(class_names=[]))
    result = _train("--recipe", "tiny_cpu", "--dataset", str(tmp_path / "v0001"))
    assert_clear_failure(result, "column 'proxy' is missing")


def _tiny_version(root: Path) -> str:
    """A real published version built with the pipeline's stages (no Ray)."""
    import numpy as np

    from pipelines.build import write_shard
    from pipelines.digits import load_digits, split_digits
    from pipelines.sources import generate_rows

    staging = Staging.create(str(root), "v0001")
    table = generate_rows(
        {"id": np.arange(2)},
        source="cluttered_mnist",
        params={"original_size": 128},
        pools=split_digits(load_digits(), seed=0),
        seed=0,
        counts={"train": 2},
        tile_size=64,
        tile_format="png",
    )
    write_shard(table, staging_url=staging.path)
    staging.publish(manifest(class_names=[""] * 55))
    return str(root / "v0001")


def test_unknown_model_setting_cli(tmp_path: Path) -> None:
    dataset = _tiny_version(tmp_path)
    result = _train("--recipe", "tiny_cpu", "--dataset", dataset, "--set", "model_cfg.wings=2")
    assert_clear_failure(result, "unknown saccader_test settings ['wings']")


def test_box_curriculum_shrinks_training_boxes_and_leaves_the_config() -> None:
    from model.step import BoxCurriculum
    from model.variants import create_model

    model = create_model(
        "saccader_test",
        num_classes=3,
        in_channels=1,
        min_image_fraction=0.2,
        max_image_fraction=0.3,
    )
    config = make_recipe("tiny_cpu", "d", {"curriculum_steps": "4", "curriculum_start": "0.6"})
    curriculum = BoxCurriculum(config.curriculum_start, config.curriculum_steps)
    proxy_BCHW, images_BCHW = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 32, 32)
    sides = {}
    for mode in ("train", "eval"):
        getattr(model, mode)()
        sides[mode] = []
        for step in range(6):
            curriculum.apply(model, step)
            with torch.no_grad():
                boxes_BT4 = model(proxy_BCHW, TensorRegionReader(images_BCHW)).boxes_BT4
            sides[mode].append(float((boxes_BT4[..., 2] - boxes_BT4[..., 0]).max()))
    # training boxes: 0.6 at step 0, halfway at step 2, the model's own (≤ 0.3) from step 4
    assert sides["train"][0] == pytest.approx(0.6)
    assert 0.3 < sides["train"][2] <= 0.45 + 1e-6
    assert max(sides["train"][4:]) <= 0.3 + 1e-6
    assert max(sides["eval"]) <= 0.3 + 1e-6  # evaluation: the config's sides throughout
    assert (model.config.min_image_fraction, model.config.max_image_fraction) == (0.2, 0.3)
    # a model without boxes is left alone
    BoxCurriculum(0.6, 4).apply(create_model("proxy_only_test", num_classes=3, in_channels=1), 0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model_cfg.locator": "heatmap"},
        {"model": "saccader_heatmap_test"},  # a variant whose own default is the heat map
        {"model": "saccader_heatmap_test", "objective.kind": "product"},
    ],
)
def test_a_heat_map_that_nothing_teaches_is_refused(overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="learns where to look only from the score-function"):
        make_recipe("tiny_cpu", "d", overrides)
    for teacher in ("objective.score_weight", "objective.locate_weight"):
        make_recipe("tiny_cpu", "d", {**overrides, teacher: "1"})
    make_recipe("tiny_cpu", "d", {**overrides, "model_cfg.straight_through": "true"})


def test_a_recipe_registers_under_its_own_name_unless_told() -> None:
    """A smoke run in the production name would become a promotion candidate."""
    assert make_recipe("tiny_cpu", "d", {}).registered_model == "tiny_cpu"
    told = make_recipe("tiny_cpu", "d", {"registered_model": "saccade"})
    assert told.registered_model == "saccade"


def test_data_spec_reads_the_layouts_saved_models_carry() -> None:
    """Checkpoints and registered models store the DataSpec as a dict; older ones lack the later
    fields (and the first lacked class_parts and label_counts)."""
    from jobs.training.recipes import DataSpec

    spec = DataSpec(num_classes=3, channels=1, class_names=["a", "b", "c"], label_counts=[0, 1, 2])
    assert DataSpec.from_dict(spec.to_dict()) == spec
    old = DataSpec.from_dict({"num_classes": 3, "class_names": ["a", "b", "c"], "channels": 1})
    assert old.class_parts == [] and old.label_counts is None
