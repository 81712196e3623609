"""Tier 2: the jobs' fail-fast check of an MLflow tracking server makes a real API call, so a
server that answers /health but refuses the API for this Host (MLflow 3's `--allowed-hosts`,
what a cluster DNS name meets) is named before any work, with the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ops_support import free_port_block
from pyfunc_support import wait_until_answers

from jobs.ops.services import ServiceError, check_tracking_server

pytestmark = pytest.mark.tier2


def test_a_host_the_server_does_not_allow_is_named_with_the_fix(tmp_path: Path) -> None:
    port = free_port_block(1)
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path}/m.db"]
    command += ["--allowed-hosts", f"localhost:{port}"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/health", server, timeout_s=120)
        with pytest.raises(ServiceError, match=f"--allowed-hosts 127.0.0.1:{port}"):
            check_tracking_server(f"http://127.0.0.1:{port}")  # /health alone would pass
        assert check_tracking_server(f"http://localhost:{port}") == f"http://localhost:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
