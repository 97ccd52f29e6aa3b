"""How many of the engine's requests to have in flight, and the submit pool that keeps to it.

A small POST costs the client about 0.3 ms of CPU with the GIL held (urllib3 and
http.client), and then waits out the server's round trip. ``ceil(round trip / CPU)``
threads keep the client busy: on a near server (a round trip of a few CPU times)
eight are plenty, and more only take the GIL from each other; on a far one they are
too few (eight threads over 20 ms round trips send 400 requests a second, where
one thread's CPU could send 3,000). So the engine runs ``FLOOR`` submitters and
pollers, and more, up to its caps, while the round trip says they pay:

- the round trip is the shortest submission of the last two windows of ``WINDOW`` s (a
  server holding a request, a thread kept from the GIL, a new connection only ever
  make one look slower: the shortest is the network's);
- the CPU is a moving average of each submission's own thread time
  (``time.thread_time``: what the GIL was held for, plus the kernel's share).

The limit never falls below ``FLOOR`` (what the engine always ran), so a server that
slows down never gets fewer requests than before; a far one gets up to the caps.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable

__all__ = [
    "DEFAULT_POLL_WORKERS",
    "DEFAULT_SUBMIT_WORKERS",
    "FLOOR",
    "WINDOW",
    "Pace",
    "SubmitPool",
    "check_workers",
]

log = logging.getLogger("tinker_sync")

FLOOR = 8  # submitters and pollers that may always run
DEFAULT_SUBMIT_WORKERS = 32  # the most submitters
DEFAULT_POLL_WORKERS = 30  # the most pollers; with the submitters and two more threads, 64 connections
WINDOW = 2.0  # seconds: the round trip is the shortest of the last two windows
_SMOOTHING = 16  # the CPU average's weight of history (an exponential moving average)


def check_workers(submit_workers: int, poll_workers: int) -> None:
    """Raise ValueError unless both pools may run a thread (with none, every future would hang)."""
    for name, value in (("submit_workers", submit_workers), ("poll_workers", poll_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int of at least 1, got {value!r}")


class Pace:
    """The round trip and CPU of recent submissions, and the concurrency they call for."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.floor = min(FLOOR, cap)
        self.limit = self.floor  # how many requests may be in flight, within [floor, cap]
        self._lock = threading.Lock()
        self._shortest = self._before = math.inf  # the shortest round trip of this window, the last
        self._window_ends = 0.0
        self._cpu = 0.0

    @property
    def round_trip(self) -> float:
        """The shortest round trip of the last two windows (seconds; inf before any)."""
        return min(self._shortest, self._before)

    @property
    def cpu(self) -> float:
        """The average CPU of a submission (seconds; 0 before any)."""
        return self._cpu

    def record(self, wall: float, cpu: float) -> None:
        """One submission took ``wall`` seconds, ``cpu`` of them on this thread's CPU."""
        now = time.monotonic()
        with self._lock:
            if now >= self._window_ends:
                self._before, self._shortest = self._shortest, math.inf
                self._window_ends = now + WINDOW
            self._shortest = min(self._shortest, wall)
            self._cpu = cpu if not self._cpu else self._cpu + (cpu - self._cpu) / _SMOOTHING
            wanted = math.ceil(self.round_trip / max(self._cpu, 1e-5))
            self.limit = max(self.floor, min(self.cap, wanted))

    def measure(self) -> _Measure:
        """A context that records the submission it wraps, if it ends without an exception."""
        return _Measure(self)


class _Measure:
    __slots__ = ("_pace", "_wall", "_cpu")

    def __init__(self, pace: Pace) -> None:
        self._pace = pace

    def __enter__(self) -> None:
        self._wall, self._cpu = time.monotonic(), time.thread_time()

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self._pace.record(time.monotonic() - self._wall, time.thread_time() - self._cpu)


class SubmitPool:
    """The engine's submitters: jobs run in submission order, at most ``pace.limit`` at once,
    on threads started as jobs need them (``pace.cap`` at most), joined by ``close``.

    A thread that finishes a job takes the next one itself while the pace allows: in a
    burst, no thread is woken per job.
    """

    def __init__(self, pace: Pace, name: str = "tinker-sync-submit") -> None:
        self.pace = pace
        self._name = name
        self._cond = threading.Condition()
        # each job, and what settles its future if close() drops it before it started
        self._jobs: collections.deque[tuple[Callable[[], object], Callable[[], object] | None]] = (
            collections.deque()
        )
        self._threads: list[threading.Thread] = []
        self._active = 0  # threads running a job or granted one (woken, or starting)
        self._idle = 0  # threads waiting for a grant
        self._wakes = 0  # grants not yet taken by an idle thread
        self._closed = False

    @property
    def threads(self) -> int:
        """How many threads were started (they stay until ``close``)."""
        return len(self._threads)

    def submit(self, job: Callable[[], object], drop: Callable[[], object] | None = None) -> None:
        """Run ``job`` on a submitter (its exceptions are logged: a job settles its own future);
        ``drop`` settles it instead if ``close`` comes before it started."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the ServiceClient is closed")
            self._jobs.append((job, drop))
            if self._active < self.pace.limit:
                self._grant()

    def _grant(self) -> None:
        """One more thread runs jobs: an idle one, else a new one within the cap (lock held)."""
        if self._idle > self._wakes:
            self._active += 1
            self._wakes += 1
            self._cond.notify()
        elif len(self._threads) < self.pace.cap:
            self._active += 1
            thread = threading.Thread(
                target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _take(self) -> Callable[[], object] | None:
        """The next job for this thread, which holds a grant; None once closed (lock held)."""
        while True:
            if self._closed:
                self._active -= 1
                return None
            if self._jobs and self._active <= self.pace.limit:
                job = self._jobs.popleft()[0]
                if self._jobs and self._active < self.pace.limit:
                    self._grant()  # the pace rose: one more thread joins in
                return job
            self._active -= 1  # nothing to do, or over the pace: the grant goes back
            self._idle += 1
            while not self._wakes and not self._closed:
                self._cond.wait()
            self._idle -= 1
            if self._wakes:
                self._wakes -= 1
            else:
                self._active += 1  # closing: held only to be given back above

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._take()
            if job is None:
                return
            try:
                job()
            except BaseException:  # noqa: BLE001 - a job settles its own future; this is a bug
                log.exception("a submit job failed")

    def close(self) -> None:
        """Drop the jobs not started (each settled by its ``drop``), let the running ones end,
        join every thread."""
        with self._cond:
            self._closed = True
            dropped = [drop for _, drop in self._jobs]
            self._jobs.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        for drop in dropped:
            if drop is not None:
                try:
                    drop()
                except Exception:
                    log.exception("settling a dropped submit job failed")
        for thread in threads:
            thread.join()
