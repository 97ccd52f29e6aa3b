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
    "RangeUnusable",
    "Source",
    "Tally",
    "Whole",
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
# The first answer alone for PROBE_TIME seconds, then every connection for twice that: unless
# together they moved SPREAD_GAIN times as much a second, the rest goes over the first one alone.
PROBE_TIME = 0.3
SPREAD_GAIN = 1.2
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

    __slots__ = ("end", "owner", "pos", "start")

    def __init__(self, start: int, end: int, owner: int = 0) -> None:
        self.start = self.pos = start
        self.end = end
        self.owner = owner  # the fetcher writing it

    def __repr__(self) -> str:
        return f"<span {self.start}:{self.pos}:{self.end}>"


class RangePlan:
    """Which bytes of ``[0, total)`` are written, which are being fetched, and what to fetch next.

    Thread-safe. ``claim`` hands out the lowest missing piece, or half of the largest range being
    fetched; ``take`` reserves the next bytes of a span for its writer (fewer when another took
    the rest); ``written`` records them once written; ``release`` gives back what a span did not
    fetch; ``extend`` gives the piece an open answer reaches next, so that it is read on.

    How the plan adapts to the server (each change logged once, by ``what``):
    - answers that run past the range asked (``A-EOF``): each connection closed before its answer's
      end drops what it had in flight (megabytes), so the rest goes to the one reading from lowest;
    - a URL that expires (``cutoff``, monotonic): one region per connection, asked at once, and no
      request after the cutoff (no steal, no new piece);
    - answers that cannot serve pieces (short ones over and over, a 200 to a range, a wrong
      Content-Range of the same resource, ranges answered to the end): ``go_single`` gives every
      missing byte to one fetcher, the keeper, which reads one answer through and skips the bytes
      already held.
    """

    def __init__(
        self,
        total: int,
        done: Sequence[tuple[int, int]],
        piece: int,
        first: tuple[int, int] | None = None,
        *,
        connections: int = 1,
        cutoff: float | None = None,
        what: str = "the download",
    ) -> None:
        self.total = total
        self.changed = threading.Condition()
        self.connections = connections
        self.cutoff = cutoff
        self.what = what
        self.keeper: int | None = None  # in ``single``: the one fetcher
        # The fetcher reading the first answer on from the front, piece after piece (the others
        # take pieces from the back, so that it need not stop): one connection's pace, at least.
        self.reader: int | None = 0 if first is not None else None
        self.through = False  # single because ranges cannot serve the rest: one answer read through
        self.requests = 0  # answers asked for by the fetchers (the first one not counted)
        self.shorts = 0  # answers that ended before the range asked
        self.short_bytes = 0  # the bytes they brought
        self.reasons: list[str] = []  # why the plan changed, in order
        self.started = time.monotonic()
        self.done_at_start = sum(end - start for start, end in done)
        self.ask_time = 0.0  # the longest a request waited for its answer
        self._done: list[list[int]] = [[start, end] for start, end in done]
        self._active: list[_Span] = []
        self._todo: list[tuple[int, int]] = []
        for start, end in holes(done, total):
            if first is not None and start <= first[0] < end:
                if start < first[0]:
                    self._todo += _cut(start, first[0], piece)
                start = first[1]
            self._todo += _cut(start, end, piece)
        self.pieces = len(self._todo) + (first is not None)
        self.piece = piece
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

    @property
    def single(self) -> bool:
        return self.keeper is not None

    def done_ranges(self) -> list[tuple[int, int]]:
        with self.changed:
            return [(start, end) for start, end in self._done]

    def _open(self) -> bool:
        """Whether a new request may start (under the lock): not after a signed URL's cutoff."""
        return self.cutoff is None or time.monotonic() < self.cutoff

    def claim(self, fetcher: int = 0) -> _Span | None:
        """The next range to fetch, or None when nothing is left that is worth another connection
        (or another request: past the cutoff; in ``single``, for all but the keeper)."""
        with self.changed:
            if (self.keeper is not None and fetcher != self.keeper) or not self._open():
                return None
            if self._todo:  # the reader on from the front goes on at the front; the others from the back
                span = _Span(*self._todo.pop(0 if self.reader in (None, fetcher) else -1), fetcher)
            else:
                victim = max(self._active, key=lambda s: s.end - s.pos, default=None)
                if self.single or victim is None or not self._worth_stealing(victim.end - victim.pos):
                    return None
                middle = victim.pos + (victim.end - victim.pos) // 2
                middle -= middle % STEAL_ALIGN
                span, victim.end = _Span(middle, victim.end, fetcher), middle
            self._active.append(span)
            return span

    def _worth_stealing(self, left: int) -> bool:
        """Whether half of ``left`` bytes comes sooner over a new request than over the one reading
        it: a request costs its wait for the answer (``ask_time``), a server may take long to start
        each (one that reads the whole object for every range)."""
        if left < 2 * MIN_STEAL:
            return False
        elapsed = time.monotonic() - self.started
        if self.ask_time <= 0 or elapsed <= 0:
            return True
        per_connection = max(
            1.0, (self._done_sum() - self.done_at_start) / elapsed / max(1, len(self._active))
        )
        return left / 2 / per_connection > 2 * self.ask_time

    def _done_sum(self) -> int:
        return sum(end - start for start, end in self._done)

    def asked(self, seconds: float) -> None:
        """A request took ``seconds`` to be answered (the longest seen so far is kept)."""
        with self.changed:
            self.ask_time = max(self.ask_time, seconds)

    def recut(self, parts: int) -> None:
        """What is missing, in ``parts`` regions, each read on from one answer: asked at once."""
        with self.changed:
            todo = sum(end - start for start, end in self._todo)
            if not todo:
                return
            region = max(1, -(-todo // parts))
            merged: list[tuple[int, int]] = []
            for start, end in self._todo:
                if merged and merged[-1][1] == start:
                    merged[-1] = (merged[-1][0], end)
                else:
                    merged.append((start, end))
            self._todo = [piece for start, end in merged for piece in _cut(start, end, region)]

    def extend(self, fetcher: int, pos: int, stop: int | None, skip: int) -> _Span | None:
        """The next missing piece an open answer at ``pos`` (ending at ``stop``) reaches by skipping at
        most ``skip`` bytes (bytes held or being written by others): read on, no new request."""
        stop = self.total if stop is None else stop
        with self.changed:
            if self.keeper is not None and fetcher != self.keeper:
                return None
            for i, (start, end) in enumerate(self._todo):
                if end <= pos:
                    continue
                if start > pos + skip or start >= stop:
                    return None
                del self._todo[i]
                if start < pos:  # behind the answer: left for a request of its own
                    self._todo.insert(i, (start, pos))
                    start = pos
                span = _Span(start, end, fetcher)
                self._active.append(span)
                return span
            return None

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

    def short(self, asked: str, came: str, got: int) -> bool:
        """Count an answer that ended early; True when the pieces should go to one connection
        (answers too short to serve pieces: each costs a request for little)."""
        with self.changed:
            self.shorts += 1
            if self.single:
                return False
            if self.shorts == 1:
                log.debug("%s: %s was answered with %s", self.what, asked, came)
            self.short_bytes += got
            # Pieces still serve when answers bring a good part of one (a few requests a piece);
            # below a quarter, the requests would outgrow the plan: the rest over one answer.
            small = self.short_bytes < self.shorts * self.piece // 4
            return (small and self.shorts >= max(2, self.connections)) or self.requests > 3 * self.pieces

    def go_single(
        self, fetcher: int, reason: str, keeper: int | None = None, *, through: bool = True
    ) -> bool:
        """Give every missing byte to one fetcher, ``keeper`` or else ``fetcher``; True when that is
        ``fetcher`` (False: another fetcher has them). The others stop at the bytes they reserved;
        what they had left is the keeper's. ``through``: ranges cannot serve the rest, the keeper
        reads one answer through (else it asks for the holes, as one connection does)."""
        keeper = fetcher if keeper is None else keeper
        with self.changed:
            if self.keeper is not None and (self.keeper != keeper or self.through or not through):
                return self.keeper == fetcher
            self.keeper, self.through = keeper, through
            for span in self._active:
                if span.pos < span.end and span.owner != keeper:
                    self._todo.append((span.pos, span.end))
                    span.end = span.pos
            self._todo.sort()
            self.reasons.append(reason)
            log.log(
                logging.INFO if through else logging.DEBUG,
                "%s: one connection for the rest: %s",
                self.what,
                reason,
            )
            self.changed.notify_all()
            return keeper == fetcher


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
        self.gate = threading.Event()  # set: the fetchers but the first may start
        self.threads: list[threading.Thread] = []
        self.alive: set[int] = set()  # the fetchers still in their loop (under plan.changed)

    def start(self, connections: int) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._run, args=(i,), name=f"tinker-sync-range-{i}", daemon=True)
            for i in range(connections)
        ]
        self.running = len(threads)
        self.threads = threads
        for thread in threads:
            thread.start()
        return threads

    def _run(self, index: int) -> None:
        plan = self.plan
        lease = _buffers.Lease()
        source: Source | None = None
        span: _Span | None = None
        with plan.changed:
            self.alive.add(index)
        try:
            buffer = memoryview(bytearray(min(lease.resize(self.buffer_size), self.buffer_size)))
            if index > 0:  # the others start once the first answer's pace alone is known
                while not (self.gate.wait(WAKE_INTERVAL) or self.stop):
                    pass
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
                ended = self._copy(source, span, buffer)
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

    def _next(self, index: int, source: Source) -> _Span | None:
        """The piece this fetcher's open answer reaches next (None: close it). Over several
        connections, the front reader's next adjacent piece. One connection reads on, skipping up to
        a piece held already; its whole answer skips anything (ranges cannot serve the rest)."""
        plan = self.plan
        if not plan.single:
            return plan.extend(index, source.offset, source.stop, 0) if index == plan.reader else None
        return plan.extend(index, source.offset, source.stop, plan.total if plan.through else MIN_PIECE)

    def _open(self, index: int, span: _Span) -> Source | None:
        """Ask for ``span`` and see what came: the bytes from its start (maybe more), or a whole 200
        (then this fetcher keeps the rest); None when another fetcher keeps it."""
        plan = self.plan
        asked, end = f"bytes={span.pos}-{span.end - 1}", span.end
        with plan.changed:
            plan.requests += 1
            self.asking += 1
        self.tally.add(requests=1)
        asked_at = time.monotonic()
        try:
            source = self._track(index, self.fetch(span.pos, span.end))
            plan.asked(time.monotonic() - asked_at)
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
        if stop is not None and stop - end > MIN_PIECE and stop == plan.total and not plan.single:  # A-EOF
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

    def _reposition(self, index: int, span: _Span) -> None:
        """The keeper starts over from the lowest missing byte its answer reaches (its span back)."""
        plan = self.plan
        with plan.changed:
            if span.pos < span.end:
                plan._todo.append((span.pos, span.end))
                plan._todo.sort()
            span.end = span.pos

    def _single(self, index: int, span: _Span, reason: str) -> Source | None:
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

    def open_gate(self) -> None:
        """Let the other fetchers start."""
        self.gate.set()

    def abort(self) -> None:
        """Stop every fetcher now: one blocked in a read (a stalled connection) would otherwise hold
        the caller, after an error or an interrupt, until its read timed out."""
        with self.plan.changed:
            self.stop = True
            sources = list(self.reading.values())
        for source in sources:
            source.abort()

    def _copy(self, source: Source, span: _Span, buffer: memoryview) -> bool:
        """Read ``source`` into the span until the span (which another fetcher may shorten) ends,
        first skipping what the source holds before it. True when the source ended."""
        plan, fd = self.plan, self.fd
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
    whole: Whole | None = None,
    cutoff: float | None = None,
    tally: Tally | None = None,
) -> int:
    """Fetch what ``done`` lacks of ``[0, total)`` over ``connections`` connections into ``part``.

    Verifies (``total``, ``expected_size``, ``checks`` hashed in file order) and renames into
    place; returns the size.

    Args:
        first: an open source and the range ``[start, end)`` it is the first piece of.
        save: writes the sidecar with the ranges written (None: no sidecar, and a failure
            removes the ``.part``; with it, a failure other than an integrity error keeps both).
        whole: asks for the whole resource (the rest over one connection when ranges cannot
            serve it; None: such a server starts the file again, ``RangeChanged``).
        cutoff: no request may start after this ``time.monotonic()`` (a signed URL's expiry):
            one region per connection, all asked at once, no steal after it.
        tally: counts the requests and the bytes received, for the caller's report.

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
    if connections == 1:
        piece = max(1, missing)  # one request per hole
    elif cutoff is not None and (first is None or not PROBE_TIME):  # no pace to learn: all at once
        piece = max(MIN_PIECE, -(-missing // connections))
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
    if connections == 1:
        plan.keeper = 0  # one connection: it reads on from hole to hole
    fd = open_regular(part.part, os.O_RDWR | os.O_CREAT)
    keep = finished = False
    transfer: _Transfer | None = None
    try:
        _preallocate(fd, total)
        if save is not None:
            save(plan.done_ranges())
            keep = True
        transfer = _Transfer(plan, fd, fetch, first[0] if first is not None else None, buffer_size, whole)
        if tally is not None:
            transfer.tally = tally
        hasher = _InOrder(fd, checks)
        throttle = ProgressThrottle(progress, total, plan.done_bytes)
        probe = _Probe(plan, transfer, PROBE_TIME if connections > 1 and first else 0.0)
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


class _Probe:
    """Several connections only where they beat one: the first answer runs alone for ``seconds``,
    then every connection for twice that; unless together they went ``SPREAD_GAIN`` times as fast,
    the rest is the first one's (a server whose connections share one pace, or whose every request
    costs more than it brings). ``seconds`` 0: all start at once, for good."""

    def __init__(self, plan: RangePlan, transfer: _Transfer, seconds: float) -> None:
        self.plan, self.transfer, self.seconds = plan, transfer, seconds
        self.start, self.done = time.monotonic(), plan.done_bytes
        self.alone = 0.0
        self.phase = "alone" if seconds > 0 else "decided"
        if not seconds:
            transfer.open_gate()

    def check(self) -> None:
        if self.plan.done_bytes >= self.plan.total:  # the first answer brought it all: nobody waits
            self.transfer.open_gate()
        if self.phase == "decided":
            return
        now, done = time.monotonic(), self.plan.done_bytes
        elapsed = now - self.start
        if self.phase == "alone" and elapsed >= self.seconds:
            self.alone = (done - self.done) / elapsed
            self.start, self.done, self.phase = now, done, "together"
            plan = self.plan
            if plan.cutoff is not None and self.alone > 0:
                alone_needs = (plan.total - done) / self.alone
                if plan.cutoff - now < 1.5 * alone_needs:  # it may expire first: everything asked now
                    plan.recut(max(1, len(self.transfer.threads)))
                    log.debug("%s: its URL may expire first: one region per connection, asked now", plan.what)
            self.transfer.open_gate()
        elif self.phase == "together" and elapsed >= 2 * self.seconds:
            together = (done - self.done) / elapsed
            self.phase = "decided"
            with self.plan.changed:
                reading = 0 in self.transfer.alive  # it keeps the rest only if it is still at work
            mb = 1 << 20
            log.debug(
                "%s: %d connections moved %.1f MiB/s, the first alone %.1f MiB/s",
                self.plan.what,
                self.transfer.running,
                together / mb,
                self.alone / mb,
            )
            if together < SPREAD_GAIN * self.alone and reading:
                self.plan.go_single(
                    -1,
                    f"{self.transfer.running} connections moved {together / mb:.1f} MiB/s, "
                    f"the first alone {self.alone / mb:.1f} MiB/s",
                    keeper=0,
                    through=self.plan.cutoff is not None,  # a URL that expires: no request more
                )


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
