"""The trained model as an MLflow pyfunc: rows of the dataset contract in, predictions out.

Input: a DataFrame of the schema-v2 image columns (`INPUT_COLUMNS`) in which each row's list of
tiles travels as one binary value (`PACKED`: `tiles_packed`, `level_tiles_packed`; `model_frame`
builds it). Output: one row per image with `label`, `label_name`, `probabilities` and, for the
saccader, the glimpse `boxes` (normalised y0, x0, y1, x1). The state dict, the model's name and
config and the class names travel in one artifact; the project's code travels with the model
(code_paths).

Why packed: MLflow 3.17's schema enforcement turns an array-of-binary column into fixed-width
numpy bytes (`_enforce_array`), which drops every tile's trailing NUL bytes (a raw tile that ends
in black), and its scoring server does not base64-decode binary items inside arrays. A scalar
binary column passes `pyfunc.predict` untouched and is base64-decoded by `mlflow models serve`.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from jobs.store import tracking_uri
from jobs.training.data import table_to_batch

INPUT_COLUMNS = [
    "height",
    "width",
    "channels",
    "tile_size",
    "tile_format",
    "tiles",
    "level_factor",
    "level_tiles",
    "proxy",
    "proxy_height",
    "proxy_width",
]
# Each row's list of tiles as one binary value (see the module docstring).
PACKED = {"tiles": "tiles_packed", "level_tiles": "level_tiles_packed"}
MODEL_COLUMNS = [PACKED.get(c, c) for c in INPUT_COLUMNS]
STATE_ARTIFACT = "state"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency; keeps the module importable
    PythonModel = object  # type: ignore[assignment,misc]


def pack_tiles(tiles: Sequence[bytes]) -> bytes:
    """A list of tiles as one value: uint32 count, uint32 lengths, the bytes (little-endian)."""
    lengths = np.array([len(t) for t in tiles], dtype="<u4")
    return struct.pack("<I", len(tiles)) + lengths.tobytes() + b"".join(tiles)


def unpack_tiles(data: bytes) -> list[bytes]:
    """The tiles of a `pack_tiles` value; a ValueError when the value is not one."""
    count = struct.unpack_from("<I", data)[0] if len(data) >= 4 else -1
    start = 4 + 4 * count
    if count < 0 or len(data) < start:
        raise ValueError(f"not a packed tile list: {len(data)} bytes")
    tiles = []
    for length in struct.unpack_from(f"<{count}I", data, 4):
        tiles.append(data[start : start + length])
        start += length
    if start != len(data):
        raise ValueError(
            f"not a packed tile list: {count} tiles of {start - 4 - 4 * count} "
            f"bytes in {len(data)} bytes"
        )
    return tiles


def model_frame(rows: pa.Table, columns: Sequence[str] = MODEL_COLUMNS) -> pd.DataFrame:
    """The pyfunc's input for rows of the dataset contract (or prediction requests): `columns`
    (by default the packed ones; a model's signature may name the older list columns)."""
    unpacked = {packed: name for name, packed in PACKED.items()}
    frame = {}
    for column in columns:
        if column in unpacked:
            lists = rows.column(unpacked[column]).to_pylist()
            frame[column] = pd.Series([pack_tiles(t) for t in lists], dtype=object)
        else:
            frame[column] = rows.column(column).to_pandas()
    return pd.DataFrame(frame)


def rows_table(frame: pd.DataFrame) -> pa.Table:
    """The image rows of a pyfunc input frame, tiles unpacked (frames of the list columns, as
    models packaged before `PACKED` were, pass through)."""
    columns = {}
    for name in INPUT_COLUMNS:
        packed = PACKED.get(name)
        if packed in frame.columns:
            tiles = [unpack_tiles(bytes(v)) for v in frame[packed]]
            columns[name] = pa.array(tiles, pa.list_(pa.binary()))
        else:
            columns[name] = pa.array(frame[name].tolist())
    return pa.table(columns)


def request_json(rows: pa.Table) -> str:
    """A `mlflow models serve` request body (`dataframe_split`) for `rows`: binary values in
    base64, as the scoring server expects them."""
    from mlflow.utils.proto_json_utils import NumpyEncoder

    return json.dumps(
        {"dataframe_split": model_frame(rows).to_dict(orient="split")}, cls=NumpyEncoder
    )


class SaccadePyfunc(PythonModel):
    """Loads the model from its state artifact; predicts in batches, deterministically."""

    def load_context(self, context: Any) -> None:
        from jobs.training.loop import build_model
        from jobs.training.recipes import TrainConfig

        state = torch.load(
            context.artifacts[STATE_ARTIFACT], map_location="cpu", weights_only=False
        )
        self.model = build_model(TrainConfig.from_dict(state["train"]), state["data"])
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.class_names = state["data"].get("class_names")

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        table = rows_table(model_input)
        frames = [self._predict_table(table.slice(i, 16)) for i in range(0, table.num_rows, 16)]
        return pd.concat(frames, ignore_index=True)

    def _predict_table(self, table: pa.Table) -> pd.DataFrame:
        prediction = self.model.predict(table_to_batch(table))
        labels = prediction.labels_B.tolist()
        names = self.class_names
        out = {
            "label": labels,
            "label_name": [names[k] if names else str(k) for k in labels],
            "probabilities": prediction.logits_BK.softmax(dim=1).tolist(),
        }
        boxes = prediction.boxes_BT4
        out["boxes"] = boxes.tolist() if boxes is not None else [[] for _ in labels]
        return pd.DataFrame(out)


def _requirements() -> list[str]:
    """The packages the model needs, pinned at the installed releases. A local version label
    (torch's ``+cpu``) is dropped: it names a build that only the index it came from has, and a
    GPU host restoring the environment must get its own build of the same release."""
    from importlib.metadata import version

    return [
        f"{name}=={public_version(version(name))}"
        for name in ("torch", "mlflow", "pyarrow", "pillow", "numpy", "pandas")
    ]


def public_version(version: str) -> str:
    """``2.13.0+cpu`` → ``2.13.0`` (PEP 440: the part after ``+`` is a local label)."""
    return version.split("+", 1)[0]


def _pyfunc_arguments(state_path: str, example: pa.Table) -> dict[str, Any]:
    """What `log_model` and `save_model` take: the model, its artifact, signature, code, pins."""
    from mlflow.models import infer_signature

    # Known and intended: integer columns (never missing here), no stored input example (it
    # would copy image tiles into the registry), a cloudpickled python_model.
    warnings.filterwarnings("ignore", message=".*(integer column|input example).*")
    model = SaccadePyfunc()
    model.load_context(type("Ctx", (), {"artifacts": {STATE_ARTIFACT: state_path}})())
    frame = model_frame(example)
    return {
        "python_model": SaccadePyfunc(),
        "artifacts": {STATE_ARTIFACT: state_path},
        "signature": infer_signature(frame, model.predict(None, frame)),
        "code_paths": [os.path.join(_REPO, p) for p in ("model", "pipelines", "jobs")],
        # Stated, not inferred: inference would load the model in a subprocess per run.
        "pip_requirements": _requirements(),
    }


def save_pyfunc(state: dict[str, Any], example: pa.Table, path: str) -> None:
    """Write the pyfunc to the local folder `path` (what `log_and_register` logs)."""
    import mlflow

    with tempfile.TemporaryDirectory() as directory:
        state_path = os.path.join(directory, "state.pt")
        torch.save(state, state_path)
        mlflow.pyfunc.save_model(path, **_pyfunc_arguments(state_path, example))


def log_and_register(
    state: dict[str, Any],
    example: pa.Table,
    *,
    run_id: str,
    registered_model: str,
    validation: Mapping[str, float],
) -> str:
    """Log the pyfunc (with its signature) to the run, register it; returns the model version.
    `validation` (``val/*`` of the last epoch) is linked to the logged model as ``val_*``, so
    MLflow's Models tab shows it (the run's per-epoch ``val/*`` history stays as it was)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "state.pt")
        torch.save(state, path)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                registered_model_name=registered_model,
                **_pyfunc_arguments(path, example),
            )
            linked = {k.replace("/", "_"): v for k, v in validation.items() if k.startswith("val/")}
            if linked:
                mlflow.log_metrics(linked, step=int(state.get("epoch", 0)), model_id=info.model_id)
    return str(info.registered_model_version)
