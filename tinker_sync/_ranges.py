"""One file over several connections: byte ranges written at their offsets into a preallocated ``.part``.

No HTTP here. The caller gives ``fetch(start, end)``, which returns a ``Source`` of the resource's
bytes from ``start`` (it may run past ``end``: it is closed there), and may give the first
``Source``, already open (the response that showed the server takes ranges). This module plans
the ranges, runs one fetcher thread per connection, writes with ``os.pwrite``, hashes the file in
order, records what is written in the sidecar, and verifies and renames as ``_receiver.Receiver`` does.

Rules:
1. The plan cuts what is missing into pieces, handed out lowest offset first, so that the bytes
   written from byte 0 on grow steadily: the caller's thread hashes them in file order as they
   land (MD5 and SHA-256 cannot be computed out of order), reading them back from the page cache,
   and only the last pieces are hashed after the transfer. A fetcher with nothing left to claim
   takes the back half of the largest range still being fetched, so that no connection idles
   while another has far to go.
2. Memory is constant: one buffer per connection (its share of the read budget, ``_buffers``)
   and one for hashing, whatever the size.
3. Every byte is written by exactly one fetcher: ``RangePlan.take`` hands out the bytes a fetcher
   may write before it writes them, and a range split by another fetcher ends where the split is.
4. The sidecar lists the ranges written, saved (after ``fdatasync``) about once a second and when
   the transfer stops: a re-run, even after ``kill -9``, fetches only what is missing.
5. Any fetcher's error stops them all; ``RangeChanged`` (the resource is not the one the ranges
   were pinned to) tells the caller to start again from zero.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from . import _buffers
from ._checksums import HASH_READ_SIZE, Checksum, new_hasher, verify
from ._exceptions import DownloadIntegrityError
from ._files import PartFile, check_disk_space, open_regular
from ._receiver import BUFFER_SIZE, COMMIT_INTERVAL, Progress, ProgressThrottle

__all__ = [
    "AUTO_CONNECTIONS",
    "MAX_PIECE",
    "MIN_PIECE",
    "RangeChanged",
    "RangePlan",
    "Source",
    "auto_connections",
    "piece_size",
    "receive_ranges",
]

log = logging.getLogger("tinker_sync")

# connections="auto": one connection below AUTO_STEP * 2 bytes, then one more per AUTO_STEP, up to
# AUTO_CONNECTIONS (and never more than the pool keeps). One HTTPS connection in one Python thread
# is CPU-bound far below what a machine receives, and object stores cap each connection's rate;
# below a few tens of MiB another connection's handshake costs more than it saves.
AUTO_STEP = 16 << 20
AUTO_CONNECTIONS = 8
# Pieces: about PIECES_PER_CONNECTION per connection, within [MIN_PIECE, MAX_PIECE]. Larger pieces
# cost fewer requests (each waits a round trip for its first byte); smaller ones keep the bytes
# written from byte 0 on closer to the transfer's front, so less is left to hash at the end.
PIECES_PER_CONNECTION = 4
MIN_PIECE = 1 << 20
MAX_PIECE = 64 << 20
# A fetcher takes half of another's range only if both halves are at least this big.
MIN_STEAL = 1 << 20
STEAL_ALIGN = 64 << 10
# A fetcher's one buffer: _receiver.BUFFER_SIZE bytes, written when full or after COMMIT_INTERVAL.
# The sidecar's list of written ranges is saved (after fdatasync) at most this often (seconds).
SIDECAR_INTERVAL = 1.0
# How often the caller's thread wakes to report progress and save the sidecar when nothing lands.
WAKE_INTERVAL = 0.1


class RangeChanged(Exception):
    """A range's answer does not continue the resource the others were pinned to: start again."""


class Source(Protocol):
    """A body of the resource's bytes from some offset on."""

    def readinto(self, buffer: memoryview, /) -> int:
        """Read the next bytes; 0 at the end of the body."""

    def close(self) -> None:
        """Release the connection (discarded when the body was not read to its end)."""

    def abort(self) -> None:
        """From another thread: make a read blocked on this body fail at once (the transfer stops)."""


Fetch = Callable[[int, int], Source]


