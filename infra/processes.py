"""Detached service processes that can be stopped exactly: one session per service.

A service is started as the leader of a new session (``setsid``), so every process it spawns —
Ray's GCS, raylet and workers, MLflow's server workers — carries the leader's pid as its session
id. Stopping a service signals the members of that session and nothing else: never a broad
``pkill`` or ``ray stop``, which would also stop other Ray clusters on the machine. The leader's
start time (from /proc) is recorded with its pid, so a recycled pid is never taken for ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessRecord:
    """A started service process, as the state file keeps it."""

    pid: int  # the session leader (its pid is the session id of everything it starts)
    start_time: int  # clock ticks since boot (/proc/<pid>/stat field 22): pid-reuse guard
    command: list[str]
    log: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, session id, start time) of a process, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[3]), int(fields[19])


def alive(record: ProcessRecord) -> bool:
    """The recorded leader still runs (not a zombie, not a recycled pid)."""
    stat = _stat(record.pid)
    return stat is not None and stat[0] != "Z" and stat[2] == record.start_time


def session_members(record: ProcessRecord) -> list[int]:
    """Live processes of the recorded session (none if the leader's pid was recycled)."""
    leader = _stat(record.pid)
    if leader is not None and leader[2] != record.start_time:
        return []  # the pid now belongs to another process: its session is not ours
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat and stat[1] == record.pid and stat[0] != "Z" and stat[2] >= record.start_time:
                members.append(int(entry.name))
    return members


def start(command: list[str], *, log: Path, env: dict[str, str], cwd: Path) -> ProcessRecord:
    """Start `command` as a new session, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    stat = _stat(process.pid)
    assert stat is not None, "a process we just started has no /proc entry"
    return ProcessRecord(process.pid, stat[2], command, str(log))


def stop(record: ProcessRecord, *, grace_s: float = 10.0) -> int:
    """SIGTERM the session, SIGKILL what is left after `grace_s`; returns the processes found."""
    found = session_members(record)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(record):
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while session_members(record) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_members(record):
            break
    return len(found)


def port_in_use(host: str, port: int) -> bool:
    """Something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def log_tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
