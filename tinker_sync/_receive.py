"""A response's body into a file: over its one connection (``receive``) or with the rest of the
resource over several (``receive_over_ranges``), atomic and verified (``_receiver``, ``_ranges``).

No response class here: the receiver reads any ``FileResponse`` (``StreamedResponse`` is one),
as ``EventStream`` reads any ``EventSource``; a ``FileResponse`` opens the other ranges of its
resource through a ``RangeOpener`` (its sender, retry budget and call options stay with it).

Rules:
1. The bytes are stored as served (``as_served``: ``Content-Encoding: gzip`` stays compressed:
   the store's length and checksums are the compressed bytes').
2. Each buffer is filled before it is written and hashed: a TLS read returns one 16 KiB record,
   and a hand-off per record would cost more than the record. A slow body still reaches the file
   (and the progress callback) every ``COMMIT_INTERVAL``.
3. A body that ends with its connection is complete only when a length or a checksum confirms it.
4. A body that restarts from byte 0 (the resource came back whole, maybe changed) restarts the
   file: new size, checksums and sidecar. A range showing that the resource changed starts the
   whole file again, with a fresh GET, in the same retry budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from typing import Any, Generic, Protocol, TypeVar, Unpack

from ._checksums import Checksum, checksums_from
from ._continuation import answer_problem, parse_content_range, whole_request
from ._exceptions import APIConnectionError, APIStatusError, DownloadIntegrityError
from ._files import PartFile
from ._observe import mask_url
from ._options import Connections, FileOptions, RequestOptions, check_connections
from ._ranges import RangeChanged, RangeUnusable, Tally, receive_ranges
from ._receiver import BUFFER_SIZE, COMMIT_INTERVAL, Receiver
from ._retry import RetryBudget, RetryHints
from ._transport import Request

__all__ = [
    "Connections",
    "FileResponse",
    "RangeFetcher",
    "RangeOpener",
    "RangeSource",
    "check_connections",
    "receive",
    "receive_over_ranges",
]

R = TypeVar("R", bound="FileResponse")
R_co = TypeVar("R_co", bound="FileResponse", covariant=True)

log = logging.getLogger("tinker_sync")


class FileResponse(Protocol):
    """What the receiver reads: a response whose body is not read yet (``StreamedResponse``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def url(self) -> str: ...
    @property
    def request(self) -> Request: ...
    @property
    def position(self) -> int:
        """Offset in the whole resource of the next body byte."""

    @property
    def total_size(self) -> int | None:
        """Size of the whole resource, when known."""

    @property
    def validator(self) -> str | None:
        """What ``If-Range`` can pin a resume to."""

    @property
    def close_delimited(self) -> bool:
        """The body ends when its connection closes (no length, no chunked framing)."""

    def as_served(self) -> None:
        """From now on, hand out the body's bytes as served (no ``Content-Encoding`` decoded)."""

    def claim(self) -> None:
        """Start reading the body (StreamAlreadyConsumed when it was read or closed)."""

    def readinto(
        self, buffer: memoryview, /, *, resume: bool = ..., on_restart: Callable[[], None] | None = ...
    ) -> int:
        """Read the next bytes into ``buffer``, resuming a broken body; 0 at its end."""

    def close(self) -> None:
        """Release the connection."""

    def abort(self) -> None:
        """From another thread: make a read blocked on this body fail at once."""

    def connections_for(self, connections: Connections) -> int:
        """How many connections may fetch the rest of the body at once."""

    def open_ranges(self, resume: bool) -> RangeOpener:
        """What opens the other ranges of this resource (through this response's sender)."""

    def resume_through(self, sender: Any) -> None:
        """Send this body's resumes through ``sender`` (a ``Sender`` of such responses)."""


class Sender(Protocol[R_co]):
    """What sends a response's requests again (the client, or a URL signer): its resumes and its
    other ranges; ``max_connections``, the most its pool keeps."""

    @property
    def max_connections(self) -> int: ...

    def send(
        self,
        request: Request,
        options: RequestOptions,
        budget: RetryBudget | None = ...,
        *,
        quiet: bool = ...,
    ) -> R_co:
        """Send ``request`` as the call's ``options`` say, in ``budget`` (quiet: no hooks, part of a
        call already reported)."""

    def backoff(
        self, budget: RetryBudget, request: Request, reason: str, **hints: Unpack[RetryHints]
    ) -> bool:
        """Spend a retry of ``budget`` on ``reason`` (waiting first); False when it is spent."""


class RangeOpener(Protocol):
    """Opens byte ranges of one resource, pinned to the version the first response showed."""

    def fetch(self, start: int, end: int) -> FileResponse:
        """A response for bytes ``[start, end)``, claimed and as served; RangeChanged when the
        answer is not those bytes of that version."""

    def stop(self) -> None:
        """No more sends, resumes or retries: the transfer stopped."""

    def restart(self, problem: str) -> FileResponse:
        """Spend a retry on the whole resource again (``problem``: why), as served; a response
        that cannot be had raises APIConnectionError."""

    def whole(self) -> FileResponse:
        """The whole resource again, without a Range, claimed (the rest over one connection when
        ranges cannot serve it); RangeChanged unless it is the version pinned."""


class RangeSource:
    """A response as a ``_ranges.Source``: resumed in the call; a resume that shows another
    version of the resource raises ``RangeChanged``."""

    def __init__(self, response: FileResponse, opener: RangeOpener, resume: bool) -> None:
        self.response = response
        self.opener = opener
        self.resume = resume
        self._lock = threading.Lock()  # close (the fetcher's thread) and abort (the caller's) apart
        self._closed = False

    @property
    def offset(self) -> int:
        """The resource offset of the next byte."""
        return self.response.position

    @property
    def stop(self) -> int | None:
        """Where the answer ends in the resource (exclusive; None: a 200, to the end)."""
        response = self.response
        parsed = parse_content_range(response.headers.get("content-range", ""))
        return parsed[1] + 1 if response.status_code == 206 and parsed is not None else None

    def readinto(self, buffer: memoryview, /) -> int:
        """The next bytes of the range (0 at its end); RangeChanged when a resume shows another version."""
        try:
            return self.response.readinto(buffer, resume=self.resume)
        except APIConnectionError as exc:
            if exc.cause == "resume":
                raise RangeChanged(str(exc)) from exc
            raise

    def close(self) -> None:
        """Release the range's connection."""
        with self._lock:
            self._closed = True
            self.response.close()

    def abort(self) -> None:
        """Stop this file's ranges (no more sends or retries) and break a read blocked on this one."""
        self.opener.stop()
        with self._lock:
            if not self._closed:
                self.response.abort()


class _RangeSender(Generic[R]):
    """The sender of one file's range responses: the response's own sender (the client, or a URL
    signer); each range is a stream of the one retry budget, renewed by that range's progress (a
    blip that cuts every connection after data resumes them all at once)."""

    def __init__(self, sender: Sender[R]) -> None:
        self._sender = sender
        self.stopped = False  # the transfer stopped: no more sends, resumes or retries

    @property
    def max_connections(self) -> int:
        return self._sender.max_connections

    def send(
        self,
        request: Request,
        options: RequestOptions,
        budget: RetryBudget | None = None,
        *,
        quiet: bool = False,
    ) -> R:
        if self.stopped:
            raise APIConnectionError("the download stopped", request, cause="stopped")
        response = self._sender.send(request, options, budget, quiet=quiet)
        response.resume_through(self)  # its own resumes come back here
        return response

    def backoff(
        self, budget: RetryBudget, request: Request, reason: str, **hints: Unpack[RetryHints]
    ) -> bool:
        if self.stopped:  # another range failed, or the caller was interrupted: no retry, no wait
            return False
        progress = hints.get("progress")
        if progress is not None:  # the bytes this range received: its offset past the range's start
            first = request.headers.get("Range", "").removeprefix("bytes=").partition("-")[0]
            hints["progress"] = progress - (int(first) if first.isdigit() else 0)
            hints["stream"] = id(request)
        return self._sender.backoff(budget, request, reason, **hints)


class RangeFetcher(Generic[R]):
    """A ``RangeOpener``: ``Range: bytes=A-B`` requests for one file, pinned to its validator by
    ``If-Range``, through its first response's sender (wrapped, so that every range's resumes
    come back here), in that response's budget and options."""

    def __init__(
        self, response: R, sender: Sender[R], budget: RetryBudget, options: RequestOptions, resume: bool
    ) -> None:
        self.first = response.request
        self.request = whole_request(response.request)
        self.validator = response.validator
        self.total = response.total_size
        self.options = options
        self.budget = budget
        self.resume = resume
        self.origin = sender
        self.sender = _RangeSender(sender)
        response.resume_through(self.sender)

    def fetch(self, start: int, end: int) -> R:
        """A response for bytes ``[start, end)`` of the version pinned, claimed and as served."""
        request = self.request
        headers = request.headers.copy()
        headers["Range"] = f"bytes={start}-{end - 1}"
        if self.validator is not None:
            headers["If-Range"] = self.validator
        try:
            response = self.sender.send(
                Request("GET", request.url, headers), self.options, self.budget, quiet=True
            )
        except APIStatusError as exc:
            if exc.status_code == 416:  # the range lies past the resource's end: it shrank
                raise RangeChanged(f"the server cannot satisfy bytes {start}-{end - 1} (416)") from exc
            raise
        response.as_served()
        # The one rule (as for an in-call resume): any 206 holding ``start``, or a 200 of the same
        # version, serves; the receiver skips or asks again as needed.
        problem, changed = answer_problem(
            response.status_code, response.headers, start, self.validator, self.total, last=end - 1
        )
        if problem is not None:
            response.close()
            raise (RangeChanged if changed else RangeUnusable)(problem)
        response.claim()
        return response

    def whole(self) -> R:
        """The whole resource again, without a Range, claimed (the rest over one connection when
        ranges cannot serve it); RangeChanged unless it is the version pinned."""
        response = self.sender.send(self.request, self.options, self.budget, quiet=True)
        response.as_served()
        problem, _ = answer_problem(response.status_code, response.headers, 0, self.validator, self.total)
        if response.status_code != 200:
            problem = f"asked for the whole resource, the server answered {response.status_code}"
        if problem is not None:
            response.close()
            raise RangeChanged(problem)
        response.claim()
        return response

    def stop(self) -> None:
        """No more sends, resumes or retries for this file's ranges."""
        self.sender.stopped = True

    def restart(self, problem: str) -> R:
        """Spend a retry on a fresh GET of the whole resource (as served, sized, not claimed)."""
        request, sender, where = self.first, self.origin, mask_url(self.first.url)
        if not sender.backoff(self.budget, request, f"cannot resume: {problem}", cause="resume"):
            raise APIConnectionError(f"Cannot download {where}: {problem}", request, cause="resume")
        response = sender.send(self.request, self.options, self.budget, quiet=True)
        response.as_served()  # first: the length of an encoded body counts only as served
        if response.status_code != 200 or response.total_size is None:
            response.close()
            raise APIConnectionError(
                f"Cannot restart {where}: the server answered {response.status_code}", request, cause="resume"
            )
        return response


def receive(
    response: FileResponse,
    part: PartFile,
    *,
    offset: int = 0,
    checks: list[Checksum],
    total: int | None,
    url: str | None = None,
    file: FileOptions,
) -> int:
    """Write the body into ``part`` from ``offset``, as ``file`` says; verify and rename. Returns the
    file's size.

    With ``url`` (a download that a later run may resume) the sidecar is
    written and the ``.part`` kept on failure; without it a failure
    removes the ``.part``. The caller holds the part's lock.
    """
    response.as_served()
    response.claim()
    keep = url is not None
    with (
        closing(response),
        Receiver(
            part,
            offset=offset,
            checks=checks,
            total=total,
            expected_size=file.expected_size,
            progress=file.progress,
            buffer_size=file.chunk_size or BUFFER_SIZE,
            keep=keep,
        ) as receiver,
    ):
        if url is not None and not offset:
            part.save(url, response.validator, total, response.headers)

        buffer, filled = receiver.buffer(), 0

        def restart() -> None:
            # The resource came back whole (maybe changed): new size, checksums and sidecar;
            # what the buffer holds of the old body is dropped.
            nonlocal filled
            filled = 0
            receiver.restart(checksums_from(response.headers, file.expected_sha256), response.total_size)
            if url is not None:
                part.save(url, response.validator, response.total_size, response.headers)

        resume = file.resume
        on_restart = restart if resume else None
        committed = time.monotonic()
        readinto = response.readinto
        try:
            while True:
                start = filled
                n = readinto(buffer[start:], resume=resume, on_restart=on_restart)
                if not n:
                    break
                if filled != start:
                    # restarted from byte 0 during this read (``filled`` dropped to 0): the new
                    # body's first bytes landed after the dropped ones; they go first.
                    buffer[:n] = bytes(buffer[start : start + n])
                filled += n
                if filled == len(buffer) or time.monotonic() - committed >= COMMIT_INTERVAL:
                    count, filled = filled, 0  # first: commit() may raise (a progress callback)
                    receiver.commit(count)
                    buffer, committed = receiver.buffer(), time.monotonic()
        finally:
            if filled:  # what arrived before the end (or before a failure: a re-run resumes after it)
                count, filled = filled, 0
                receiver.commit(count)
        if response.close_delimited and not receiver.confirmable:
            raise DownloadIntegrityError(
                f"Cannot confirm that {part.dest} is complete: {mask_url(response.url)} ended its body by "
                "closing the connection (no Content-Length, no chunked framing), which a cut looks "
                "the same as, and sent no checksum; pass expected_size or expected_sha256"
            )
        return receiver.complete()


def receive_over_ranges(
    response: FileResponse,
    part: PartFile,
    *,
    connections: int,
    checks: list[Checksum],
    total: int,
    done: Sequence[tuple[int, int]] = (),
    url: str | None = None,
    file: FileOptions,
    first_at: int | None = None,
    cutoff: float | None = None,
    tally: Tally | None = None,
    ask_time: float = 0.0,
) -> int:
    """Write the body (from ``position``) and the rest of the resource over ``connections``
    connections into ``part`` (``_ranges``), as ``file`` says (its ``connections`` were resolved
    into ``connections``); ``done``: the ranges it already holds.

    Each range is a GET with ``Range`` and ``If-Range`` through the response's ``RangeOpener``
    (its sender: a URL signer re-signs), resumed in the call like any body, all in the response's
    one retry budget (each range renewing it by its own progress). A range showing that the
    resource changed starts the file again from zero, with a fresh GET; ranges that cannot serve
    the rest of the same version go to one whole answer (``whole``), the bytes held skipped. With
    ``url`` the sidecar lists the ranges written and a failure keeps the ``.part``. ``first_at``:
    where the first answer's bytes are wanted from (a re-run's answer may start before it);
    ``cutoff``: no request after it (a signed URL's expiry); ``tally``: requests and bytes counted;
    ``ask_time``: how long the response took to come (what a request costs).
    """
    response.as_served()
    response.claim()
    where = mask_url(response.url)
    resume = file.resume
    restarted = False
    while True:
        opener = response.open_ranges(resume)
        first = RangeSource(response, opener, resume)
        parsed = parse_content_range(response.headers.get("content-range", ""))
        end = parsed[1] + 1 if response.status_code == 206 and parsed is not None else total

        def fetch(start: int, end: int, opener: RangeOpener = opener) -> RangeSource:
            return RangeSource(opener.fetch(start, end), opener, resume)

        def whole(opener: RangeOpener = opener) -> RangeSource:
            return RangeSource(opener.whole(), opener, resume)

        def save(
            written: list[tuple[int, int]], response: FileResponse = response, total: int = total
        ) -> None:
            if url is not None:
                part.save(url, response.validator, total, response.headers, written)

        try:
            return receive_ranges(
                part,
                fetch,
                connections=connections,
                total=total,
                done=done,
                first=(first, response.position if first_at is None else first_at, end),
                checks=checks,
                file=file,
                save=save if url is not None else None,
                whole=whole,
                cutoff=cutoff,
                tally=tally,
                ask_time=ask_time,
            )
        except RangeChanged as exc:
            problem = str(exc)
            pinned = response.validator
            response.close()
        log.warning("Restarting %s from byte 0: %s", where, problem)
        response = opener.restart(problem)
        new_total = response.total_size
        assert new_total is not None  # ``restart`` answers only a sized whole
        checks, total, done = checksums_from(response.headers, file.expected_sha256), new_total, ()
        first_at, ask_time = None, 0.0
        if response.validator == pinned or restarted:
            # The same version of the resource: its ranges, not the resource, were wrong (a 200 to
            # a Range, a wrong Content-Range). Or a second change in one call: an ETag that is
            # not stable (servers behind a balancer, each with its own). Asking for ranges again
            # would fail the same way, so the file comes over this one connection.
            log.warning("%s: its byte ranges cannot be used; one connection", where)
            connections = 1
        else:
            connections = response.connections_for(connections)
        restarted = True
        if connections == 1:
            return receive(
                response,
                part,
                checks=checks,
                total=total,
                url=url,
                file=file,
            )
        response.claim()
