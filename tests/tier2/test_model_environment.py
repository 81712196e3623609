"""Tier 2: a trained, registered model runs where only what it records is installed.

The tiny recipe trained through Ray Train and registered (the session's `trained_tiny`): its
files are downloaded from the registry; a fresh virtualenv gets exactly the model's
`requirements.txt` (pip's configured indexes: PyPI, and the local wheel folder for torch's CPU
build) and nothing of this project. There, out of the repository's folder, the model loads,
predicts its stored input example as the training environment does, and imports the project
only as `saccade.*`; `mlflow models serve` from that virtualenv answers its stored serving
example on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from pyfunc_support import free_port, wait_until_answers

from jobs.training.trainer import TrainOutcome

pytestmark = pytest.mark.tier2

PREDICT = """
import json, sys
import mlflow
from mlflow.models import Model

path = sys.argv[1]
out = mlflow.pyfunc.load_model(path).predict(Model.load(path).load_input_example(path))
names = {m.split(".")[0] for m in sys.modules} & {"model", "jobs", "pipelines", "infra", "saccade"}
print(json.dumps({"probabilities": out["probabilities"].tolist(), "names": sorted(names)}))
"""


def _fresh_env(venv: Path) -> dict[str, str]:
    """The environment of a process of the fresh virtualenv: its bin first on PATH (the server
    runs `uvicorn` by name), nothing of this checkout on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}


def _serve(venv: Path, model: Path, tmp_path: Path) -> list[dict]:
    """The predictions `mlflow models serve` of the fresh virtualenv gives for the model's
    stored serving example."""
    port = free_port()
    command = [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(model)]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_fresh_env(venv),
        cwd=tmp_path,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/ping", process)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=(model / "serving_input_example.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())["predictions"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        log.close()


def test_the_registered_model_restores_predicts_and_serves(
    mlflow_uri: str, trained_tiny: TrainOutcome, tmp_path: Path
) -> None:
    import mlflow
    from mlflow.models import Model

    uri = f"models:/{trained_tiny.registered_model}/{trained_tiny.model_version}"
    mlflow.set_tracking_uri(mlflow_uri)
    model = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    requirements = (model / "requirements.txt").read_text().split()
    assert not [r for r in requirements if "+" in r or "==" not in r], requirements

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-r", str(model / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PREDICT, str(model)],
        capture_output=True,
        text=True,
        env=_fresh_env(venv),
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    restored = json.loads(done.stdout.strip().splitlines()[-1])
    assert restored["names"] == ["saccade"]  # the project's code only as the model ships it

    example = Model.load(str(model)).load_input_example(str(model))
    here = mlflow.pyfunc.load_model(uri).predict(example)
    expected = np.array(here["probabilities"].tolist())
    np.testing.assert_allclose(np.array(restored["probabilities"]), expected, atol=1e-6)
    served = _serve(venv, model, tmp_path)
    np.testing.assert_allclose(np.array([p["probabilities"] for p in served]), expected, atol=1e-6)
