"""Read buffers: how big each body's buffer is, so that a thousand bodies read at once stay small.

A body's reads go into a buffer that starts at FIRST_READ_SIZE and doubles while reads fill it,
up to READ_SIZE: one fast body reads 256 KiB at a time (fewer passes of the Python loop, and
under many threads fewer hand-offs of the GIL), a quiet one costs 16 KiB.

Rules:
1. Every body being read (a byte iterator, an event stream, a file download, a range of one)
   holds a ``Lease`` while it reads, and closes it when it ends, whatever happens.
2. What buffers hold beyond FIRST_READ_SIZE each comes from one process-wide BUDGET: a buffer
   grows only with what the budget has left, so N bodies never hold more than about
   BUDGET + N * FIRST_READ_SIZE bytes of buffers, however they start.
3. No buffer stays above its share (the budget divided among the bodies being read, at least
   FIRST_READ_SIZE): a body that grew while it was alone gives back the excess at its next read,
   so that the budget is shared out fairly (1,000 downloads at once: 64 KiB each; one: 256 KiB).
4. A forked child starts with an empty budget and a free lock (an at-fork handler, and a pid
   check as a lease is taken): a parent's thread may have held the lock at the fork, and the
   bodies it counted are the parent's. A lease of before the fork keeps its size, outside the budget.
"""

from __future__ import annotations

import os
import threading

__all__ = ["BUDGET", "FIRST_READ_SIZE", "READ_SIZE", "Lease", "ReadBuffer", "active"]

FIRST_READ_SIZE = 16 * 1024
READ_SIZE = 256 * 1024
# What the buffers of every body read at once may hold beyond FIRST_READ_SIZE each: 256 bodies
# at full size, 1,000 at 64 KiB (fast enough: a thousand threads reading 64 KiB at a time kept up
# with 1,000 x 512 KiB/s, 16 KiB at a time took 4x as long).
BUDGET = 64 << 20

_lock = threading.Lock()
_active = 0
_held = 0
_pid = os.getpid()
_generation = 0  # one more in each forked child: a lease of another generation is not counted


def _after_fork_in_child() -> None:
    global _lock, _active, _held, _pid, _generation
    _lock = threading.Lock()
    _active = _held = 0
    _pid = os.getpid()
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def active() -> int:
    """How many bodies are being read now, in this process."""
    return _active


class Lease:
    """One body's claim on the read budget: the size its buffer may have."""

    def __init__(self) -> None:
        global _active
        if _pid != os.getpid():  # forked by a path that ran no at-fork handler
            _after_fork_in_child()
        self.size = FIRST_READ_SIZE
        self._open = True
        self._generation = _generation
        with _lock:
            _active += 1

    def resize(self, want: int) -> int:
        """The size the buffer may have now, wanting ``want``: never above the body's share, and
        grown only with what the budget has left (by powers of two from FIRST_READ_SIZE)."""
        global _held
        if self._generation != _generation:  # taken before a fork: not in this process's budget
            return self.size
        with _lock:
            share = max(FIRST_READ_SIZE, BUDGET // max(1, _active))
            free = BUDGET - _held
            size = FIRST_READ_SIZE
            while size * 2 <= min(want, share) and (size * 2 <= self.size or size * 2 - self.size <= free):
                size *= 2
            _held += size - self.size
            self.size = size
            return size

    def close(self) -> None:
        """Give everything back (once)."""
        global _active, _held
        if self._open and self._generation == _generation:
            self._open = False
            with _lock:
                _held -= self.size - FIRST_READ_SIZE
                _active -= 1


class ReadBuffer:
    """A body's read buffer: doubles while reads fill it, up to ``limit``, within its lease."""

    def __init__(self, limit: int = READ_SIZE) -> None:
        self.limit = limit
        self.lease = Lease()
        self.view = memoryview(bytearray(min(FIRST_READ_SIZE, limit)))

    def next(self, n: int) -> memoryview:
        """The buffer for the next read, after a read of ``n`` bytes into ``view``: bigger when it
        filled it (and the budget allows), smaller when the body is above its share.

        A read "filled" the buffer when it left less than a sixteenth empty (a chunked body's
        framing is stripped from a full read). A buffer within the body's share that cannot or
        need not grow is kept without taking the budget's lock: a steady stream pays nothing per read.
        """
        current = len(self.view)
        filled = n >= current - (current >> 4)
        within_share = current <= FIRST_READ_SIZE or current <= BUDGET // max(1, _active)
        if within_share and (not filled or current >= self.limit):
            return self.view
        want = min(self.limit, 2 * current if filled else current)
        size = min(self.lease.resize(want), self.limit)
        if size != current:
            self.view = memoryview(bytearray(size))
        return self.view

    def close(self) -> None:
        self.lease.close()