def auto_connections(remaining: int, pool: int) -> int:
    """``connections="auto"``: 1 below 32 MiB, one more per 16 MiB, at most 8 and at most ``pool``."""
    return max(1, min(remaining // AUTO_STEP, AUTO_CONNECTIONS, pool))


def piece_size(remaining: int, connections: int) -> int:
    """The size of the pieces ``remaining`` bytes are cut into for ``connections`` connections."""
    want = remaining // max(1, connections * PIECES_PER_CONNECTION)
    return max(MIN_PIECE, min(MAX_PIECE, want))


def holes(done: Sequence[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """The ranges of ``[0, total)`` not in ``done`` (sorted, disjoint)."""
    missing, pos = [], 0
    for start, end in done:
        if start > pos:
            missing.append((pos, start))
        pos = max(pos, end)
    if pos < total:
        missing.append((pos, total))
    return missing


class _Span:
    """A range a fetcher owns: ``[start, pos)`` written (or being written), ``[pos, end)`` to fetch."""

    __slots__ = ("end", "pos", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = self.pos = start
        self.end = end

    def __repr__(self) -> str:
        return f"<span {self.start}:{self.pos}:{self.end}>"


class RangePlan:
    """Which bytes of ``[0, total)`` are written, which are being fetched, and what to fetch next.

    Thread-safe. ``claim`` hands out the lowest missing piece, or half of the largest range being
    fetched; ``take`` reserves the next bytes of a span for its writer (fewer when another took
    the rest); ``written`` records them once written; ``release`` gives back what a span did not
    fetch.
    """

    def __init__(
        self, total: int, done: Sequence[tuple[int, int]], piece: int, first: tuple[int, int] | None = None
    ) -> None:
        self.total = total
        self.changed = threading.Condition()
        self._done: list[list[int]] = [[start, end] for start, end in done]
        self._active: list[_Span] = []
        self._todo: list[tuple[int, int]] = []
        for start, end in holes(done, total):
            if first is not None and start <= first[0] < end:
                if start < first[0]:
                    self._todo += _cut(start, first[0], piece)
                start = first[1]
            self._todo += _cut(start, end, piece)
        self.first = _Span(*first) if first is not None else None
        if self.first is not None:
            self._active.append(self.first)

    @property
    def done_bytes(self) -> int:
        with self.changed:
            return sum(end - start for start, end in self._done)

    @property
    def prefix(self) -> int:
        """Bytes written from byte 0 on without a gap."""
        with self.changed:
            return self._done[0][1] if self._done and self._done[0][0] == 0 else 0

    def done_ranges(self) -> list[tuple[int, int]]:
        with self.changed:
            return [(start, end) for start, end in self._done]

    def claim(self) -> _Span | None:
        """The next range to fetch, or None when nothing is left that is worth another connection."""
        with self.changed:
            if self._todo:
                span = _Span(*self._todo.pop(0))
            else:
                victim = max(self._active, key=lambda s: s.end - s.pos, default=None)
                if victim is None or victim.end - victim.pos < 2 * MIN_STEAL:
                    return None
                middle = victim.pos + (victim.end - victim.pos) // 2
                middle -= middle % STEAL_ALIGN
                span, victim.end = _Span(middle, victim.end), middle
            self._active.append(span)
            return span

    def take(self, span: _Span, n: int) -> tuple[int, int]:
        """Reserve up to ``n`` bytes at the span's position for its fetcher: (offset, count)."""
        with self.changed:
            offset = span.pos
            n = max(0, min(n, span.end - offset))
            span.pos += n
            return offset, n

    def written(self, offset: int, n: int) -> None:
        """Record ``[offset, offset + n)`` as written."""
        end = offset + n
        with self.changed:
            ranges = self._done
            i = 0
            while i < len(ranges) and ranges[i][1] < offset:
                i += 1
            if i < len(ranges) and ranges[i][0] <= end:  # touches ranges[i]: merge
                ranges[i][0] = min(ranges[i][0], offset)
                ranges[i][1] = max(ranges[i][1], end)
                while i + 1 < len(ranges) and ranges[i + 1][0] <= ranges[i][1]:
                    ranges[i][1] = max(ranges[i][1], ranges.pop(i + 1)[1])
            else:
                ranges.insert(i, [offset, end])
            if i == 0 and ranges[0][0] == 0:  # the bytes from byte 0 on grew: there is more to hash
                self.changed.notify_all()

    def release(self, span: _Span) -> None:
        """The span's fetcher is done with it: what it did not reserve is fetched again later."""
        with self.changed:
            self._active.remove(span)
            if span.pos < span.end:
                self._todo.append((span.pos, span.end))
                self._todo.sort()


def _cut(start: int, end: int, piece: int) -> list[tuple[int, int]]:
    """``[start, end)`` in pieces of about ``piece`` bytes (equal ones: never a sliver at the end);
    none when it is empty (a hole the first piece fills: an empty range cannot be asked for)."""
    if end <= start:
        return []
    count = max(1, -(-(end - start) // piece))
    bounds = [start + (end - start) * i // count for i in range(count + 1)]
    return list(zip(bounds, bounds[1:], strict=False))


class _Transfer:
    """One attempt at the missing ranges: the fetcher threads and what they share."""

    def __init__(
        self, plan: RangePlan, fd: int, fetch: Fetch, first: Source | None, buffer_size: int
    ) -> None:
        self.plan = plan
        self.fd = fd
        self.fetch = fetch
        self.first = first
        self.buffer_size = buffer_size
        self.error: BaseException | None = None
        self.stop = False
        self.running = 0
        self.open: set[Source] = set()  # the sources being read (under plan.changed)

    def start(self, connections: int) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._run, args=(i == 0,), name=f"tinker-sync-range-{i}", daemon=True)
            for i in range(connections)
        ]
        self.running = len(threads)
        for thread in threads:
            thread.start()
        return threads

    def _run(self, first: bool) -> None:
        plan = self.plan
        lease = _buffers.Lease()
        try:
            buffer = memoryview(bytearray(min(lease.resize(self.buffer_size), self.buffer_size)))
            while not self.stop:
                span = plan.first if first and plan.first is not None else plan.claim()
                first = False
                if span is None:
                    return
                source = None
                if span is plan.first:
                    source, self.first = self.first, None
                try:
                    if source is None:
                        source = self.fetch(span.pos, span.end)
                    with plan.changed:
                        self.open.add(source)
                        stopped = self.stop
                    if not stopped:
                        self._copy(source, span, buffer)
                finally:
                    if source is not None:
                        with plan.changed:
                            self.open.discard(source)
                        source.close()
                    plan.release(span)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            with plan.changed:
                if self.error is None:
                    self.error = exc
                self.stop = True
        finally:
            lease.close()
            with plan.changed:
                self.running -= 1
                plan.changed.notify_all()

    def abort(self) -> None:
        """Stop every fetcher now: one blocked in a read (a stalled connection) would otherwise hold
        the caller, after an error or an interrupt, until its read timed out."""
        with self.plan.changed:
            self.stop = True
            sources = list(self.open)
        for source in sources:
            source.abort()

    def _copy(self, source: Source, span: _Span, buffer: memoryview) -> None:
        """Read ``source`` into the span until the span (which another fetcher may shorten) ends."""
        plan, fd = self.plan, self.fd
        while not self.stop:
            limit = min(len(buffer), span.end - span.pos)
            if limit <= 0:
                return
            filled, ended, since = 0, False, time.monotonic()
            # Fill the buffer before writing: a TLS read returns one 16 KiB record.
            while filled < limit and not self.stop:
                n = source.readinto(buffer[filled:limit])
                if not n:
                    ended = True
                    break
                filled += n
                if time.monotonic() - since >= COMMIT_INTERVAL:
                    break
            offset, count = plan.take(span, filled)
            _pwrite_all(fd, buffer[:count], offset)
            if count:
                plan.written(offset, count)
            elif ended and span.pos == span.start:  # a source that never moves would be fetched forever
                raise RangeChanged(f"the answer for the bytes from {span.start} on ended without one")
            if ended or count < filled:  # the body ended, or another fetcher took the rest
                return


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _preallocate(fd: int, total: int) -> None:
    """Reserve ``total`` bytes for the file (its blocks, where the file system can), so that
    writes at any offset cannot run out of space half-way and the file is not fragmented."""
    if os.fstat(fd).st_size >= total:
        return
    try:
        os.posix_fallocate(fd, 0, total)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, total)


def receive_ranges(
    part: PartFile,
    fetch: Fetch,
    *,
    connections: int,
    total: int,
    done: Sequence[tuple[int, int]] = (),
    first: tuple[Source, int, int] | None = None,
    checks: Sequence[Checksum] = (),
    expected_size: int | None = None,
    progress: Progress | None = None,
    save: Callable[[list[tuple[int, int]]], None] | None = None,
    buffer_size: int = BUFFER_SIZE,
) -> int:
    """Fetch what ``done`` lacks of ``[0, total)`` over ``connections`` connections into ``part``.

    Verifies (``total``, ``expected_size``, ``checks`` hashed in file order) and renames into
    place; returns the size.

    Args:
        first: an open source and the range ``[start, end)`` it is the first piece of.
        save: writes the sidecar with the ranges written (None: no sidecar, and a failure
            removes the ``.part``; with it, a failure other than an integrity error keeps both).

    Raises:
        RangeChanged: a range showed the resource changed (the ``.part`` is removed).
        DownloadIntegrityError: a size or checksum mismatch (the ``.part`` is removed).
        Whatever ``fetch`` or a source raised, once every fetcher stopped.
    """
    if expected_size is not None and expected_size != total:
        raise DownloadIntegrityError(
            f"Size mismatch for {part.dest}: expected {expected_size} bytes (expected_size), "
            f"the server announces {total}"
        )
    done = [(start, end) for start, end in done if end > start]
    missing = total - sum(end - start for start, end in done)
    check_disk_space(part.dest, missing)
    piece = piece_size(missing, connections)
    if first is not None:
        first = (first[0], first[1], min(first[2], first[1] + piece))
    plan = RangePlan(total, done, piece, (first[1], first[2]) if first is not None else None)
    fd = open_regular(part.part, os.O_RDWR | os.O_CREAT)
    keep = finished = False
    transfer: _Transfer | None = None
    try:
        _preallocate(fd, total)
        if save is not None:
            save(plan.done_ranges())
            keep = True
        transfer = _Transfer(plan, fd, fetch, first[0] if first is not None else None, buffer_size)
        hasher = _InOrder(fd, checks)
        throttle = ProgressThrottle(progress, total, plan.done_bytes)
        threads = transfer.start(connections)
        saved = time.monotonic()
        try:
            while True:
                with plan.changed:
                    if transfer.running and transfer.error is None and plan.prefix <= hasher.count:
                        plan.changed.wait(WAKE_INTERVAL)
                    running, error = transfer.running, transfer.error
                if error is not None:
                    break
                hasher.catch_up(plan.prefix)
                throttle.add(plan.done_bytes - throttle.done)
                if save is not None and time.monotonic() - saved >= SIDECAR_INTERVAL:
                    _save(fd, plan, save)
                    saved = time.monotonic()
                if not running:
                    break
        finally:
            transfer.abort()
            for thread in threads:
                thread.join()
            if save is not None and plan.done_bytes < total:  # stopped short: for the next run
                _save(fd, plan, save)
        if transfer.error is not None:
            if isinstance(transfer.error, RangeChanged):
                keep = False
            raise transfer.error
        written = plan.done_bytes
        if written != total:  # every fetcher gave up its range without an error: cannot happen
            raise DownloadIntegrityError(f"{part.dest}: {written} of {total} bytes were written")
        hasher.catch_up(total)
        os.fsync(fd)
        throttle.add(total - throttle.done)
        throttle.report()
        verify(part.dest, total, ((expected_size, "expected_size"),), checks, hasher.hashers)
        finished = True
    except DownloadIntegrityError:
        keep = False
        raise
    finally:
        os.close(fd)
        unused = transfer.first if transfer is not None else first[0] if first is not None else None
        if unused is not None:
            unused.close()
        if not (finished or keep):
            part.discard()
    part.finish()
    return total


def _save(fd: int, plan: RangePlan, save: Callable[[list[tuple[int, int]]], None]) -> None:
    """Record the ranges written, once they are on disk."""
    ranges = plan.done_ranges()
    os.fdatasync(fd)
    save(ranges)


class _InOrder:
    """The file's checksums, computed front to back as the bytes from byte 0 on land."""

    def __init__(self, fd: int, checks: Iterable[Checksum]) -> None:
        self.fd = fd
        self.hashers = {c.algorithm: new_hasher(c.algorithm) for c in checks}
        self.count = 0 if self.hashers else 1 << 62  # nothing to hash: never wait for it
        self._buffer = memoryview(bytearray(HASH_READ_SIZE)) if self.hashers else None

    def catch_up(self, prefix: int) -> None:
        """Hash the bytes from ``count`` up to ``prefix``, reading them back from the file."""
        if self._buffer is None:
            return
        while self.count < prefix:
            view = self._buffer[: min(len(self._buffer), prefix - self.count)]
            n = os.preadv(self.fd, [view], self.count)
            if n <= 0:
                raise DownloadIntegrityError(f"the partial file ended at byte {self.count} while hashing")
            for hasher in self.hashers.values():
                hasher.update(view[:n])
            self.count += n
