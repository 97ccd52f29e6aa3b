"""One file over several connections: byte ranges written at their offsets into a ``.part`` of the file's size.

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

from . import _buffers, _ramp, _range_plan
from ._checksums import HASH_READ_SIZE, Checksum, new_hasher, verify
from ._exceptions import DownloadIntegrityError
from ._files import PartFile, check_disk_space, open_regular
from ._options import FileOptions
from ._range_plan import RangePlan, Span, piece_size
from ._receiver import BUFFER_SIZE, COMMIT_INTERVAL, ProgressThrottle

__all__ = [
    "RangeChanged",
    "RangeUnusable",
    "Source",
    "Tally",
    "Whole",
    "receive_ranges",
]

log = logging.getLogger("tinker_sync")

# A fetcher's one buffer: _receiver.BUFFER_SIZE bytes, written when full or after COMMIT_INTERVAL.
# The sidecar's list of written ranges is saved (after fdatasync) at most this often (seconds).
SIDECAR_INTERVAL = 1.0
# An answer with at most this many bytes left past those used is read to its end (its connection
# kept); one with more is closed (its connection dropped, with what it had in flight).
DRAIN_LIMIT = 64 << 10
# How often the caller's thread wakes to report progress and save the sidecar when nothing lands.
WAKE_INTERVAL = 0.1


class Tally:
    """What a download's transfers cost, over every connection: requests asked, body bytes received
    (skipped ones included). Thread-safe; one per logical download, for its ``stream_end`` record."""

    def __init__(self) -> None:
        self.requests = 0
        self.received = 0
        self._lock = threading.Lock()

    def add(self, *, requests: int = 0, received: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.received += received


class RangeChanged(Exception):
    """A range's answer does not continue the resource the others were pinned to: start again."""


class RangeUnusable(Exception):
    """A range's answer cannot be used (a Content-Range off its offset, a body shorter than its
    range), yet the resource is the same: the rest comes over one connection, nothing is dropped."""


class Source(Protocol):
    """A body of the resource's bytes from ``offset`` on, up to ``stop``."""

    @property
    def offset(self) -> int:
        """The resource offset of the next byte ``readinto`` gives."""

    @property
    def stop(self) -> int | None:
        """Where the body ends in the resource (exclusive); None: at the resource's end."""

    def readinto(self, buffer: memoryview, /) -> int:
        """Read the next bytes; 0 at the end of the body."""

    def close(self) -> None:
        """Release the connection (discarded when the body was not read to its end)."""

    def abort(self) -> None:
        """From another thread: make a read blocked on this body fail at once (the transfer stops)."""


# ``fetch(start, end)``: a source holding byte ``start`` (it may start before it, end before ``end``
# or run past it). ``whole()``: the whole resource from byte 0, asked without a Range.
Fetch = Callable[[int, int], Source]
Whole = Callable[[], Source]


