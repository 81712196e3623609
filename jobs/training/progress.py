"""Training progress from the workers to the driver's terminal.

Rank 0 posts events to a small actor (a "board"): ``{"epoch", "seen"}`` (images of the epoch
seen so far, all workers) every second or so, and ``{"epoch", "line"}`` when an epoch is done.
A thread on the driver drains the board and hands the events to the job (its progress bar, its
epoch lines).

Why not the workers' stdout: Ray forwards it to the driver mixed with everything else Ray's
processes print, which a quiet job sends to its log; and Ray Train V2 (2.60) prints every `print`
of a worker twice (its print patch tees the line to the worker's redirected stdout and logs it to
stderr through the root logger; both reach the driver).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from jobs import console

Event = dict[str, Any]
POST_INTERVAL_S = 1.0  # step counts are posted at most this often


class Board:
    """The actor's class: a list of events, appended by rank 0, drained by the driver."""

    def __init__(self) -> None:
        self._events: list[Event] = []

    def post(self, event: Event) -> None:
        self._events.append(event)

    def drain(self) -> list[Event]:
        events, self._events = self._events, []
        return events


@contextmanager
def board(handler: Callable[[Event], None], interval_s: float = 0.5) -> Iterator[Any]:
    """A board actor whose events reach `handler` on the driver while the block runs (and the
    last ones after it); yields its handle for the workers. Ray must be initialised."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # num_cpus=0: it must never wait for a CPU the Ray Data read or the workers hold. On the
    # driver's node: elsewhere, losing that node would fail the run that Ray Train restarts.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(num_cpus=0, scheduling_strategy=here)(Board).remote()
    stop = threading.Event()

    def pump() -> None:
        while not stop.wait(interval_s):
            for event in ray.get(actor.drain.remote()):
                handler(event)

    thread = threading.Thread(target=pump, name="training-progress", daemon=True)
    thread.start()
    try:
        yield actor
    finally:
        stop.set()
        thread.join()
        for event in ray.get(actor.drain.remote()):
            handler(event)
        ray.kill(actor)


class Poster:
    """The worker side: rank 0 posts; every other rank, or a run without a board, does nothing."""

    def __init__(self, actor: Any, *, enabled: bool) -> None:
        self._actor = actor if enabled else None
        self._last = 0.0

    def step(self, epoch: int, seen: int) -> None:
        """Images seen so far in `epoch` (all workers); posted at most every POST_INTERVAL_S."""
        now = time.monotonic()
        if self._actor is None or now - self._last < POST_INTERVAL_S:
            return
        self._last = now
        self._actor.post.remote({"epoch": epoch, "seen": seen})  # no wait: the step goes on

    def epoch(self, epoch: int, line: str) -> None:
        """The finished epoch's line; waits until it is posted, so it is on the board before the
        epoch's report (and before `fit` returns after the last one)."""
        if self._actor is not None:
            import ray

            ray.get(self._actor.post.remote({"epoch": epoch, "line": line}))


class EpochBar:
    """A handler that moves a console bar over every image of every epoch still to train, and
    prints each epoch's line above it. The first event names the first epoch trained (a resumed
    run starts after its checkpoint)."""

    def __init__(self, bar: Any, say: Callable[[str], None], images: int, epochs: int) -> None:
        self.bar, self.say, self.images, self.epochs = bar, say, images, epochs
        self.first: int | None = None

    def __call__(self, event: Event) -> None:
        if self.first is None:
            self.first = event["epoch"]
            self.bar.total = (self.epochs - self.first + 1) * self.images
            self.bar.refresh()
        done = self.images if "line" in event else min(event["seen"], self.images)
        position = (event["epoch"] - self.first) * self.images + done
        if "line" in event:
            self.say(event["line"])
        if position > self.bar.n:
            self.bar.update(position - self.bar.n)


@contextmanager
def epoch_bar(desc: str, images: int, epochs: int) -> Iterator[EpochBar]:
    """A bar on the job's console over `epochs` × `images`, and a handler for `train(progress=)`
    that moves it and prints each epoch's line (indented under the phase)."""
    out = console.current()
    with out.bar(desc, total=images * epochs) as bar:
        yield EpochBar(bar, lambda line: out.say(f"  {line}"), images, epochs)
