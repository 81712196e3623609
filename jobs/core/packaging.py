"""The trained model as an MLflow pyfunc: rows of the dataset contract in, predictions out.

Input: a DataFrame of the contract's model-input columns (`pipelines.schema.MODEL_INPUT_COLUMNS`)
in which each row's list of tiles travels as one binary value (`PACKED`: `tiles_packed`,
`level_tiles_packed`; `model_frame` builds it). Output: one row per image with `label`,
`label_name`, `probabilities` and, for the saccader, the glimpse `boxes` (normalised y0, x0, y1,
x1, the model's order). The state dict, the model's name and
config and the class names travel in one artifact.

How it is logged: models-from-code (`MODEL_CODE`, no pickled object), with the project's code
shipped under the one package `saccade` (`ship_code`: `saccade.model`, `saccade.pipelines`, ...,
their imports rewritten), so a process that loads the model gains one top-level name, not
`model`, `jobs` and `pipelines` beside its own. It loads on the device its `model_config`
names (`device`: `auto`, as logged, takes the GPU where there is one; MLflow also logs it as a
run parameter, outside what a resumed run compares). The stored input example is one image cut
down to a tile (`small_example`), not a dataset row of megabytes.

Why packed: MLflow 3.17's schema enforcement turns an array-of-binary column into fixed-width
numpy bytes (`_enforce_array`), which drops every tile's trailing NUL bytes (a raw tile that ends
in black), and its scoring server does not base64-decode binary items inside arrays. A scalar
binary column passes `pyfunc.predict` untouched and is base64-decoded by `mlflow models serve`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from jobs.core.data import table_to_batch
from jobs.store import tracking_uri
from jobs.training.recipes import DataSpec, TrainConfig, build_model
from pipelines.codec import encode_tiles
from pipelines.region import TiledImage, read_region
from pipelines.schema import MODEL_INPUT_COLUMNS
from pipelines.tiling import encode_proxy, level_columns, make_proxy

# Each row's list of tiles as one binary value (see the module docstring).
PACKED = {"tiles": "tiles_packed", "level_tiles": "level_tiles_packed"}
MODEL_COLUMNS = [PACKED.get(c, c) for c in MODEL_INPUT_COLUMNS]
STATE_ARTIFACT = "state"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What the model ships of the project, as `NAMESPACE.<package>`.
NAMESPACE = "saccade"
SHIPPED_PACKAGES = ("model", "pipelines", "jobs", "infra")
_TOP_IMPORT = re.compile(rf"^(\s*)(from|import) ({'|'.join(SHIPPED_PACKAGES)})\b", re.MULTILINE)
# The file MLflow runs to make the model (models-from-code); `saccade` is the shipped code.
MODEL_CODE = f'''"""The saccade classifier as an MLflow pyfunc (models-from-code)."""

from mlflow.models import set_model

from {NAMESPACE}.jobs.core.packaging import SaccadePyfunc

set_model(SaccadePyfunc())
'''
DEVICE_AUTO = "auto"

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
    for name in MODEL_INPUT_COLUMNS:
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


def small_example(rows: pa.Table) -> pa.Table:
    """The stored input example: the first of `rows` cut to its top-left tile (at most one
    `tile_size` square), re-tiled in its format, with a proxy at the row's proxy scale and the
    pooled level made from that crop. Kilobytes, whatever the dataset's images weigh."""
    row = rows.slice(0, 1).to_pylist()[0]
    image = TiledImage(
        **{k: row[k] for k in ("height", "width", "channels", "tile_size", "tile_format")},
        tiles=row["tiles"],
    )
    size = row["tile_size"]
    crop = read_region(image, [0, 0, min(size, row["height"]), min(size, row["width"])])
    proxy_scale = max(row["proxy_height"], row["proxy_width"]) / max(row["height"], row["width"])
    proxy = make_proxy(crop, max_side=max(8, round(max(crop.shape[:2]) * proxy_scale)))
    out = {
        "height": crop.shape[0],
        "width": crop.shape[1],
        "channels": crop.shape[2],
        "tile_size": size,
        "tile_format": row["tile_format"],
        "tiles": encode_tiles(crop, tile_size=size, tile_format=row["tile_format"]),
        **level_columns(crop, tile_size=size),
        "proxy": encode_proxy(proxy),
        "proxy_height": proxy.shape[0],
        "proxy_width": proxy.shape[1],
    }
    return pa.Table.from_pylist([out])


def ship_code(directory: str) -> str:
    """Copy the project's packages (their .py files) into `directory/saccade`, their imports of
    each other rewritten into that namespace; returns the folder (what the model's code_paths
    names)."""
    root = os.path.join(directory, NAMESPACE)
    os.makedirs(root)
    with open(os.path.join(root, "__init__.py"), "w") as f:
        f.write('"""The saccade project\'s code, as its registered models ship it."""\n')
    for package in SHIPPED_PACKAGES:
        for folder, subfolders, files in os.walk(os.path.join(_REPO, package)):
            subfolders[:] = [d for d in subfolders if d != "__pycache__"]
            target = os.path.join(root, os.path.relpath(folder, _REPO))
            os.makedirs(target, exist_ok=True)
            for name in (f for f in files if f.endswith(".py")):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    source = namespaced(f.read(), os.path.join(folder, name))
                with open(os.path.join(target, name), "w", encoding="utf-8") as f:
                    f.write(source)
    return root


