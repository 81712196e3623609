"""The local stack: a Ray head with its job server, an MLflow server and an S3-compatible object
store, all on loopback, for running the jobs as on a cluster.

    eval "$(python -m infra.stack up)"     # start what is not running; print the job environment
    python -m infra.stack status           # is each service up and healthy?
    python -m infra.stack env              # the environment again (export lines)
    python -m infra.stack down             # stop exactly what `up` started

`up` is idempotent: a service already running (same process, healthy) is left alone, and a port
taken by anything else is an error naming it. State (pids, logs, the MLflow database, the object
store's data, checkpoints) lives in the state directory (default ``.stack``); the data survives
`down`. See ``infra/services.py`` for each service.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from infra import processes
from infra.processes import ProcessRecord
from infra.services import SERVICE_TABLE, SERVICES, Service, StackConfig

STATE_FILE = "state.json"
# Never handed down to the services: they would point `ray start` at another cluster.
_DROPPED_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


class StackError(RuntimeError):
    """The stack cannot be started or stopped as asked; the message says why and what to do."""


def load_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {"config": None, "services": {}}
    return json.loads(path.read_text())


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    os.replace(tmp, state_dir / STATE_FILE)  # a crash never leaves a half-written state


def _records(state: dict[str, Any]) -> dict[str, ProcessRecord]:
    return {name: ProcessRecord(**rec) for name, rec in state["services"].items()}


def _config_dict(config: StackConfig) -> dict[str, Any]:
    values = asdict(config)
    values.update(state_dir=str(config.state_dir), services=list(config.services))
    return values


def stored_config(state: dict[str, Any]) -> StackConfig | None:
    raw = state.get("config")
    if raw is None:
        return None
    known = {f.name for f in fields(StackConfig)}
    values = {k: v for k, v in raw.items() if k in known}
    values.update(state_dir=Path(raw["state_dir"]), services=tuple(raw["services"]))
    return StackConfig(**values)


def job_env(config: StackConfig, services: Sequence[str]) -> dict[str, str]:
    """What the jobs need to use the given services."""
    env: dict[str, str] = {}
    for name in SERVICES:
        if name in services:
            env.update(SERVICE_TABLE[name].job_env(config))
    return env


def _check_same_settings(state: dict[str, Any], config: StackConfig) -> None:
    running = [n for n, rec in _records(state).items() if processes.alive(rec)]
    old = stored_config(state)
    if not running or old is None:
        return
    mine, theirs = _config_dict(config), _config_dict(old)
    differ = sorted(k for k in mine if k != "services" and mine[k] != theirs.get(k))
    if differ:
        changes = ", ".join(f"{k}: {theirs.get(k)} -> {mine[k]}" for k in differ)
        raise StackError(
            f"the stack in {config.state_dir} runs {running} with other settings ({changes}); "
            "run `python -m infra.stack down` first"
        )


def _wait_healthy(
    service: Service, config: StackConfig, record: ProcessRecord, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        problem = service.health(config)
        if problem is None:
            return
        if not processes.alive(record):
            raise StackError(
                f"{service.name} exited while starting ({problem}); its log {record.log} ends:\n"
                + processes.log_tail(record.log)
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{service.name} is not healthy after {timeout_s:.0f} s ({problem}); see "
                f"{record.log}, then `python -m infra.stack down`"
            )
        time.sleep(0.5)


def _start(
    service: Service, config: StackConfig, inherited: dict[str, str], state: dict[str, Any]
) -> ProcessRecord:
    own_ports = StackConfig(
        state_dir=config.state_dir, services=(service.name,), **_ports_of(config)
    )
    busy = {k: p for k, p in own_ports.ports().items() if processes.port_in_use(config.host, p)}
    if busy:
        raise StackError(
            f"cannot start {service.name}: port(s) {busy} on {config.host} are taken by another "
            "process; choose other ports (see --help)"
        )
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(inherited)
    env.update(service.own_env(config))
    record = processes.start(
        service.command(config),
        log=config.state_dir / "logs" / f"{service.name}.log",
        env=env,
        cwd=config.state_dir,
    )
    state["services"][service.name] = record.to_dict()
    save_state(config.state_dir, state)  # recorded before waiting: `down` can always stop it
    return record


def _ports_of(config: StackConfig) -> dict[str, Any]:
    keys = ("host", "ray_port", "dashboard_port", "mlflow_port", "s3_port", "weed_ports_from")
    return {k: getattr(config, k) for k in keys}


def up(config: StackConfig, say: Callable[[str], None]) -> dict[str, str]:
    """Start every selected service that is not running; returns the jobs' environment."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(config.state_dir)
    _check_same_settings(state, config)
    old = stored_config(state)
    services = sorted(set(config.services) | set(old.services if old else ()), key=SERVICES.index)
    state["config"] = _config_dict(StackConfig(**{**asdict(config), "services": tuple(services)}))
    records = _records(state)
    inherited: dict[str, str] = {}  # the services started so far, for those that use them
    for name in SERVICES:
        if name not in config.services:
            continue
        service = SERVICE_TABLE[name]
        record = records.get(name)
        if record is not None and processes.alive(record):
            _wait_healthy(service, config, record, service.startup_s)
            say(f"{name}: already running (pid {record.pid})")
        else:
            start = time.monotonic()
            record = _start(service, config, inherited, state)
            _wait_healthy(service, config, record, service.startup_s)
            say(f"{name}: started (pid {record.pid}) in {time.monotonic() - start:.1f} s")
        inherited.update(
            {k: v for k, v in service.job_env(config).items() if k not in _DROPPED_ENV}
        )
    save_state(config.state_dir, state)
    running = [n for n, rec in _records(state).items() if processes.alive(rec)]
    return job_env(config, running)


