"""Tier 1: `model/` is pure PyTorch — it never imports ray, mlflow, pyarrow or s3fs — and the lower
layers (`pipelines/`, `model/`, `infra/`) import none of the project's other packages (STYLE.md)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

FORBIDDEN = ("ray", "mlflow", "pyarrow", "s3fs")
MODEL_DIR = Path(__file__).resolve().parents[2] / "model"


def imported_modules(source: str) -> list[str]:
    """Every absolute module `source` imports (anywhere, at any depth), in order."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def forbidden_imports(source: str) -> list[str]:
    """The modules from FORBIDDEN's packages that `source` imports."""
    return [name for name in imported_modules(source) if name.split(".")[0] in FORBIDDEN]


def test_checker_catches_planted_imports() -> None:
    planted = "import torch\nimport ray.train\ndef f():\n    from mlflow import log_metric\n"
    assert forbidden_imports(planted) == ["ray.train", "mlflow"]
    assert forbidden_imports("import pyarrow as pa, s3fs\n") == ["pyarrow", "s3fs"]
    assert forbidden_imports("import rayon\nfrom .ray import x\nimport torch\n") == []


def test_model_imports_no_ray_mlflow_pyarrow_or_s3fs() -> None:
    files = sorted(MODEL_DIR.glob("*.py"))
    assert len(files) >= 5, f"model/ sources not found under {MODEL_DIR}"
    offenders = {
        f.name: found for f in files if (found := forbidden_imports(f.read_text(encoding="utf-8")))
    }
    assert not offenders, f"model/ must stay pure PyTorch, found {offenders}"


# Which of the project's packages each lower layer may import (STYLE.md, "Where things live"):
# `pipelines/` is the data side (Parquet is its only contract with training), `model/` is pure
# PyTorch, `infra/` starts services; none of them reaches up into `jobs/` or across to another.
PROJECT = ("jobs", "model", "pipelines", "infra")
MAY_IMPORT = {"pipelines": {"pipelines"}, "model": {"model"}, "infra": {"infra"}}
ROOT = MODEL_DIR.parent


def project_imports(source: str) -> set[str]:
    """The project's top-level packages that `source` imports."""
    return {name.split(".")[0] for name in imported_modules(source)} & set(PROJECT)


def test_project_import_checker_catches_planted_imports() -> None:
    planted = "import pipelines.tiling\ndef f():\n    from jobs.training import loop\n"
    assert project_imports(planted) == {"pipelines", "jobs"}
    assert project_imports("import jobsite\nfrom . import model\n") == set()


def test_lower_layers_import_only_themselves() -> None:
    offenders = {}
    for package, allowed in MAY_IMPORT.items():
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"no sources under {ROOT / package}"
        for path in files:
            extra = project_imports(path.read_text(encoding="utf-8")) - allowed
            if extra:
                offenders[str(path.relative_to(ROOT))] = sorted(extra)
    assert not offenders, f"a lower layer imports a package above or beside it: {offenders}"


def _jobs_imports(path: Path) -> set[str]:
    """The `jobs.` modules that `path` imports (anywhere in it)."""
    found = imported_modules(path.read_text(encoding="utf-8"))
    return {name for name in found if name == "jobs" or name.startswith("jobs.")}


def _offenders(folder: str, forbidden: Callable[[str], bool]) -> dict[str, list[str]]:
    """The modules under `jobs/<folder>` that import `jobs.` modules `forbidden` says no to."""
    offenders = {}
    for path in sorted((ROOT / "jobs" / folder).glob("*.py")):
        found = sorted(m for m in _jobs_imports(path) if forbidden(m))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    return offenders


def test_training_and_operations_meet_only_in_the_neutral_modules() -> None:
    """`jobs/store.py` (the MLflow store: URI, client, experiments, registry names) imports none
    of the project's modules, and `jobs/core/` (dataset reading, evaluation, pictures, the pyfunc)
    is what training and operations share: training never reaches into `jobs/ops/`, operations
    never into `jobs/training/`, and the core into neither, save training's configuration (how a
    saved model is rebuilt)."""
    store = ROOT / "jobs" / "store.py"
    assert not project_imports(store.read_text(encoding="utf-8")), "jobs/store.py must be a leaf"
    training = _offenders("training", lambda m: m.startswith("jobs.ops"))
    assert not training, f"jobs/training imports jobs/ops: {training}"
    ops = _offenders("ops", lambda m: m.startswith("jobs.training"))
    assert not ops, f"jobs/ops imports jobs/training: {ops}"
    core = _offenders(
        "core",
        lambda m: (
            m.startswith("jobs.ops")
            or (m.startswith("jobs.training") and m != "jobs.training.recipes")
        ),
    )
    assert not core, f"jobs/core imports a side: {core}"


def test_the_registered_model_loads_without_the_training_loop() -> None:
    """The pyfunc builds its model from the model registry and the saved (name, config): what a
    served model imports of the project is the data reader, the recipes' config and `model/`,
    never the training loop, its trainer, tracking or pictures (nor Ray)."""
    import subprocess
    import sys

    script = (
        "import sys, jobs.core.packaging\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('jobs.') or m == 'ray')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = set(done.stdout.split())
    assert "jobs.training.recipes" in loaded
    training = {"loop", "trainer", "tracking", "pictures"}
    assert not loaded & ({f"jobs.training.{m}" for m in training} | {"ray"}), sorted(loaded)