def namespaced(source: str, name: str = "<source>") -> str:
    """`source` with `from model... import` (and the other shipped packages) read from
    `saccade.model...`. A plain `import model.x` would bind another name: refused."""

    def rewrite(match: re.Match[str]) -> str:
        indent, keyword, package = match.groups()
        if keyword == "import":
            raise ValueError(
                f"{name}: `import {package}` cannot be shipped under {NAMESPACE}: "
                f"write `from {package}... import ...`"
            )
        return f"{indent}from {NAMESPACE}.{package}"

    return _TOP_IMPORT.sub(rewrite, source)


def load_device(requested: str | None) -> torch.device:
    """The device a model loads on: `auto` (or none) takes the GPU where there is one."""
    if requested in (None, "", DEVICE_AUTO):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"the model was asked to load on {requested}, but torch sees no GPU")
    return device


class SaccadePyfunc(PythonModel):
    """Loads the model from its state artifact on the device its model_config names; predicts
    in batches, deterministically."""

    def load_context(self, context: Any) -> None:
        config = getattr(context, "model_config", None) or {}
        self.device = load_device(config.get("device"))
        state = torch.load(
            context.artifacts[STATE_ARTIFACT], map_location="cpu", weights_only=False
        )
        data = DataSpec.from_dict(state["data"])
        self.model = build_model(TrainConfig.from_dict(state["train"]), data)
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        self.class_names = data.class_names

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        table = rows_table(model_input)
        frames = [self._predict_table(table.slice(i, 16)) for i in range(0, table.num_rows, 16)]
        return pd.concat(frames, ignore_index=True)

    def _predict_table(self, table: pa.Table) -> pd.DataFrame:
        prediction = self.model.predict(table_to_batch(table, device=self.device))
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
    GPU host restoring the environment must get its own build of the same release. MLflow is
    its skinny half (the same release): loading, predicting and `mlflow models serve` need no
    tracking server, UI or scikit-learn, and a restored environment is 0.3 GB lighter."""
    from importlib.metadata import version

    return [
        f"{name}=={public_version(version(name))}"
        for name in ("torch", "mlflow-skinny", "pyarrow", "pillow", "numpy", "pandas")
    ]


def public_version(version: str) -> str:
    """``2.13.0+cpu`` → ``2.13.0`` (PEP 440: the part after ``+`` is a local label)."""
    return version.split("+", 1)[0]


def _pyfunc_arguments(state_path: str, example: pa.Table, directory: str) -> dict[str, Any]:
    """What `log_model` and `save_model` take: the model's code file, its artifact, signature,
    input example, shipped code and pins (`directory`: a scratch folder for the code files)."""
    from mlflow.models import infer_signature

    # Known and intended: integer columns (never missing here). MLflow 3.17 compares a frame's
    # columns with a range when it stores any DataFrame example, which pandas 3 deprecates.
    warnings.filterwarnings("ignore", message=".*(integer column|Operation with range).*")
    model = SaccadePyfunc()
    model.load_context(type("Ctx", (), {"artifacts": {STATE_ARTIFACT: state_path}})())
    frame = model_frame(small_example(example))
    code_file = os.path.join(directory, "saccade_model.py")
    with open(code_file, "w", encoding="utf-8") as f:
        f.write(MODEL_CODE)
    return {
        "python_model": code_file,
        "artifacts": {STATE_ARTIFACT: state_path},
        # What `load_model(..., model_config=...)` may override (MLflow takes only logged keys).
        "model_config": {"device": DEVICE_AUTO},
        "signature": infer_signature(frame, model.predict(None, frame)),
        "input_example": frame,
        "code_paths": [ship_code(directory)],
        # Stated, not inferred: inference would load the model in a subprocess per run.
        "pip_requirements": _requirements(),
    }


@contextlib.contextmanager
def _shipped_code_importable(directory: str) -> Iterator[None]:
    """MLflow runs the model's code file when it logs it: the shipped `saccade` must import
    then. The path and the modules go again afterwards; this process keeps its own copy."""
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        sys.path.remove(directory)
        for name in [m for m in sys.modules if m == NAMESPACE or m.startswith(NAMESPACE + ".")]:
            del sys.modules[name]


@contextlib.contextmanager
def _staged(state: dict[str, Any], example: pa.Table) -> Iterator[dict[str, Any]]:
    """The pyfunc's arguments over a scratch folder (the state, the code file, the shipped
    code), that code importable while MLflow saves or logs them."""
    with tempfile.TemporaryDirectory() as directory:
        state_path = os.path.join(directory, "state.pt")
        torch.save(state, state_path)
        arguments = _pyfunc_arguments(state_path, example, directory)
        with _shipped_code_importable(directory):
            yield arguments


def save_pyfunc(state: dict[str, Any], example: pa.Table, path: str) -> None:
    """Write the pyfunc to the local folder `path` (what `log_and_register` logs)."""
    import mlflow

    with _staged(state, example) as arguments:
        mlflow.pyfunc.save_model(path, **arguments)


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
    with _staged(state, example) as arguments, mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", registered_model_name=registered_model, **arguments
        )
        linked = {k.replace("/", "_"): v for k, v in validation.items() if k.startswith("val/")}
        if linked:
            mlflow.log_metrics(linked, step=int(state.get("epoch", 0)), model_id=info.model_id)
    return str(info.registered_model_version)
