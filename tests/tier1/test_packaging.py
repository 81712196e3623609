"""Tier 1: what a registered model records about its environment, and how it is logged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.models import Model
from pyfunc_support import image_requests, save_tiny_pyfunc

from jobs.core.packaging import (
    NAMESPACE,
    SHIPPED_PACKAGES,
    _requirements,
    load_device,
    namespaced,
    public_version,
    rows_table,
    unpack_tiles,
)


def test_requirements_name_public_releases_only() -> None:
    """A local label (torch's ``+cpu``) names a build PyPI does not have: restoring the model's
    environment elsewhere would fail."""
    assert public_version("2.13.0+cpu") == "2.13.0"
    assert public_version("3.17.2") == "3.17.2"
    pins = _requirements()
    assert [p.split("==")[0] for p in pins][:2] == ["torch", "mlflow-skinny"]
    assert all("+" not in p and p.count("==") == 1 for p in pins), pins


# --- How the model is logged: models-from-code, one namespace, a small stored example ----------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny saccader saved as the pyfunc, its example a 256-px image of 16-px png tiles."""
    root = tmp_path_factory.mktemp("pyfunc")
    big = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    example = image_requests(root / "example", {"big.png": big}, "png")
    save_tiny_pyfunc(root / "model", reads="full", example=example)
    return root / "model"


def test_the_model_is_logged_as_code_with_the_project_under_one_name(saved_model: Path) -> None:
    """No pickled python_model; the code the model ships is one package, `saccade`."""
    flavor = yaml.safe_load((saved_model / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor.get("model_code_path"), flavor
    assert not list(saved_model.rglob("python_model.pkl"))
    assert sorted(p.name for p in (saved_model / "code").iterdir()) == [NAMESPACE]
    shipped = (saved_model / "code" / NAMESPACE / "jobs" / "core" / "packaging.py").read_text()
    assert "from saccade.jobs.core.data import table_to_batch" in shipped
    assert "\nfrom jobs." not in shipped and "\nfrom model" not in shipped


def test_the_stored_input_example_is_one_tile(saved_model: Path) -> None:
    """The example is the first row cut to one 16-px tile: kilobytes, not the dataset's rows
    (its proxy at the row's scale, 1 px, is held at 8)."""
    example = Model.load(str(saved_model)).load_input_example(str(saved_model))
    assert example["height"].tolist() == [16] and example["width"].tolist() == [16]
    assert sum(p.stat().st_size for p in saved_model.glob("*example*.json")) < 20_000
    rows = rows_table(example)
    assert len(unpack_tiles(example["tiles_packed"][0])) == 1
    assert rows.column("proxy_height").to_pylist() == [8]


def test_loading_adds_one_top_level_name(saved_model: Path, tmp_path: Path) -> None:
    """Loaded in a fresh process (not the repo's folder), the model imports its code as
    `saccade.*`: none of the project's top-level packages, which would shadow or be shadowed
    by the loader's own `model` or `jobs`; it predicts its stored example on the CPU."""
    script = f"""
import sys
import mlflow
from mlflow.models import Model
model = mlflow.pyfunc.load_model({str(saved_model)!r})
example = Model.load({str(saved_model)!r}).load_input_example({str(saved_model)!r})
out = model.predict(example)
assert out["label_name"][0] in ("a", "b", "c"), out
inner = model.unwrap_python_model()
print(type(inner).__module__, inner.device)
print(sorted({{m.split(".")[0] for m in sys.modules}} & set({list(SHIPPED_PACKAGES)!r})))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    module_line, names_line = done.stdout.strip().splitlines()[-2:]
    assert module_line == "saccade.jobs.core.packaging cpu"
    assert names_line == "[]"


def test_namespaced_rewrites_imports_of_the_shipped_packages_only() -> None:
    source = (
        "from model.saccader import Saccader\n"
        "    from jobs.training.loop import build_model\n"
        "from modelling import x\n"
        "from pipelines import codec\n"
    )
    assert namespaced(source) == (
        "from saccade.model.saccader import Saccader\n"
        "    from saccade.jobs.training.loop import build_model\n"
        "from modelling import x\n"
        "from saccade.pipelines import codec\n"
    )
    with pytest.raises(ValueError, match="import jobs"):
        namespaced("import jobs.store\n", "x.py")


def test_the_device_the_model_loads_on() -> None:
    assert load_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert load_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            load_device("cuda:0")


def test_models_pickled_before_the_pyfunc_moved_find_it_at_their_path() -> None:
    """Models registered before `jobs.core` were a pickled `SaccadePyfunc`, by the module path
    `jobs.training.packaging`: that path still names the class."""
    import pickle

    from jobs.core.packaging import SaccadePyfunc

    pickled = pickle.dumps(SaccadePyfunc(), protocol=0).replace(
        b"jobs.core.packaging", b"jobs.training.packaging"
    )
    assert type(pickle.loads(pickled)) is SaccadePyfunc
