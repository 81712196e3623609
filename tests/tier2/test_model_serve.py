"""Tier 2: the pyfunc behind `mlflow models serve` (JSON over HTTP on loopback) predicts all-black
and all-white images from raw tiles exactly as the model itself does: the tiles cross the scoring
server's JSON decoding and schema enforcement without losing their NUL bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from pyfunc_support import (
    free_port,
    image_requests,
    save_tiny_pyfunc,
    solid_image,
    wait_until_answers,
)

from jobs.core.data import table_to_batch
from jobs.core.packaging import request_json

pytestmark = pytest.mark.tier2


@pytest.mark.parametrize("reads", ["full", "level"])
def test_served_model_predicts_black_and_white_raw_tiles(tmp_path: Path, reads: str) -> None:
    rows = image_requests(
        tmp_path / "in", {"black.png": solid_image(0), "white.png": solid_image(255)}, "raw"
    )
    save_tiny_pyfunc(tmp_path / "model", reads=reads, example=rows)
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve"]
    command += ["-m", str(tmp_path / "model"), "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    # the server runs `uvicorn` by name: this environment's bin folder first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/ping", process)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=request_json(rows).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                predictions = json.loads(answer.read())["predictions"]
        except urllib.error.HTTPError as exc:
            pytest.fail(f"the server answered {exc.code}: {exc.read()[:2000]!r}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and the workers it started
            process.wait(timeout=30)
        log.close()
    model = mlflow.pyfunc.load_model(str(tmp_path / "model")).unwrap_python_model().model
    expected = model.predict(table_to_batch(rows)).logits_BK.softmax(dim=1).detach().numpy()
    served = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert [len(p["boxes"]) for p in predictions] == [2, 2]
