"""The plan of a download over several connections: which bytes are written, being fetched, next.

Pure bookkeeping, no I/O: ``_ranges`` runs the fetcher threads and writes; this module decides what
each fetcher asks for. ``RangePlan`` is thread-safe; its rules are those of ``_ranges`` (lowest
offset first, halves stolen from the largest range in flight, every byte handed out once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

__all__ = [
    "AUTO_CONNECTIONS",
    "MAX_PIECE",
    "MIN_PIECE",
    "RangePlan",
    "Span",
    "auto_connections",
    "cut",
    "holes",
    "piece_size",
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


class Span:
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
        # Fetchers below ``width`` claim pieces (the others wait, or stop once no longer wanted:
        # ``settled``); ``alive``: the fetchers still at work, kept by the caller.
        self.width = connections
        self.settled = False
        self.alive: set[int] = set()
        # Whether the bytes from byte 0 on growing wake the caller (it hashes them as they land);
        # with nothing to hash, it wakes on its own pace: not once per buffer written.
        self.hashing = True
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
        self._active: list[Span] = []
        self._todo: list[tuple[int, int]] = []
        for start, end in holes(done, total):
            if first is not None and start <= first[0] < end:
                if start < first[0]:
                    self._todo += cut(start, first[0], piece)
                start = first[1]
            self._todo += cut(start, end, piece)
        self.pieces = len(self._todo) + (first is not None)
        self.piece = piece
        self.first = Span(*first) if first is not None else None
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

    def claim(self, fetcher: int = 0) -> Span | None:
        """The next range to fetch, or None when nothing is left that is worth another connection
        (or another request: past the cutoff; in ``single``, for all but the keeper)."""
        with self.changed:
            if (self.keeper is not None and fetcher != self.keeper) or not self._open():
                return None
            if fetcher >= self.width and any(i < self.width for i in self.alive):
                return None  # not wanted (while a fetcher that is can take it)
            if self._todo:  # the reader on from the front (or the one keeper) goes on at the front;
                front = self.reader in (None, fetcher) or self.keeper == fetcher  # the others from the back
                start, end = self._todo.pop(0 if front else -1)
                if not front and self._read_on_into(start) and end - start >= 2 * MIN_STEAL:
                    # The reader's answer runs on into it: the back half, the front half left to it.
                    middle = start + (end - start) // 2
                    middle -= middle % STEAL_ALIGN
                    self._todo.append((start, middle))
                    start = middle
                span = Span(start, end, fetcher)
            else:
                victim = max(self._active, key=lambda s: s.end - s.pos, default=None)
                if self.single or victim is None or not self._worth_stealing(victim.end - victim.pos):
                    return None
                middle = victim.pos + (victim.end - victim.pos) // 2
                middle -= middle % STEAL_ALIGN
                span, victim.end = Span(middle, victim.end, fetcher), middle
            self._active.append(span)
            return span

    def _read_on_into(self, start: int) -> bool:
        """Whether the reader's span ends at ``start``: its answer reads on into what begins there
        (under the lock)."""
        return any(s.owner == self.reader and s.end == start for s in self._active)

    def set_width(self, width: int, *, settled: bool = False) -> None:
        """Let the fetchers below ``width`` claim pieces; ``settled``: for good (the others stop)."""
        with self.changed:
            self.width, self.settled = width, settled
            self.changed.notify_all()

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

    def grow(self, piece: int) -> None:
        """Pieces of at least ``piece`` bytes for what is left to hand out (a request costs so much
        that smaller pieces would spend more time asking than moving bytes)."""
        with self.changed:
            if piece <= self.piece:
                return
            self.piece = piece
            self._todo = [p for start, end in self._merged() for p in cut(start, end, piece)]

    def reach(self, end: int) -> int:
        """Where the missing bytes that continue from ``end`` stop: the end of the hole a request for
        the piece before ``end`` may run on through (``end`` when nothing is missing there)."""
        with self.changed:
            for start, stop in self._merged():
                if start == end:
                    return stop
            return end

    def _merged(self) -> list[tuple[int, int]]:
        """The pieces to hand out, adjacent ones joined (under the lock)."""
        merged: list[tuple[int, int]] = []
        for start, end in self._todo:
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged

    def recut(self, parts: int) -> None:
        """What is missing, in ``parts`` regions, each read on from one answer: asked at once."""
        with self.changed:
            todo = sum(end - start for start, end in self._todo)
            if not todo:
                return
            region = max(1, -(-todo // parts))
            self._todo = [piece for start, end in self._merged() for piece in cut(start, end, region)]

    def extend(self, fetcher: int, pos: int, stop: int | None, skip: int) -> Span | None:
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
                span = Span(start, end, fetcher)
                self._active.append(span)
                return span
            return None

    def take(self, span: Span, n: int) -> tuple[int, int]:
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
            if i == 0 and ranges[0][0] == 0 and self.hashing:  # the bytes from byte 0 on grew: to hash
                self.changed.notify_all()

    def release(self, span: Span) -> None:
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
        self,
        fetcher: int,
        reason: str,
        keeper: int | None = None,
        *,
        through: bool = True,
        level: int | None = None,
    ) -> bool:
        """Give every missing byte to one fetcher, ``keeper`` or else ``fetcher``; True when that is
        ``fetcher`` (False: another fetcher has them). The others stop at the bytes they reserved;
        what they had left is the keeper's. ``through``: ranges cannot serve the rest, the keeper
        reads one answer through (else it asks for the holes, as one connection does: each hole to
        the end, one request). ``level``: of the log line (INFO when ranges failed, else DEBUG)."""
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
                level if level is not None else logging.INFO if through else logging.DEBUG,
                "%s: one connection for the rest: %s",
                self.what,
                reason,
            )
            self.changed.notify_all()
            return keeper == fetcher


def cut(start: int, end: int, piece: int) -> list[tuple[int, int]]:
    """``[start, end)`` in pieces of about ``piece`` bytes (equal ones: never a sliver at the end);
    none when it is empty (a hole the first piece fills: an empty range cannot be asked for)."""
    if end <= start:
        return []
    count = max(1, -(-(end - start) // piece))
    bounds = [start + (end - start) * i // count for i in range(count + 1)]
    return list(zip(bounds, bounds[1:], strict=False))
