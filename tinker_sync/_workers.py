"""The bounded worker thread: I/O that overlaps the caller's network reads, in constant memory.

Used by downloads (writing and hashing the received bytes) and by checkpoint
extraction (writing member data). File writes and hashlib release the GIL,
so on their own thread they run while the caller reads the next bytes.

Rules:
1. The queue holds at most ``depth`` items: memory stays bounded, and a slow
   consumer slows the producer down instead of piling data up.
2. An exception raised by ``consume`` is raised in the producer, at its next
   ``put``, ``join`` or ``close``; after it, every item (those queued by the
   raising ``put`` too) is handed to ``discard`` instead, so that, say, every
   file descriptor still gets closed.
3. ``close`` always stops and joins the thread; ``close(abort=True)`` discards
   what is still queued and raises nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Worker"]

T = TypeVar("T")

_STOP = object()


class Worker(Generic[T]):
    """One daemon thread calling ``consume(item)`` for each item ``put``, in order."""

    def __init__(
        self,
        consume: Callable[[T], object],
        *,
        depth: int = 8,
        name: str = "tinker-sync-worker",
        discard: Callable[[T], object] | None = None,
    ) -> None:
        self._consume = consume
        self._discard = discard
        self._queue: queue.Queue[T | object] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._abort = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get, done = self._queue.get, self._queue.task_done
        while True:
            item = get()
            try:
                if item is _STOP:
                    return
                if self._error is None and not self._abort:
                    self._consume(item)  # type: ignore[arg-type]
                elif self._discard is not None:
                    self._discard(item)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                if self._error is None:
                    self._error = exc
            finally:
                done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        """Queue ``item`` (blocks while the queue is full), then raise an earlier ``consume`` error.

        The item is queued even then, so that ``discard`` sees it.
        """
        self._queue.put(item)
        self._raise()

    def join(self) -> None:
        """Wait until every queued item was handled; raise a ``consume`` error."""
        self._queue.join()
        self._raise()

    def close(self, *, abort: bool = False) -> None:
        """Stop the thread once the queue is handled (``abort``: discard it); raise unless aborting."""
        if not self._closed:
            self._closed = True
            self._abort = self._abort or abort
            self._queue.put(_STOP)
            self._thread.join()
        if not abort:
            self._raise()
