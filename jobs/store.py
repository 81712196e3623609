"""The MLflow store every job uses, training and operations alike: where it is, a client, the
experiments and the model registry's names for a version.

Embedded default: a SQLite store `./mlflow.db` with artifacts under `./mlartifacts` (the registry
works on it). Any `MLFLOW_TRACKING_URI` (an `mlflow server`, ...) replaces it. A job resolves
``models:/NAME@ALIAS`` to ``models:/NAME/VERSION`` once, before any work: every worker then loads
the same version even if the alias moves while the job runs.

A leaf of `jobs/`: it imports none of the project's modules, so `jobs/training` (which writes runs
and registers models) and `jobs/ops` (which promotes, predicts and regenerates) both build on it
without importing each other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_EXPERIMENT = "saccade"
# Where evaluations of registered models are runs (`jobs.evaluate`, promotion's gates).
EVAL_EXPERIMENT = "saccade-evaluations"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))$")


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else the embedded SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlflow.db')}"


def client(uri: str | None = None) -> Any:
    """An MlflowClient on `uri`, by default `tracking_uri()` (mlflow imported here: it is slow
    to import, and a job that never touches the store should not pay for it)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri or tracking_uri())


def artifact_location(experiment: str) -> str | None:
    """For a SQLite store, artifacts go beside the database (MLflow would otherwise write into
    ./mlruns of whatever directory the job runs in); a tracking server decides for itself."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    base = os.path.dirname(uri.removeprefix("sqlite:///"))
    return "file://" + os.path.join(base, "mlartifacts", experiment)


def ensure_experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """The experiment's id, creating it (with its artifact location) on first use."""
    store = client()
    found = store.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return store.create_experiment(name, artifact_location=artifact_location(name))


# --- the model registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """One registered model version."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def registered_model(name: str) -> Any:
    """The registered model `name`; a ValueError names the store when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            raise ValueError(
                f"registered model {name!r} does not exist in {tracking_uri()}; "
                "train one with `python -m jobs.train`"
            ) from None
        raise


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the model has no such alias."""
    aliases = registered_model(name).aliases or {}
    version = aliases.get(alias)
    return None if version is None else str(version)


def model_version(name: str, version: str) -> ModelRef:
    """A version that exists (``latest``: the newest); a ValueError lists the versions that do."""
    from mlflow.exceptions import MlflowException

    registered_model(name)
    if version == "latest":
        known = [int(v.version) for v in client().search_model_versions(f"name = '{name}'")]
        if not known:
            raise ValueError(f"registered model {name!r} has no versions yet")
        return ModelRef(name, str(max(known)))
    try:
        found = client().get_model_version(name, str(version))
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        known = sorted(int(v.version) for v in client().search_model_versions(f"name = '{name}'"))
        raise ValueError(
            f"registered model {name!r} has no version {version}; versions: {known}"
        ) from None
    return ModelRef(name, str(found.version))


def resolve(uri: str) -> ModelRef:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` → the version it names now."""
    match = _MODELS_URI.match(uri)
    if match is None:
        raise ValueError(
            f"model {uri!r} is not a registry URI: use models:/NAME/VERSION or models:/NAME@ALIAS"
        )
    name, version, alias = match.group("name", "version", "alias")
    if version is not None:
        return model_version(name, version)
    found = alias_version(name, alias)
    if found is None:
        aliases = sorted(registered_model(name).aliases or {})
        raise ValueError(
            f"registered model {name!r} has no alias {alias!r} (aliases: {aliases}); "
            "promote a version with `python -m jobs.promote`"
        )
    return ModelRef(name, found)
