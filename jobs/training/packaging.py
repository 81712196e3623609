"""The trained model as an MLflow pyfunc: rows of the dataset contract in, predictions out.

Input: a DataFrame with the schema-v2 image columns (`INPUT_COLUMNS`: the tiles and the proxy);
output: one row per image with `label`, `label_name`, `probabilities` and, for the saccader, the
glimpse `boxes` (normalised y0, x0, y1, x1). The state dict, the model's name and config and the
class names travel in one artifact; the project's code travels with the model (code_paths).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any

import pandas as pd
import pyarrow as pa
import torch

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
STATE_ARTIFACT = "state"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency; keeps the module importable
    PythonModel = object  # type: ignore[assignment,misc]


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
        table = pa.Table.from_pandas(model_input[INPUT_COLUMNS], preserve_index=False)
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
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
        for name in ("torch", "mlflow", "pyarrow", "pillow", "numpy", "pandas")
    ]


def log_and_register(
    state: dict[str, Any], example: pa.Table, *, run_id: str, registered_model: str
) -> str:
    """Log the pyfunc (with its signature) to the run, register it; returns the model version."""
    import mlflow
    from mlflow.models import infer_signature

    from jobs.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    # Known and intended: integer columns (never missing here), no stored input example (it
    # would copy image tiles into the registry), a cloudpickled python_model.
    warnings.filterwarnings("ignore", message=".*(integer column|input example).*")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "state.pt")
        torch.save(state, path)
        model = SaccadePyfunc()
        model.load_context(type("Ctx", (), {"artifacts": {STATE_ARTIFACT: path}})())
        frame = example.select(INPUT_COLUMNS).to_pandas()
        signature = infer_signature(frame, model.predict(None, frame))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=SaccadePyfunc(),
                artifacts={STATE_ARTIFACT: path},
                signature=signature,
                code_paths=[os.path.join(_REPO, p) for p in ("model", "pipelines", "jobs")],
                registered_model_name=registered_model,
                # Stated, not inferred: inference would load the model in a subprocess per run.
                pip_requirements=_requirements(),
            )
    return str(info.registered_model_version)
