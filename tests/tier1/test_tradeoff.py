"""Tier 1: the trade-off benchmark's parts without Ray: the model plan, the looked fraction, the
row layout, the per-request measurement, and bad input on the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_support import assert_clear_failure, run_job

from jobs.benchmarks._common import infer_stored, time_inference
from jobs.benchmarks._tradeoff import ROW_FIELDS, tradeoff_row, union_area
from jobs.benchmarks.tradeoff import State, _tags, plan_models
from model.variants import create_model
from pipelines.region import TiledImage
from pipelines.tiling import encode_proxy, make_proxy


def test_plan_one_row_per_saccader_seed_and_one_per_baseline() -> None:
    plans = plan_models("data/x/v0001", ["tiny_cpu", "tiny_cpu_proxy_only"], [3, 4], {})
    assert [(p.recipe, p.seed, p.kind) for p in plans] == [
        ("tiny_cpu", 3, "saccader"),
        ("tiny_cpu", 4, "saccader"),
        ("tiny_cpu_proxy_only", 3, "proxy-only"),
    ]
    assert plans[0].overrides == {"registered_model": "tradeoff-tiny_cpu", "seed": "3"}
    assert len({p.key for p in plans}) == len({p.run_name for p in plans}) == 3
    # Other settings or another dataset are other models (other run names: no false resume).
    again = plan_models("data/x/v0001", ["tiny_cpu"], [3], {})[0]
    other = plan_models("data/x/v0001", ["tiny_cpu"], [3], {"epochs": "1"})[0]
    elsewhere = plan_models("data/x/v0002", ["tiny_cpu"], [3], {})[0]
    assert again.key == plans[0].key
    tagged = plan_models("data/x/v0001", ["tiny_cpu"], [3], {}, tag="v2")[0]
    assert len({plans[0].key, other.key, elsewhere.key, tagged.key}) == 4
    assert other.overrides["epochs"] == "1"
    assert tagged.overrides == plans[0].overrides  # a tag renames, it changes no setting
    assert tagged.run_name.startswith("tradeoff-tiny_cpu-v2-seed3-")
    # Keys are what resumes a recorded run: an untagged key must not change between versions.
    assert again.key == "tiny_cpu-seed3-1173c182cc"


def test_a_recipe_tag_renames_that_recipes_models_only() -> None:
    """--tag RECIPE=TAG: new models for a changed recipe, the others keep their keys."""
    recipes = ["tiny_cpu", "tiny_cpu_proxy_only"]
    untagged = plan_models("data/x/v0001", recipes, [3], {})
    tags = _tags("tiny_cpu=v2", recipes)
    assert tags == {"tiny_cpu": "v2"}
    tagged = plan_models("data/x/v0001", recipes, [3], {}, tags)
    assert tagged[0].key.startswith("tiny_cpu-v2-seed3-") and tagged[0].key != untagged[0].key
    assert tagged[1].key == untagged[1].key
    assert _tags("v2", recipes) == "v2"
    with pytest.raises(ValueError, match="'nope' is not one of --recipes"):
        _tags("nope=v2", recipes)
    with pytest.raises(ValueError, match="letters, digits"):
        _tags("tiny_cpu=", recipes)
    with pytest.raises(ValueError, match="RECIPE=TAG pairs only"):
        _tags("tiny_cpu=v2,v3", recipes)


@pytest.mark.parametrize(
    ("recipes", "overrides", "match"),
    [
        (["nope"], {}, "unknown recipe 'nope'"),
        (["tiny_cpu"], {"seed": "2"}, "use --seeds"),
        (["tiny_cpu"], {"epochs": "zero"}, "epochs"),
    ],
)
def test_plan_refuses_bad_settings(recipes: list[str], overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_models("data/x/v0001", recipes, [0], overrides)


def _raster_union(boxes: list[list[float]], n: int = 400) -> float:
    grid = np.zeros((n, n), dtype=bool)
    centres = (np.arange(n) + 0.5) / n
    for y0, x0, y1, x1 in boxes:
        rows = (centres >= y0) & (centres < y1)
        cols = (centres >= x0) & (centres < x1)
        grid |= rows[:, None] & cols[None, :]
    return float(grid.mean())


def test_union_area() -> None:
    assert union_area([[0.1, 0.2, 0.3, 0.5]]) == pytest.approx(0.2 * 0.3)
    assert union_area([[0.0, 0.0, 0.5, 0.5]] * 3) == pytest.approx(0.25)  # repeats count once
    assert union_area([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]]) == pytest.approx(0.4375)
    assert union_area([[-0.5, -0.5, 0.5, 0.5]]) == pytest.approx(0.25)  # clipped to the image
    rng = np.random.default_rng(0)
    for _ in range(20):
        corners = rng.random((4, 2, 2))
        boxes = [[*c.min(0), *c.max(0)] for c in corners]  # (y0, x0), (y1, x1)
        assert union_area(boxes) == pytest.approx(_raster_union(boxes), abs=0.01)


def _row(**evaluation: float | None) -> dict:
    return tradeoff_row(
        model="proxy-only",
        recipe="r",
        seed=0,
        training={"train_seconds": 20.0, "epochs": 2, "model_uri": "models:/m/1", "run_id": "a"},
        evaluation={"accuracy": 0.5, **evaluation},
        measured={
            "ms_per_image_b1": 3.0,
            "ms_per_image_b16": 1.0,
            "peak_mb_b1": 10.0,
            "peak_mb_b16": 40.0,
            "looked_fraction": None,
            "tiles_decoded_fraction": 0.0,
        },
        train_images=100,
    )


def test_row_has_exactly_the_fields_with_their_types() -> None:
    row = _row()
    assert tuple(row) == ROW_FIELDS
    assert row["hit_rate"] is None and row["centred_hit_rate"] is None
    assert row["looked_fraction"] is None
    assert row["train_samples_per_s"] == pytest.approx(2 * 100 / 20.0)
    assert isinstance(row["epochs"], int) and isinstance(row["seed"], int)
    glimpsed = _row(hit_rate=0.3, centred_hit_rate=0.1)
    assert (glimpsed["hit_rate"], glimpsed["centred_hit_rate"]) == (0.3, 0.1)


def test_state_keeps_finished_phases(tmp_path) -> None:
    state = State(tmp_path / "s")
    assert state.load("k") == {}
    state.save("k", {"train": {"run_id": "a"}})
    assert State(tmp_path / "s").load("k") == {"train": {"run_id": "a"}}
    assert not list((tmp_path / "s" / "rows").glob("*.tmp"))


def _stored(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        image = rng.integers(0, 256, (128, 128, 1), dtype=np.uint8)
        tiled = TiledImage.from_array(image, tile_size=32, tile_format="png")
        rows.append({"tiled": tiled, "proxy": encode_proxy(make_proxy(image, max_side=16))})
    return rows


@pytest.mark.parametrize(
    ("model", "tiles_per_image"),
    [("proxy_only_test", 0), ("resnet18_patches_test", 16), ("saccader_test", None)],
)
def test_requests_from_stored_rows_count_the_tiles_they_decode(
    model: str, tiles_per_image: int | None
) -> None:
    torch.manual_seed(0)
    net = create_model(model, num_classes=10, in_channels=1).eval()
    rows = _stored(3)
    prediction, decoded = infer_stored(net, rows, threads=1)
    assert prediction.labels_B.shape == (3,) and len(decoded) == 3
    if tiles_per_image is None:  # glimpses: some tiles, fewer than the image and level hold
        assert all(0 < d < 16 + 1 for d in decoded)
        assert prediction.boxes_BT4 is not None
    else:
        assert decoded == [tiles_per_image] * 3
    timed = time_inference(net, rows, threads=1, repeats=2, max_seconds=60)
    assert timed["runs"] == 2 and timed["ms_per_image"] > 0 and timed["peak_mb"] >= 0
    assert timed["tiles_decoded_per_image"] == pytest.approx(np.mean(decoded))


def test_cli_bad_input_fails_before_any_work(tmp_path) -> None:
    missing = str(tmp_path / "none" / "v0001")
    cases = [
        (["--dataset", missing, "--recipes", "tiny_cpu"], "no published dataset version"),
        (["--dataset", missing, "--recipes", "nope"], "unknown recipe 'nope'"),
        (["--dataset", missing, "--recipes", "tiny_cpu", "--seeds", "a"], "--seeds expects"),
        (["--dataset", missing, "--recipes", "tiny_cpu", "--repeats", "0"], "--repeats"),
        (["--dataset", missing, "--recipes", "tiny_cpu", "--tag", "a b"], "--tag 'a b'"),
        (["--recipes", "tiny_cpu"], "--dataset"),
    ]
    for args, message in cases:
        assert_clear_failure(run_job("jobs.benchmark", "tradeoff", *args), message)
