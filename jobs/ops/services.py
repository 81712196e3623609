"""Fail fast when a service a job needs is not there: the tracking server, the object store.

Each check takes a few seconds at most and raises a `ServiceError` (a ValueError: the entry points
print it as one `error:` line) that names the service, its address and the variable that set it.
Without these checks MLflow's and s3fs's clients retry for minutes before saying anything.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from jobs.store import tracking_uri

TIMEOUT_S = 5.0  # one connection attempt per check: loopback and cluster services answer in ms


class ServiceError(ValueError):
    """A service a job needs is unreachable or refuses the request."""


def check_tracking_server(uri: str | None = None) -> str:
    """The tracking URI, after checking that an HTTP tracking server answers its health check.

    A SQLite store needs its directory to exist; other stores (databricks, ...) are not checked.
    """
    import requests

    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        directory = os.path.dirname(uri.removeprefix("sqlite:///")) or "."
        if not os.path.isdir(directory):
            raise ServiceError(f"MLflow store {uri}: directory {directory} does not exist")
        return uri
    if not uri.startswith(("http://", "https://")):
        return uri
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise ServiceError(
            f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable: "
            f"{type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        raise ServiceError(
            f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unhealthy: "
            f"HTTP {response.status_code} on /health"
        )
    _check_api(uri)
    return uri


def _check_api(uri: str) -> None:
    """One real API call: /health answers whatever the Host header, the API only for the hosts
    the server allows (MLflow 3's `--allowed-hosts`) and with the credentials it wants."""
    import requests

    headers, auth = {}, None
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
        auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        response = requests.get(
            url, params={"max_results": 1}, headers=headers, auth=auth, timeout=TIMEOUT_S
        )
    except requests.RequestException as exc:
        raise ServiceError(
            f"MLflow tracking server {uri}: {type(exc).__name__} on its API"
        ) from None
    if response.status_code == 200:
        return
    where = (
        f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) answers /health but refuses its API"
    )
    if response.status_code == 403 and "Host header" in response.text:
        host = uri.split("://", 1)[1].split("/", 1)[0]
        raise ServiceError(
            f"{where}: the Host {host} is not allowed; start it with --allowed-hosts {host}"
        )
    if response.status_code in (401, 403):
        raise ServiceError(
            f"{where}: HTTP {response.status_code}, credentials needed "
            "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)"
        )
    raise ServiceError(f"{where}: HTTP {response.status_code}")


def s3_endpoint() -> str:
    """The S3 endpoint the jobs use: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, else AWS."""
    return (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "https://s3.amazonaws.com"
    )


def check_object_store(url: str) -> None:
    """For an ``s3://bucket/...`` URL: the endpoint answers and the bucket exists (and the
    credentials are accepted). Local paths are not checked here (the jobs name missing ones)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("s3", "s3a"):
        return
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    endpoint = s3_endpoint()
    config = Config(
        connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"total_max_attempts": 1}
    )
    client = boto3.client("s3", endpoint_url=endpoint, config=config)
    try:
        client.head_bucket(Bucket=parsed.netloc)
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        raise ServiceError(
            f"object store {endpoint} (AWS_ENDPOINT_URL) is unreachable ({type(exc).__name__}); "
            f"needed for {url}"
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise ServiceError(
            f"object store {endpoint}: no credentials for {url} "
            "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        what = {
            "404": "does not exist",
            "NoSuchBucket": "does not exist",
            "403": "denies access (403): check the AWS credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's policy",
        }.get(code, f"refused ({code})")
        raise ServiceError(
            f"object store {endpoint}: bucket {parsed.netloc!r} {what}; needed for {url}"
        ) from None
