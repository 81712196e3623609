"""The model's input carries binary tiles without loss through MLflow's pyfunc.

All-black and all-white images, tiled raw, png and jpeg, are predicted through `pyfunc.predict`
by a model that reads the full-resolution tiles and by one that reads the stored level (raw:
all-black level tiles are all NUL bytes). `jobs.ops.prediction.Predictor` gives every image its
own result: a row the model cannot predict is that row's `error`, the others are kept.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pytest
import torch
from mlflow.models import infer_signature
from pyfunc_support import SIDE, image_requests, save_tiny_pyfunc, solid_image

from jobs.core.data import table_to_batch
from jobs.core.packaging import (
    _pyfunc_arguments,
    _shipped_code_importable,
    model_frame,
    pack_tiles,
    unpack_tiles,
)
from jobs.ops.prediction import Predictor, PredictRequest
from pipelines.schema import MODEL_INPUT_COLUMNS

FORMATS = ("raw", "png", "jpeg")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved pyfunc per kind of read ("full", "level")."""
    root = tmp_path_factory.mktemp("models")
    example = image_requests(root / "example", {"grey.png": solid_image(128)}, "png")
    paths = {}
    for reads in ("full", "level"):
        paths[reads] = root / reads
        save_tiny_pyfunc(paths[reads], reads=reads, example=example)
    return paths


def _expected(pyfunc: mlflow.pyfunc.PyFuncModel, rows: pa.Table) -> np.ndarray:
    """The probabilities of the model itself on the stored rows (no MLflow in between)."""
    prediction = pyfunc.unwrap_python_model().model.predict(table_to_batch(rows))
    return prediction.logits_BK.softmax(dim=1).detach().numpy()


@pytest.mark.parametrize("reads", ["full", "level"])
@pytest.mark.parametrize("tile_format", FORMATS)
def test_black_and_white_images_through_pyfunc_predict(
    models: dict[str, Path], tmp_path: Path, reads: str, tile_format: str
) -> None:
    images = {"black.png": solid_image(0), "white.png": solid_image(255)}
    rows = image_requests(tmp_path, images, tile_format)
    level = rows.column("level_tiles").to_pylist()
    assert level[0][0] == b"\0" * (SIDE // 8) ** 2 * 3  # the black level tile: all NUL bytes
    if tile_format == "raw":
        assert set(rows.column("tiles").to_pylist()[0][-1]) == {0}
    pyfunc = mlflow.pyfunc.load_model(str(models[reads]))
    out = pyfunc.predict(model_frame(rows))
    np.testing.assert_allclose(np.stack(out["probabilities"]), _expected(pyfunc, rows), atol=1e-6)
    assert [len(b) for b in out["boxes"]] == [2, 2]


def test_packed_tiles_round_trip_and_refuse_other_bytes() -> None:
    for tiles in ([], [b""], [b"\0\0", b"a", b""], [b"\xff" * 300] * 4):
        assert unpack_tiles(pack_tiles(tiles)) == tiles
    packed = pack_tiles([b"ab\0"])
    for bad in (b"", b"\1\0\0", b"\5\0\0\0", packed[:-1], packed + b"\0"):
        with pytest.raises(ValueError, match="not a packed tile list"):
            unpack_tiles(bad)


def _predict(model: Path, requests: pa.Table) -> dict[str, dict]:
    predictor = Predictor(model_uri=str(model), tracking_uri="file:///nonexistent-unused")
    return {r["image_id"]: r for r in predictor(requests).to_pylist()}


def test_a_dark_image_among_good_ones_is_predicted(models: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = {f"good{i}.png": rng.integers(0, 256, (SIDE, SIDE, 3), np.uint8) for i in range(2)}
    images["dark.png"] = solid_image(0)
    requests = image_requests(tmp_path / "photos", images, "jpeg")  # jobs.predict's default
    rows = _predict(models["level"], requests)
    assert sorted(rows) == sorted(images)
    for row in rows.values():
        assert row["error"] is None and len(row["probabilities"]) == 3


def test_a_row_the_model_cannot_read_is_its_own_error(
    models: dict[str, Path], tmp_path: Path
) -> None:
    images = {"a.png": solid_image(40), "broken.png": solid_image(90), "c.png": solid_image(200)}
    requests = image_requests(tmp_path, images, "png")
    broken = requests.column("tiles").to_pylist()
    broken[1] = [b"not a png"] * len(broken[1])  # decodes only when the model reads it
    column = requests.schema.get_field_index("tiles")
    requests = requests.set_column(column, "tiles", pa.array(broken, pa.list_(pa.binary())))
    rows = _predict(models["full"], requests)
    assert "cannot decode png tile" in rows["broken.png"]["error"]
    assert rows["broken.png"]["label"] is None
    for name in ("a.png", "c.png"):
        assert rows[name]["error"] is None and rows[name]["label"] is not None


def test_a_model_with_list_columns_is_predicted_without_loss(tmp_path: Path) -> None:
    """Models packaged before the packed columns (a signature of list-of-binary columns)."""
    import torch

    from jobs.training.recipes import DataSpec, build_model, make_recipe

    rows = image_requests(tmp_path / "in", {"black.png": solid_image(0)}, "raw")
    config = make_recipe("tiny_cpu", "unused", {"model_cfg.pooled_level": "1"})
    data = DataSpec(num_classes=3, class_names=["a", "b", "c"], channels=3)
    state = {"model": build_model(config, data).state_dict(), "train": config.to_dict()}
    torch.save({**state, "data": data.to_dict()}, tmp_path / "state.pt")
    arguments = _pyfunc_arguments(str(tmp_path / "state.pt"), rows, str(tmp_path))
    arguments["signature"] = infer_signature(model_frame(rows, MODEL_INPUT_COLUMNS))
    del arguments["input_example"]  # of the packed columns
    with _shipped_code_importable(str(tmp_path)):
        mlflow.pyfunc.save_model(str(tmp_path / "old"), **arguments)
    predicted = _predict(tmp_path / "old", rows)
    assert predicted["black.png"]["error"] is None


def test_prediction_actors_load_the_model_on_the_device_they_are_given(
    models: dict[str, Path],
) -> None:
    """`--actor-gpus` makes each actor load the model on its GPU: the device reaches the
    pyfunc (here, with no GPU, as the error that says so)."""
    assert PredictRequest(model_uri="m", out="o", images="i").device == "cpu"
    assert PredictRequest(model_uri="m", out="o", images="i", actor_gpus=0.5).device == "cuda"
    predictor = Predictor(model_uri=str(models["full"]), tracking_uri="file:///unused")
    assert predictor.pyfunc.unwrap_python_model().device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="asked to load on cuda, but torch sees no GPU"):
            Predictor(model_uri=str(models["full"]), tracking_uri="file:///unused", device="cuda")


def test_a_prediction_request_refuses_settings_no_model_reads() -> None:
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        PredictRequest(model_uri="m", out="o", images="i", channels=2)
    with pytest.raises(ValueError, match=r"--tile-size must be >= 16 .* got 8"):
        PredictRequest(model_uri="m", out="o", images="i", tile_size=8)
    PredictRequest(model_uri="m", out="o", dataset="d", tile_size=8)  # unused for stored rows