class _Transfer:
    """One attempt at the missing ranges: the fetcher threads and what they share."""

    def __init__(
        self,
        plan: RangePlan,
        fd: int,
        fetch: Fetch,
        first: Source | None,
        buffer_size: int,
        whole: Whole | None = None,
    ) -> None:
        self.plan = plan
        self.fd = fd
        self.fetch = fetch
        self.whole = whole
        self.first = first
        self.buffer_size = buffer_size
        self.tally = Tally()
        self.error: BaseException | None = None
        self.stop = False
        self.running = 0
        self.reading: dict[int, Source] = {}  # each fetcher's open source (under plan.changed)
        self.asking = 0  # fetchers waiting for an answer (under plan.changed)
        self.threads: list[threading.Thread] = []
        self.alive = plan.alive  # the fetchers still in their loop (under plan.changed)
        self.heard: set[int] = set()  # the fetchers that had an answer (under plan.changed)
        self.counts: list[int] = []  # the bytes each fetcher read into the file

    def start(self, connections: int) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._run, args=(i,), name=f"tinker-sync-range-{i}", daemon=True)
            for i in range(connections)
        ]
        self.running = len(threads)
        self.threads = threads
        self.counts = [0] * len(threads)
        with self.plan.changed:
            self.alive.update(range(len(threads)))
            if self.first is not None:
                self.heard.add(0)
        for thread in threads:
            thread.start()
        return threads

    def _run(self, index: int) -> None:
        plan = self.plan
        lease = _buffers.Lease()
        source: Source | None = None
        span: Span | None = None
        try:
            with plan.changed:  # the others start as the ramp wants them (``_ramp``)
                while index >= plan.width and not (plan.settled or self.stop):
                    plan.changed.wait(WAKE_INTERVAL)
            # Its share of the read budget once it may read (a fetcher never wanted holds none).
            buffer = memoryview(bytearray(min(lease.resize(self.buffer_size), self.buffer_size)))
            if index == 0 and plan.first is not None:
                span, source, self.first = plan.first, self.first, None
                if source is not None:
                    self._track(index, source)
                    if source.offset < span.pos and source.stop is None:  # a whole 200 to a range
                        plan.go_single(index, f"bytes={span.pos}- was answered with the whole resource (200)")
                        self._reposition(index, span)
                        span = self._next(index, source)
            else:
                span = plan.claim(index)
            while span is not None and not self.stop:
                if source is None:
                    source = self._open(index, span)
                    if source is None:  # another fetcher keeps the rest
                        break
                    if span.pos >= span.end:  # its span went back to the plan, for the keeper
                        plan.release(span)
                        span = self._next(index, source) if plan.keeper == index else None
                        continue
                asked_from = span.pos
                ended = self._copy(index, source, span, buffer)
                if self.stop:
                    break
                if span.pos < span.end and ended:  # the answer ended before the span: a short one
                    asked = f"bytes={asked_from}-{span.end - 1}"
                    got = source.offset - asked_from
                    came = f"bytes {asked_from}-{source.offset - 1}"
                    self._close(source)
                    source = None
                    if plan.through or plan.short(asked, came, got):
                        source = self._single(
                            index, span, f"the server answers ranges short ({asked}: {came})"
                        )
                        if source is None:
                            break
                        span = self._next(index, source)
                    continue
                plan.release(span)
                span = None
                if not ended:
                    span = self._next(index, source)
                if span is None:
                    self._drain(source, buffer)
                    self._close(source)
                    source = None
                    span = plan.claim(index)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            with plan.changed:
                if self.error is None:
                    self.error = exc
                self.stop = True
        finally:
            if source is not None:
                self._close(source)
            if span is not None:
                plan.release(span)
            lease.close()
            with plan.changed:
                self.alive.discard(index)
                self.running -= 1
                plan.changed.notify_all()

    def _next(self, index: int, source: Source) -> Span | None:
        """The piece this fetcher's open answer reaches next (None: close it). Over several
        connections, the front reader's next adjacent piece. One connection reads on, skipping up to
        a piece held already; its whole answer skips anything (ranges cannot serve the rest)."""
        plan = self.plan
        if not plan.single:
            return plan.extend(index, source.offset, source.stop, 0) if index == plan.reader else None
        return plan.extend(
            index, source.offset, source.stop, plan.total if plan.through else _range_plan.MIN_PIECE
        )

    def _open(self, index: int, span: Span) -> Source | None:
        """Ask for ``span`` and see what came: the bytes from its start (maybe more), or a whole 200
        (then this fetcher keeps the rest); None when another fetcher keeps it."""
        plan = self.plan
        end = span.end
        if plan.single:  # one connection: one request for the whole hole (or the rest), read on
            end = plan.total if plan.through else plan.reach(span.end)
        elif index != plan.reader and span.pos < span.end:  # a piece ahead of the front: its blocks
            _reserve(self.fd, span.pos, span.end)
        asked = f"bytes={span.pos}-{end - 1}"
        with plan.changed:
            plan.requests += 1
            self.asking += 1
        self.tally.add(requests=1)
        asked_at = time.monotonic()
        try:
            source = self._track(index, self.fetch(span.pos, end))
            plan.asked(time.monotonic() - asked_at)
            with plan.changed:
                self.heard.add(index)
        except RangeUnusable as exc:
            unusable: RangeUnusable | None = exc
        else:
            unusable = None
        finally:
            with plan.changed:
                self.asking -= 1
                plan.changed.notify_all()
        if unusable is not None:
            return self._single(index, span, str(unusable))
        stop = source.stop
        if source.offset == 0 and span.pos > 0 and stop is None:  # the whole, to a range
            if not plan.go_single(index, f"{asked} was answered with the whole resource (200)"):
                self._close(source)
                return None
            self._reposition(index, span)
            return source
        if (
            stop is not None and stop - end > _range_plan.MIN_PIECE and stop == plan.total and not plan.single
        ):  # A-EOF
            keeper = self._lowest()
            reason = f"{asked} was answered with bytes {source.offset}-{stop - 1}"
            if not plan.go_single(index, reason, keeper):
                self._close(source)
                return None
            if keeper == index:
                self._reposition(index, span)
        return source

    def _lowest(self) -> int | None:
        """The fetcher reading an answer to the end from the lowest offset (it keeps the rest)."""
        with self.plan.changed:
            running = [
                (src.offset, i) for i, src in self.reading.items() if src.stop in (None, self.plan.total)
            ]
        return min(running)[1] if running else None

    def _reposition(self, index: int, span: Span) -> None:
        """The keeper starts over from the lowest missing byte its answer reaches (its span back)."""
        plan = self.plan
        with plan.changed:
            if span.pos < span.end:
                plan._todo.append((span.pos, span.end))
                plan._todo.sort()
            span.end = span.pos

    def _single(self, index: int, span: Span, reason: str) -> Source | None:
        """Go to one connection: this fetcher keeps the rest, read from a whole answer (None: another
        fetcher keeps it). Without a way to ask for the whole, the file starts again."""
        if self.whole is None:
            raise RangeChanged(reason)
        if not self.plan.go_single(index, reason):
            return None
        self._reposition(index, span)
        plan = self.plan
        with plan.changed:  # the others' requests in flight are answered (and closed) first
            plan.requests += 1
            while self.asking and not self.stop:
                plan.changed.wait(WAKE_INTERVAL)
        self.tally.add(requests=1)
        return self._track(index, self.whole())

    def _track(self, index: int, source: Source) -> Source:
        with self.plan.changed:
            self.reading[index] = source
            stopped = self.stop
        if stopped:
            self._close(source)
            raise RangeChanged("the transfer stopped")
        return source

    def _drain(self, source: Source, buffer: memoryview) -> None:
        """Read what little an answer has past the bytes used (a 206 covering more than asked), so
        that its connection goes back to the pool rather than being closed."""
        stop = source.stop
        if stop is None or stop - source.offset > DRAIN_LIMIT:
            return
        while not self.stop and source.offset < stop:
            n = source.readinto(buffer[: min(len(buffer), stop - source.offset)])
            if not n:
                return
            self.tally.add(received=n)

    def _close(self, source: Source) -> None:
        with self.plan.changed:
            for index, reading in list(self.reading.items()):
                if reading is source:
                    del self.reading[index]
        source.close()

    def moved(self) -> int:
        """Bytes read into the file so far, over every connection (``_ramp.Fetchers``)."""
        return sum(self.counts)

    def answered(self, width: int) -> bool:
        """Whether every fetcher below ``width`` still at work has had its answer."""
        with self.plan.changed:
            return all(i in self.heard or i not in self.alive for i in range(width))

    def first_reading(self) -> bool:
        """Whether the first answer's fetcher is still at work."""
        with self.plan.changed:
            return 0 in self.alive

    def abort(self) -> None:
        """Stop every fetcher now: one blocked in a read (a stalled connection) would otherwise hold
        the caller, after an error or an interrupt, until its read timed out."""
        with self.plan.changed:
            self.stop = True
            sources = list(self.reading.values())
        for source in sources:
            source.abort()

    def _copy(self, index: int, source: Source, span: Span, buffer: memoryview) -> bool:
        """Read ``source`` into the span until the span (which another fetcher may shorten) ends,
        first skipping what the source holds before it. True when the source ended."""
        plan, fd, counts = self.plan, self.fd, self.counts
        while not self.stop and source.offset < span.pos:  # bytes held already, or being written
            n = source.readinto(buffer[: min(len(buffer), span.pos - source.offset)])
            if not n:
                return True
            self.tally.add(received=n)
        while not self.stop:
            limit = min(len(buffer), span.end - span.pos)
            if limit <= 0:
                return False
            filled, ended, since = 0, False, time.monotonic()
            # Fill the buffer before writing: a TLS read returns one 16 KiB record.
            try:
                while filled < limit and not self.stop:
                    n = source.readinto(buffer[filled:limit])
                    if not n:
                        ended = True
                        break
                    filled += n
                    counts[index] += n  # this fetcher's own slot: read by the ramp without a lock
                    if time.monotonic() - since >= COMMIT_INTERVAL:
                        break
            finally:  # what arrived before a failure is written too: a re-run need not fetch it
                self.tally.add(received=filled)
                offset, count = plan.take(span, filled)
                _pwrite_all(fd, buffer[:count], offset)
                if count:
                    plan.written(offset, count)
            if ended and not filled and span.pos == span.start:  # a source that never moves: fetched forever
                raise RangeChanged(f"the answer for the bytes from {span.start} on ended without one")
            if ended:
                return True
            if count < filled:  # another fetcher took the rest
                return False
        return False


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _size(fd: int, total: int) -> None:
    """Give the file its ``total`` bytes, as a hole: blocks come as the bytes are written (reserving
    them all up front costs a pass over the whole file where the file system zeroes them, as tmpfs
    does: 4 GiB took longer than one connection's transfer of it)."""
    if os.fstat(fd).st_size < total:
        os.ftruncate(fd, total)


