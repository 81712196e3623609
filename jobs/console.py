"""What a job shows on the terminal: its own lines and progress bars, nothing of Ray's or MLflow's.

Quiet (the jobs' default): the process's stdout and stderr file descriptors are pointed at a log
file, so everything that writes to them — Python logging and warnings, Ray's start-up messages
and its forwarding of worker output (`log_to_driver`), Ray's C++ core, MLflow's prints and
upload bars, child processes — lands there. The job's own lines and bars go to copies of the
original descriptors. Ray Data's progress bars are switched off (thousands of redraws in a log);
its execution plans and progress logging stay in the log.

Verbose (``--verbose``): nothing is redirected; the job's bars print plain lines among Ray's
output.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import Any, TextIO

from tqdm import tqdm

VERBOSE_HELP = "show Ray's and MLflow's own output too (default: only in the log file)"
LOG_DIR_ENV = "SACCADE_LOG_DIR"  # where quiet jobs write their logs (default ./logs)
LINE_INTERVAL_S = 60.0  # a progress line at most this often when the output is not a terminal
_OWN_LOGGERS = ("root", "__main__", "jobs", "pipelines", "model")  # warnings reach the terminal


class Console:
    """The job's terminal: `say` a line, `bar` a phase with an ETA, `fail` with the log's path."""

    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, log_path: str | None = None
    ) -> None:
        self._out, self._err = out, err  # None: whatever sys.stdout / sys.stderr are when used
        self.log_path = log_path  # set when quiet: where everything else went

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    @property
    def live(self) -> bool:
        """Bars redraw in place only on a terminal that nothing else writes to."""
        return self.log_path is not None and self.out.isatty()

    def say(self, text: str) -> None:
        """A line of the job's own output (above a live bar, which stays at the bottom)."""
        if self.live:  # clears and redraws the bars on the same stream
            tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def bar(self, desc: str, total: int | None, unit: str = "img") -> Any:
        """A progress bar with rate and ETA: tqdm on a terminal, else a line now and then.
        Use as a context manager; `update(n)`, `total` and `refresh()` as on tqdm."""
        if self.live:
            # A terminal that reports no size (a bare pseudo-terminal) gets tqdm's fixed width:
            # its resizing bar would draw nothing there.
            size = os.get_terminal_size(self.out.fileno())
            sized = size.columns > 0 and size.lines > 0
            return tqdm(total=total, desc=desc, unit=unit, file=self.out, dynamic_ncols=sized)
        return LineBar(desc, total, unit, say=self.say)

    def warn(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def fail(self, exc: BaseException) -> None:
        """Show an unexpected failure: its text and where the full log is (the traceback and
        everything before it were written there)."""
        if self.log_path is None:
            traceback.print_exception(exc)
            return
        traceback.print_exception(exc, file=sys.stderr)  # into the log
        sys.stderr.flush()
        lines = (str(exc) or "").strip().splitlines()
        shown = "\n".join(lines[:20] + (["..."] if len(lines) > 20 else []))
        self.warn(f"error: {type(exc).__name__}: {shown}")
        self.warn(f"the full log (Ray, MLflow, the traceback): {self.log_path}")


class LineBar:
    """tqdm's text as whole lines: when opened, at most every `interval_s`, and when closed
    (a log or a pipe gets no carriage-return redraws)."""

    def __init__(
        self, desc: str, total: int | None, unit: str, *, say: Any, interval_s: float = 0.0
    ) -> None:
        self.desc, self.total, self.unit, self.n = desc, total, unit, 0
        self._say = say
        self._interval = interval_s or LINE_INTERVAL_S
        self._start = self._last = time.monotonic()
        self._closed = False
        self._shown: tuple[int, int | None] | None = None  # (n, total) of the last line
        self._line()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._line()

    def refresh(self) -> None:
        pass  # lines are printed on their own schedule

    def write(self, text: str) -> None:
        self._say(text)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shown != (self.n, self.total):  # not the line just printed again
            self._line()

    def _line(self) -> None:
        self._shown = (self.n, self.total)
        elapsed = time.monotonic() - self._start
        self._say(tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit))

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_current = Console()


def current() -> Console:
    """The console of this process (plain stdout until a job calls `start`)."""
    return _current


def start(job: str, *, verbose: bool) -> Console:
    """Set up the job's terminal: quiet unless `verbose` (see the module's docstring)."""
    global _current
    if verbose:
        _current = Console()
        return _current
    path = _log_path(job)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    err = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, sys.stdout.fileno())
    os.dup2(log_fd, sys.stderr.fileno())
    os.close(log_fd)
    _current = Console(out, err, path)
    _own_warnings_to(err)
    _quiet_ray_data()
    _current.say(f"log: {path}")
    return _current


def _log_path(job: str) -> str:
    directory = os.path.abspath(os.environ.get(LOG_DIR_ENV) or "logs")
    os.makedirs(directory, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(directory, f"{job}-{stamp}-{os.getpid()}.log")


class _Own(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in _OWN_LOGGERS


def _own_warnings_to(stream: TextIO) -> None:
    """The project's own warnings stay visible (e.g. an ignored flag); Ray's and MLflow's do not."""
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    handler.addFilter(_Own())
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger().addHandler(handler)


def _quiet_ray_data() -> None:
    """No Ray Data progress bars: the environment reaches the workers a local Ray starts (it is
    read when `ray.data` is imported); the driver's context covers a Ray already imported."""
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    if "ray.data" in sys.modules:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