def down(state_dir: Path, say: Callable[[str], None]) -> list[str]:
    """Stop the services recorded in `state_dir` (their whole sessions, nothing else)."""
    state = load_state(state_dir)
    stopped = []
    for name in reversed(SERVICES):
        record = _records(state).get(name)
        if record is None:
            continue
        start = time.monotonic()
        count = processes.stop(record, grace_s=SERVICE_TABLE[name].stop_grace_s)
        took = time.monotonic() - start
        say(
            f"{name}: stopped {count} processes in {took:.1f} s"
            if count
            else f"{name}: was not running"
        )
        del state["services"][name]
        save_state(state_dir, state)
        stopped.append(name)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> dict[str, str]:
    """Each recorded service: `healthy`, `unhealthy: why` or `stopped`."""
    state = load_state(state_dir)
    config = stored_config(state)
    out = {}
    for name, record in _records(state).items():
        if not processes.alive(record):
            out[name] = "stopped"
            continue
        problem = SERVICE_TABLE[name].health(config) if config else "no settings recorded"
        out[name] = "healthy" if problem is None else f"unhealthy: {problem}"
    return out


def exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))


# --- Command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__)
    p.add_argument("command", choices=["up", "down", "status", "env"])
    p.add_argument("--state-dir", default=".stack", help="state, logs and data (.stack)")
    p.add_argument("--only", help=f"comma list of services to start: {','.join(SERVICES)}")
    defaults = StackConfig(state_dir=Path("."))
    for name in ("host", "bucket"):
        p.add_argument(f"--{name}", default=getattr(defaults, name))
    for name in (
        "ray_port",
        "dashboard_port",
        "mlflow_port",
        "s3_port",
        "weed_ports_from",
        "object_store_mb",
    ):
        flag = "--" + name.replace("_", "-")
        p.add_argument(
            flag, type=int, default=getattr(defaults, name), help=f"({defaults.__dict__[name]})"
        )
    p.add_argument("--num-cpus", type=int, help="CPUs the Ray head offers (default: all)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state_dir = Path(args.state_dir).resolve()

    def say(message: str) -> None:
        print(f"[stack] {message}", file=sys.stderr, flush=True)

    if args.command == "up":
        config = StackConfig(
            state_dir=state_dir,
            host=args.host,
            services=tuple(args.only.split(",")) if args.only else SERVICES,
            ray_port=args.ray_port,
            dashboard_port=args.dashboard_port,
            num_cpus=args.num_cpus,
            object_store_mb=args.object_store_mb,
            mlflow_port=args.mlflow_port,
            s3_port=args.s3_port,
            weed_ports_from=args.weed_ports_from,
            bucket=args.bucket,
        )
        print(exports(up(config, say)))
        return 0
    if args.command == "down":
        if not down(state_dir, say):
            say(f"nothing recorded in {state_dir}")
        return 0
    if args.command == "status":
        found = status(state_dir)
        for name, health in found.items():
            print(f"{name}: {health}")
        return 0 if found and all(h == "healthy" for h in found.values()) else 1
    config = stored_config(load_state(state_dir))
    running = [n for n, h in status(state_dir).items() if h == "healthy"]
    if config is None or not running:
        raise StackError(
            f"no running stack in {state_dir}; start it with `python -m infra.stack up`"
        )
    print(exports(job_env(config, running)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (StackError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