def _reserve(fd: int, start: int, end: int) -> None:
    """Reserve the blocks of a piece written ahead of the front (where the file system can), so that
    it is not scattered among the others' pieces and cannot run out of space half-way."""
    try:
        os.posix_fallocate(fd, start, end - start)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def receive_ranges(
    part: PartFile,
    fetch: Fetch,
    *,
    connections: int,
    total: int,
    done: Sequence[tuple[int, int]] = (),
    first: tuple[Source, int, int] | None = None,
    checks: Sequence[Checksum] = (),
    file: FileOptions,
    save: Callable[[list[tuple[int, int]]], None] | None = None,
    buffer_size: int = BUFFER_SIZE,
    whole: Whole | None = None,
    cutoff: float | None = None,
    tally: Tally | None = None,
    ask_time: float = 0.0,
) -> int:
    """Fetch what ``done`` lacks of ``[0, total)`` over ``connections`` connections into ``part``.

    Verifies (``total``, ``file.expected_size``, ``checks`` hashed in file order) and renames into
    place; returns the size. ``file.progress`` hears of the bytes written.

    Args:
        first: an open source and the range ``[start, end)`` it is the first piece of.
        save: writes the sidecar with the ranges written (None: no sidecar, and a failure
            removes the ``.part``; with it, a failure other than an integrity error keeps both).
        whole: asks for the whole resource (the rest over one connection when ranges cannot
            serve it; None: such a server starts the file again, ``RangeChanged``).
        cutoff: no request may start after this ``time.monotonic()`` (a signed URL's expiry):
            one region per connection, all asked at once, no steal after it.
        tally: counts the requests and the bytes received, for the caller's report.
        ask_time: how long the first answer took to come (seconds): what a request costs.

    Raises:
        RangeChanged: a range showed the resource changed (the ``.part`` is removed).
        DownloadIntegrityError: a size or checksum mismatch (the ``.part`` is removed).
        Whatever ``fetch`` or a source raised, once every fetcher stopped.
    """
    expected_size = file.expected_size
    if expected_size is not None and expected_size != total:
        raise DownloadIntegrityError(
            f"Size mismatch for {part.dest}: expected {expected_size} bytes (expected_size), "
            f"the server announces {total}"
        )
    done = [(start, end) for start, end in done if end > start]
    missing = total - sum(end - start for start, end in done)
    check_disk_space(part.dest, missing)
    if connections == 1:
        piece = max(1, missing)  # one request per hole
    elif cutoff is not None and (first is None or not _ramp.PROBE_TIME):  # no pace to learn: all at once
        piece = max(_range_plan.MIN_PIECE, -(-missing // connections))
        log.debug("%s: its URL expires: one region per connection, asked at once", part.dest)
    else:
        piece = piece_size(missing, connections)
    if first is not None:
        first = (first[0], first[1], min(first[2], first[1] + piece))
    plan = RangePlan(
        total,
        done,
        piece,
        (first[1], first[2]) if first is not None else None,
        connections=connections,
        cutoff=cutoff,
        what=str(part.dest),
    )
    plan.hashing = bool(checks)
    if ask_time > 0:
        plan.asked(ask_time)
    if connections == 1:
        plan.keeper = 0  # one connection: it reads on from hole to hole
    fd = open_regular(part.part, os.O_RDWR | os.O_CREAT)
    keep = finished = False
    transfer: _Transfer | None = None
    try:
        _size(fd, total)
        if save is not None:
            save(plan.done_ranges())
            keep = True
        transfer = _Transfer(plan, fd, fetch, first[0] if first is not None else None, buffer_size, whole)
        if tally is not None:
            transfer.tally = tally
        hasher = _InOrder(fd, checks)
        throttle = ProgressThrottle(file.progress, total, plan.done_bytes)
        probe = _ramp.Ramp(plan, transfer, _ramp.PROBE_TIME if connections > 1 and first else 0.0)
        if not probe.seconds:
            plan.reader = None  # no pace to keep: the first answer stops after its piece, like any
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
                probe.check()
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
        if written != total and cutoff is not None and time.monotonic() >= cutoff:
            raise TimeoutError(
                f"{part.dest}: its URL expired before every range could be asked ({written} of {total} "
                "bytes); the .part is kept: run again with a new URL to fetch the rest"
            )
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
