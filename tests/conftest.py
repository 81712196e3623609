"""Shared fixtures: a real local Ray cluster and a real S3-compatible server on loopback.

Both are session-scoped and started only by the tests that ask for them (tier 2).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What a tracking store left at its defaults writes into the working directory: the project's
# SQLite store and its artifacts, and MLflow's own ./mlruns (an experiment made without an
# artifact location).
DEFAULT_STORE_FILES = ("mlflow.db", "mlartifacts", "mlruns")


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean() -> Iterator[None]:
    """No test leaves an MLflow store in the checkout: each uses the session's store
    (`mlflow_uri`) or its own, and makes experiments with jobs.store.ensure_experiment."""
    paths = [Path(REPO_ROOT) / name for name in DEFAULT_STORE_FILES]
    existed = {path for path in paths if path.exists()}
    yield
    written = [str(path) for path in paths if path.exists() and path not in existed]
    assert not written, f"tests wrote {written}: give them the mlflow_uri fixture"


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint: str) -> Iterator[str]:
    """A local Ray cluster with 2 CPUs (the CI machine's size).

    Started after the S3 server so that its workers inherit the AWS environment pointing at it.
    Yields the job server's address (the dashboard); a test that submits jobs there takes
    `job_server`, which waits until the server accepts them.
    """
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # address="local": never join a stale cluster left by an earlier `ray start`.
    context = ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
    )
    yield f"http://{context.dashboard_url}"
    ray.shutdown()


@pytest.fixture(scope="session")
def job_server(ray_cluster: str) -> str:
    """The session cluster's job server once it accepts `ray job submit`. Only the tests that
    submit wait for it: its agent cannot start while another local Ray on the machine holds the
    agent's fixed port (Ray's 52365), which no other test needs."""
    _wait_for_job_agent(ray_cluster)
    return ray_cluster


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with a `datasets` bucket; the AWS env points at it."""
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="datasets")
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def _wait_for_job_agent(address: str, timeout_s: float = 240.0) -> None:
    """The job server accepts submissions only once the head's agent has registered; until then
    it answers "No available agent to submit job" (minutes on a loaded 2-core machine; for good
    while another local Ray holds the agent's port). Submit a no-op job until one runs."""
    import time

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            job = client.submit_job(entrypoint="true")
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the no-op readiness job did not finish on {address}")
        time.sleep(0.5)
