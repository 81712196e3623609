"""Shared plumbing for the entry points: logging, Ray start-up, clean exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from jobs import console

# A local job's Ray dashboard starts here (the next free port if taken), not at Ray's 8265: a
# `ray job submit` to a `ray start` head on 8265 must never reach a job's own local Ray instead.
LOCAL_DASHBOARD_PORT = 8365


def init_ray(num_cpus: int | None = None) -> str | None:
    """Join the cluster named by RAY_ADDRESS (set by `ray job submit`), else start a local one,
    with its dashboard on loopback when Ray's dashboard dependencies (``ray[default]``) are
    installed. Returns the local dashboard's URL (None: joined a cluster, or no dashboard).

    A bare ``ray.init()`` can join a stale cluster left by an earlier ``ray start``; the explicit
    ``address="local"`` avoids that when no cluster was asked for.
    """
    import importlib.util

    import ray

    if ray.is_initialized():
        return None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_cluster_answers(address)
        ray.init(address=address, log_to_driver=True)
        return None
    dashboard = importlib.util.find_spec("aiohttp_cors") is not None  # one of ray[default]'s
    context = ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        # Ray refuses a taken port rather than moving on: a second local job (a build while a
        # training runs) would fail at start-up
        dashboard_port=free_local_port(LOCAL_DASHBOARD_PORT) if dashboard else None,
        log_to_driver=True,
    )
    return f"http://{context.dashboard_url}" if dashboard and context.dashboard_url else None


def free_local_port(first: int, tries: int = 100) -> int:
    """The first port from `first` on that nothing listens on at loopback."""
    import socket

    for port in range(first, first + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise ValueError(f"no free port in {first}..{first + tries - 1} for the local Ray dashboard")


CONNECT_TIMEOUT_S = 10.0


def check_cluster_answers(address: str) -> None:
    """``ray.init(address=...)`` waits for minutes, silently, on an address where nothing
    answers: a TCP connection first, so such a ``RAY_ADDRESS`` is named at once. Forms Ray
    resolves itself (``auto``, a cluster file) are left to it."""
    import socket

    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({reason}); start the "
            "cluster, or unset RAY_ADDRESS to run on a local Ray"
        ) from None


def run_main(
    main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> None:
    """Run an entry point: user errors (ValueError, FileNotFoundError) print one clear line and
    exit 2; anything else keeps its traceback (in the log of a quiet job, whose path is shown)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code = main(argv)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        console.current().warn(f"error: {exc}")
        sys.exit(2)
    except Exception as exc:
        console.current().fail(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        console.current().warn(f"interrupted; log: {console.current().log_path or '-'}")
        sys.exit(130)
    sys.exit(code)


class JobParser(argparse.ArgumentParser):
    """argparse with the jobs' convention for bad input: one ``error: ...`` line, exit status 2
    (argparse's own prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse_key_values(pairs: Sequence[str], *, flag: str) -> dict[str, str]:
    """Parse repeated ``key=value`` options into a dict, naming a malformed one."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out
