"""Tier 1: `model/` is pure PyTorch — it never imports ray, mlflow, pyarrow or s3fs (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = ("ray", "mlflow", "pyarrow", "s3fs")
MODEL_DIR = Path(__file__).resolve().parents[2] / "model"


def forbidden_imports(source: str) -> list[str]:
    """Top-level packages from FORBIDDEN that `source` imports (anywhere, at any depth)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in FORBIDDEN]
    return found


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
