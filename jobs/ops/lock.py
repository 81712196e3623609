"""A mutual-exclusion lock kept in the MLflow model registry itself.

MLflow has no compare-and-set on aliases or tags, but creating a registered model is atomic: the
store's unique constraint on the name (SQLite, a SQL database behind `mlflow server`) lets exactly
one creator succeed. The lock is the registered model ``<name>.promotion-lock``; its tags name the
owner and an expiry, so a lock left by a crashed process is broken once it has expired. It is held
only around the alias writes (milliseconds), never while models are evaluated.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from jobs import store

LOCK_SUFFIX = ".promotion-lock"
TTL_S = 120.0  # a holder that has not released after this is taken to have crashed
WAIT_S = 60.0  # how long to wait for another holder before giving up
POLL_S = 0.2


class LockTimeoutError(ValueError):
    """Another process held the lock for longer than we were prepared to wait."""


def lock_name(name: str) -> str:
    return name + LOCK_SUFFIX


def _try_create(name: str, owner: str) -> bool:
    from mlflow.exceptions import MlflowException

    expires = f"{time.time() + TTL_S:.3f}"
    try:
        store.client().create_registered_model(
            lock_name(name),
            tags={"owner": owner, "expires": expires},
            description=f"promotion lock of {name}: held by {owner}; deleted on release",
        )
        return True
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS":
            return False
        raise


def _holder(name: str) -> tuple[str, float] | None:
    """(owner, expiry) of the current lock, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        tags = store.client().get_registered_model(lock_name(name)).tags or {}
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    # A lock without its tags is one being created right now: treat it as fresh.
    return tags.get("owner", "?"), float(tags.get("expires", time.time() + TTL_S))


def _delete(name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        store.client().delete_registered_model(lock_name(name))
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise


@contextlib.contextmanager
def registry_lock(name: str, *, owner: str, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the promotion lock of registered model `name` while the block runs."""
    deadline = time.monotonic() + wait_s
    while not _try_create(name, owner):
        holder = _holder(name)
        if holder is not None and holder[1] < time.time():
            # Expired: its holder crashed. Re-read just before deleting, so that a lock another
            # process has meanwhile re-taken is left alone.
            if _holder(name) == holder:
                _delete(name)
            continue
        if time.monotonic() > deadline:
            who = holder[0] if holder else "?"
            raise LockTimeoutError(
                f"another promotion of {name!r} ({who}) held the lock for over {wait_s:.0f} s; "
                f"retry, or delete the registered model {lock_name(name)!r} if it is stale"
            )
        time.sleep(POLL_S)
    try:
        yield
    finally:
        holder = _holder(name)
        if holder is not None and holder[0] == owner:
            _delete(name)
