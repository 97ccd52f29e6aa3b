"""Streamed responses: raw bodies, text, lines, events and files, with in-call resume.

Rules:
1. Bytes are handed out as soon as they arrive: a trickling stream is never
   held back to fill a buffer.
2. A body read to its end gives its connection back to the pool; anything
   else (close, break, error, garbage collection) discards the connection.
   An endless stream is never drained.
3. A body is read once: reading it again raises StreamAlreadyConsumed.
4. A broken GET body with a validator resumes with ``Range`` + ``If-Range``
   through the client that sent it (the ``Sender``), inside the call's one
   retry budget. Whether a response continues the body is decided by one
   rule, ``continuation_problem``; a response that does not continue it
   raises for a byte stream (it cannot take back bytes it handed out) and
   restarts a file from zero (``stream_to_file`` truncates first).
5. Writing a body to a file is ``_receive``'s: a ``StreamedResponse`` is its
   ``FileResponse`` (``as_served``, ``claim``, ``readinto`` with resume,
   ``open_ranges``, ``resume_through``), as it is ``_event_stream``'s
   ``EventSource``. An error response's exception is ``_status_errors``'.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

from ._buffers import READ_SIZE, ReadBuffer
from ._checksums import checksums_from
from ._continuation import (
    answer_problem,
    parse_content_range,
    range_end,
    strong_etag,
    validator_of,
    whole_request,
)
from ._decode import charset, decode_json
from ._event_stream import EventSource, EventStream
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    ResponseTooLargeError,
    StreamAlreadyConsumed,
)
from ._files import PartFile, destination
from ._observe import mask_url
from ._options import Connections, FileOptions, RequestOptions, check_connections
from ._range_plan import MIN_PIECE, auto_connections
from ._receive import RangeFetcher, RangeOpener, receive, receive_over_ranges
from ._receive import Sender as AnySender
from ._receiver import Progress
from ._retry import RetryBudget
from ._transport import DEFAULT_POOL_MAXSIZE, Body, Headers, RawResponse, Request
from .sse import DEFAULT_MAX_SIZE

__all__ = [
    "Connections",
    "Sender",
    "StreamedResponse",
    "check_connections",
]

log = logging.getLogger("tinker_sync")


# What a response needs of the client that sent it (or a URL signer), to resume a broken body and
# to fetch more of it over other connections: a ``_receive.Sender`` of these responses.
Sender: TypeAlias = "AnySender[StreamedResponse]"


def _too_large(response: StreamedResponse, limit: int, what: str) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"The response to {response.request.method} {mask_url(response.url)} is too large: {what}, over the "
        f"limit of {limit} bytes (max_response_size; set it with Client(max_response_size=...) or "
        "client.with_options(max_response_size=...), or stream the response)",
        response.request,
        limit=limit,
    )


# -- the response -----------------------------------------------------------------------------------


class StreamedResponse:
    """An HTTP response whose body has not been read yet.

    Attributes:
        status_code: the HTTP status.
        headers: the response headers (case-insensitive).
        url: the URL that answered.
        request: what was sent.
        num_bytes_downloaded: body bytes received so far.
        attempts: sends made for this logical request so far (retries and resumes included).
    """

    def __init__(
        self,
        raw: RawResponse,
        request: Request,
        *,
        sender: Sender | None = None,
        budget: RetryBudget | None = None,
        options: RequestOptions | None = None,
        max_event_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.request = request
        self.max_event_size = max_event_size  # iter_events' default: the client's option
        self.url = request.url
        self.status_code: int = raw.status
        self.headers: Headers = raw.headers
        self.num_bytes_downloaded = 0
        self._budget = budget
        self._body = Body(raw, request, budget.deadline if budget is not None else None)
        self._sender = sender
        self._options = options  # the call's, for sending parts of the body again
        self._content: bytes | None = None
        self._consumed = False
        self._first_byte = 0
        self._skip = 0  # bytes a resumed answer holds before ``position``: read past, not handed out
        self._want: int | None = None  # once resumed: where the body must reach (its end, exclusive)
        self._shorts = 0  # resumed answers in a row that ended before ``_want``
        if raw.status == 206:
            parsed = parse_content_range(raw.headers.get("content-range", ""))
            self._first_byte = parsed[0] if parsed else 0

    def __repr__(self) -> str:
        return f"<StreamedResponse [{self.status_code}] {self.request.method} {mask_url(self.url)}>"

    def __enter__(self) -> StreamedResponse:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state ---------------------------------------------------------------

    @property
    def attempts(self) -> int:
        """How many sends the call took so far, retries and resumes included (1: the first)."""
        return self._budget.attempts if self._budget is not None else 1

    @property
    def retries(self) -> int:
        """Retries the logical call took so far (resumes included)."""
        return self._budget.retries if self._budget is not None else 0

    @property
    def is_closed(self) -> bool:
        """True once the connection was released or discarded."""
        return self._body.closed

    @property
    def is_stream_consumed(self) -> bool:
        """True once iteration over the body has started."""
        return self._consumed

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status_code < 300

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read to its end, else closed."""
        self._body.close()

    def claim(self) -> None:
        """Start reading the body: StreamAlreadyConsumed when it was already read or closed
        (every way of reading it claims it first; the file receiver too)."""
        if self._consumed or self._body.closed:
            raise StreamAlreadyConsumed(
                "The response body was already read or closed; a streamed body can be read only once."
            )
        self._consumed = True

    def abort(self) -> None:
        """From another thread: make a read blocked on this body fail at once (a transfer stopped)."""
        self._body.abort()

    # -- resume --------------------------------------------------------------

    @property
    def position(self) -> int:
        """Offset in the whole resource of the next body byte (a 206 starts past 0)."""
        return self._first_byte + self.num_bytes_downloaded

    @property
    def total_size(self) -> int | None:
        """Size of the whole resource: Content-Range's total, else Content-Length on a 200."""
        if self.status_code == 206:
            parsed = parse_content_range(self.headers.get("content-range", ""))
            return parsed[2] if parsed else None
        length = self.headers.get("content-length")
        return int(length) if length and length.isdigit() and not self._body.decode else None

    @property
    def validator(self) -> str | None:
        """What If-Range can pin a resume to: a strong ETag, else Last-Modified."""
        return validator_of(self.headers)

    def _resume(self, exc: APIConnectionError, on_restart: Callable[[], None] | None) -> bool:
        """Continue the body after ``exc``: swaps in an answer holding the byte at ``position``.

        The one rule, ``answer_problem`` (as for each range of a download over several
        connections): a 206 holding the byte serves whatever its end (the bytes before it are
        skipped; one that ends early is resumed again, and after two such the whole is asked
        for), a 200 of the same version too; an answer of the same version that cannot serve is
        replaced by the whole, read on from ``position``. Only another version (or a 416: it
        shrank) starts the body again from byte 0: with ``on_restart``, after calling it; without,
        it raises. False when the body cannot be resumed: the caller raises ``exc`` (not this
        frame, which would keep ``exc`` in a frame <-> traceback cycle).
        """
        sender, budget, request = self._sender, self._budget, self.request
        validator, offset = self.validator, self.position
        if sender is None or budget is None or request.method != "GET" or validator is None:
            return False
        if self._body.decode:
            return False  # decoded bytes have no offset in the resource
        self._body.close()
        reason = f"body broken at byte {offset}: {exc}"
        if not sender.backoff(budget, request, reason, cause=exc.cause, progress=offset):
            return False
        end = range_end(request.headers.get("Range"))
        total = self.total_size
        last = int(end) if end.isdigit() else None if total is None else total - 1
        if self._want is None and last is not None:
            self._want = last + 1
        new, problem, changed = self._ask(offset, validator, total, end, whole=self._shorts >= 2)
        if problem is not None and not changed:  # the same version, answered unusably: the whole
            if new is not None:
                new.close()
            if not sender.backoff(budget, request, f"cannot resume: {problem}", cause="resume"):
                raise APIConnectionError(
                    f"Cannot resume {mask_url(self.url)} at byte {offset}: {problem}", request, cause="resume"
                ) from exc
            new, problem, changed = self._ask(offset, validator, total, end, whole=True)
        if problem is None and new is not None:
            log.info("Resumed %s at byte %d", mask_url(self.url), offset)
            parsed = parse_content_range(new.headers.get("content-range", ""))
            self._skip = offset - (parsed[0] if new.status_code == 206 and parsed else 0)
        elif on_restart is None:
            if new is not None:
                new.close()
            raise APIConnectionError(
                f"Cannot resume {mask_url(self.url)} at byte {offset}: {problem}", request, cause="resume"
            ) from exc
        else:
            log.warning("Restarting %s from byte 0: %s", mask_url(self.url), problem)
            if new is None or new.status_code != 200:  # fetch the whole again
                if new is not None:
                    new.close()
                if not sender.backoff(budget, request, f"cannot resume: {problem}", cause="resume"):
                    raise APIConnectionError(
                        f"Cannot resume {mask_url(self.url)} at byte {offset}: {problem}",
                        request,
                        cause="resume",
                    ) from exc
                new = sender.send(whole_request(request), self._resend_options(), budget, quiet=True)
                if new.status_code != 200:
                    new.close()
                    raise APIConnectionError(
                        f"Cannot restart {mask_url(self.url)}: the server answered {new.status_code}",
                        request,
                        cause="resume",
                    ) from exc
            self._first_byte = self.num_bytes_downloaded = self._skip = 0
            self._want = None if new.total_size is None else new.total_size
        self.status_code, self.headers, self._body = new.status_code, new.headers, new._body
        self._body.raw_bytes()  # as the body it continues: bytes as served
        if problem is not None and on_restart is not None:
            on_restart()
        return True

    def _ask(
        self, offset: int, validator: str, total: int | None, end: str, *, whole: bool
    ) -> tuple[StreamedResponse | None, str | None, bool]:
        """Ask for the body from ``offset`` to ``end`` (the last byte the call asked for, or "")
        (``whole``: the whole resource, to be read past ``offset``): the answer, why it cannot
        serve (None: it can), whether it is another version."""
        request, sender, budget = self.request, self._sender, self._budget
        assert sender is not None and budget is not None
        if whole:
            ask = whole_request(request)
        else:
            headers = request.headers.copy()
            headers["Range"] = f"bytes={offset}-{end}"
            headers["If-Range"] = validator
            ask = Request("GET", request.url, headers)
        try:
            new = sender.send(ask, self._resend_options(), budget, quiet=True)
        except APIStatusError as refused:
            if refused.status_code != 416:
                raise
            return None, f"the server cannot satisfy bytes {offset}- (416): the resource shrank", True
        last = int(end) if end.isdigit() else None if total is None else total - 1
        problem, changed = answer_problem(new.status_code, new.headers, offset, validator, total, last=last)
        return new, problem, changed

    def readinto(
        self,
        buffer: memoryview,
        /,
        *,
        resume: bool = True,
        on_restart: Callable[[], None] | None = None,
    ) -> int:
        """Read the next bytes of the body into ``buffer`` as soon as any arrived; 0 at its end.

        A broken GET body resumes (see the module docstring) unless ``resume`` is false; a body
        cut short raises APIConnectionError, never a quiet 0. With ``on_restart``, a resume the
        server answers with another version starts the body again from byte 0, after
        ``on_restart()`` was called (the file receiver truncates its file); without it, such an
        answer raises.
        """
        if not self._consumed:
            self.claim()
        while True:
            want = self._want
            try:
                while self._skip:  # a resumed answer from before ``position``: the bytes held
                    n = self._body.readinto(buffer[: min(len(buffer), self._skip)])
                    if not n:
                        raise APIConnectionError(
                            f"the answer ended before byte {self.position}", cause="broken"
                        )
                    self._skip -= n
                limit = len(buffer) if want is None else min(len(buffer), want - self.position)
                n = self._body.readinto(buffer[:limit]) if limit > 0 else 0
            except APIConnectionError as exc:
                self._shorts = 0
                if not resume or not self._resume(exc, on_restart):
                    raise
                continue
            if not n and want is not None and self.position < want:  # a resumed answer ended early
                self._shorts += 1
                short = APIConnectionError(
                    f"the answer ended at byte {self.position}, before byte {want}",
                    self.request,
                    cause="broken",
                )
                if not resume or not self._resume(short, on_restart):
                    raise short
                continue
            self.num_bytes_downloaded += n
            return n

    def _iter_raw(self, limit: int) -> Iterator[bytes]:
        """The body as it arrives; releases the connection at its end, discards it otherwise."""
        self.claim()
        buffer = ReadBuffer(limit)
        try:
            view = buffer.view
            while n := self.readinto(view):
                yield bytes(view[:n])
                view = buffer.next(n)
        finally:
            buffer.close()
            self.close()

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Iterate over the body.

        Args:
            chunk_size: None hands out data as soon as it arrives; an int
                re-chunks to exactly that size (the last chunk may be shorter).
        """
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError("chunk_size must be a positive int or None")
        if self._content is not None:
            yield from _rechunk(iter((self._content,)), chunk_size)
            return
        yield from _rechunk(self._iter_raw(max(chunk_size or 0, READ_SIZE)), chunk_size)

    def iter_text(self, chunk_size: int | None = None) -> Iterator[str]:
        """Iterate over the body decoded with the charset of Content-Type (UTF-8 by default).

        ``chunk_size`` applies to the bytes before decoding.
        """
        decoder = codecs.getincrementaldecoder(charset(self.headers))(errors="replace")
        for chunk in self.iter_bytes(chunk_size):
            text = decoder.decode(chunk)
            if text:
                yield text
        text = decoder.decode(b"", final=True)
        if text:
            yield text

    def iter_lines(self) -> Iterator[str]:
        """Iterate over the lines of the text body; LF, CRLF and CR end a line, and are not included."""
        pending = ""
        for text in self.iter_text():
            text = pending + text
            # A CR at the end may be the first half of a CRLF: hold it back.
            hold_cr = text.endswith("\r")
            if hold_cr:
                text = text[:-1]
            lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            pending = lines.pop() + ("\r" if hold_cr else "")
            yield from lines
        if pending:
            yield pending.removesuffix("\r")

    def iter_events(
        self, cast_to: Any = None, *, idle_timeout: float | None = None, max_event_size: int | None = None
    ) -> EventStream[Any]:
        """Iterate over the body as Server-Sent Events (always UTF-8).

        With ``cast_to``, each event's data is decoded into that type instead
        (msgspec, straight from bytes). An event named ``error`` raises
        APIError, and data that does not fit ``cast_to`` raises
        APIResponseValidationError, each after every event before it. A line or
        an event over ``max_event_size`` (default: the client's) raises SSEDecodeError.
        """
        stream: EventStream[Any] = EventStream(
            source=self.event_source(),
            cast_to=cast_to,
            idle_timeout=idle_timeout,
            max_event_size=self.max_event_size if max_event_size is None else max_event_size,
        )
        return stream

    def event_source(self) -> EventSource:
        """The body as an ``EventSource``: this response, or a replay of a body already read."""
        if self._content is not None:
            return _Replay(self, self._content)
        self.claim()
        return self

    # -- whole body ----------------------------------------------------------

    def read(self) -> bytes:
        """Read and return the whole body (cached: calling again returns the same bytes)."""
        if self._content is None:
            self._content = b"".join(self._iter_raw(READ_SIZE))
        return self._content

    def read_bounded(self, limit: int) -> bytes:
        """Read the whole body, as ``read()``, but never more than ``limit`` bytes (decoded).

        Raises:
            ResponseTooLargeError: the body is longer (its Content-Length says so before any
                byte is read, or it went past ``limit``); the connection is discarded, and
                memory held stays near ``limit``.
        """
        if self._content is not None:
            return self._content
        length = self.headers.get("content-length", "").strip()
        encoded = (self.headers.get("content-encoding") or "identity").strip().lower() != "identity"
        if length.isdigit() and int(length) > limit and not encoded:
            self.close()
            raise _too_large(self, limit, f"it announces {int(length)} bytes")
        body = bytearray()
        for chunk in self._iter_raw(READ_SIZE):
            if len(body) + len(chunk) > limit:
                del body[:]
                self.close()  # discarded, never drained: the rest may never end
                raise _too_large(self, limit, f"more than {limit} bytes arrived")
            body += chunk
        self._content = bytes(body)
        return self._content

    def read_capped(self, limit: int) -> bytes:
        """Read at most ``limit`` bytes of the body, then release it (as ``read()`` returns later).

        For error bodies: a broken or over-long one never hides the status
        it explains (what is past ``limit``, or after a break, is dropped).
        """
        if self._content is None:
            self.claim()
            content = bytearray(limit)
            view = memoryview(content)
            size = 0
            try:
                while size < limit and (n := self._body.readinto(view[size:])):
                    size += n
            except APIConnectionError:
                pass
            finally:
                view.release()
                self.close()
            # A copy, not ``del content[size:]``: the error a break raised may still hold a slice
            # of ``content`` (its traceback's frames), and a bytearray with exports cannot shrink.
            self._content = bytes(content[:size])
            self.num_bytes_downloaded = size
        return self._content

    def text(self) -> str:
        """The whole body as text, decoded with the charset of Content-Type (UTF-8 by default)."""
        return self.read().decode(charset(self.headers), errors="replace")

    def json(self, cast_to: Any = Any) -> Any:
        """The whole body decoded from JSON (into ``cast_to`` when given)."""
        return decode_json(self.read(), cast_to, self)

    # -- files ---------------------------------------------------------------

    def stream_to_file(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int | None = None,
        progress: Progress | None = None,
        resume: bool = True,
        connections: Connections = "auto",
    ) -> int:
        """Write the body to ``path``: atomic, verified, in constant memory.

        The bytes go to ``path + ".part"`` and are renamed into place only when
        the body is complete and its size and the checksums the server sent
        (``x-goog-hash``, ``Content-Digest``/``Digest``, an MD5 ETag) match; the
        data is fsynced first. A broken body resumes in place with Range
        requests when ``resume`` (the default) and the response allows it; a
        server that answers the resume with anything but the continuation
        restarts the file from zero. Unlike ``Client.download``, this never
        resumes a ``.part`` left by an earlier run: the response was already
        requested from byte 0.

        Args:
            chunk_size: the most bytes read (and written) at a time; None
                (the default, and the fastest) is 256 KiB, as they arrive.
            progress: ``progress(downloaded, total)``, called at most every 0.1 s
                or 1% of ``total`` while data arrives, and always once at the end.
            resume: False turns off the in-call resume (a broken body raises).
            connections: fetch the rest of the body over this many connections at
                once (byte ranges, each written at its offset), when the response
                allows it: a 200 with ``Accept-Ranges: bytes``, a length and a strong
                ETag, its bytes as served. ``"auto"`` (the default): 1 below 32 MiB,
                then one more per 16 MiB, up to 8; never more than the client's
                pool keeps (``pool_maxsize``).

        Returns:
            The size of the final file.

        Raises:
            DownloadIntegrityError: size or checksum mismatch (nothing is left behind).
            APIConnectionError: the body broke and could not be resumed.
            OSError: not enough disk space (checked first when the size is known).
            DownloadLockedError: another download of ``path`` holds its lock.
        """
        file = FileOptions(progress=progress, resume=resume, connections=connections, chunk_size=chunk_size)
        part = PartFile(destination(path, self.url))
        self.as_served()
        with part.lock():
            part.discard()
            whole = self.status_code == 200
            checks = checksums_from(self.headers) if whole else []
            length = self.headers.get("content-length")
            total = self.total_size if whole else (int(length) if length and length.isdigit() else None)
            n = self.connections_for(connections) if whole else 1
            if n > 1 and total is not None:
                return receive_over_ranges(self, part, connections=n, checks=checks, total=total, file=file)
            return receive(self, part, checks=checks, total=total, file=file)

    def as_served(self) -> None:
        """From now on, hand out the body's bytes as served: no ``Content-Encoding`` decoded (a file
        stores the resource's bytes, and its length and checksums are those bytes')."""
        self._body.raw_bytes()

    @property
    def close_delimited(self) -> bool:
        """The body ends when its connection closes (no Content-Length, no chunked framing): only a
        length or a checksum can tell its end from a cut."""
        return self._body.close_delimited

    # -- one file over several connections ---------------------------------

    def connections_for(self, connections: Connections) -> int:
        """How many connections may fetch this body's rest at once (1 when ranges cannot be joined).

        More than one only for a GET answered 200 with ``Accept-Ranges: bytes`` (or 206), a
        length, a strong ETag pinning the bytes, and no ``Content-Encoding`` (a store that encodes
        on the way may ignore a Range or answer it from other bytes); at most the pool size.
        """
        total = self.total_size
        if (
            connections == 1
            or self.request.method != "GET"
            or self.status_code not in (200, 206)
            or total is None
            or self._body.decode
            or self.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
            or not strong_etag(self.headers.get("etag"))
            or (self.status_code == 200 and "bytes" not in self.headers.get("accept-ranges", "").lower())
        ):
            return 1
        remaining = total - self.position
        pool = self._sender.max_connections if self._sender is not None else DEFAULT_POOL_MAXSIZE
        if remaining < 2 * MIN_PIECE:
            return 1
        return auto_connections(remaining, pool) if connections == "auto" else min(connections, pool)

    def open_ranges(self, resume: bool = True) -> RangeOpener:
        """What fetches the other byte ranges of this resource for the file receiver: each a GET
        with ``Range`` and ``If-Range`` through this response's sender (a URL signer re-signs),
        in this response's one retry budget, resumed in the call when ``resume``."""
        if self._sender is None or self._budget is None:
            raise RuntimeError("a response without its sender cannot fetch ranges")
        return RangeFetcher(self, self._sender, self._budget, self._resend_options(), resume)

    def _resend_options(self) -> RequestOptions:
        """The call's options, for sending part of the body again (without them: the sender's defaults)."""
        return self._options if self._options is not None else RequestOptions("GET", self.url)

    def resume_through(self, sender: Sender) -> None:
        """Send this body's resumes through ``sender`` instead of the one that sent it (a file's
        ranges: each resume spends the budget as its own stream, and none once the file stopped)."""
        self._sender = sender

    def write_to_file(self, path: str | os.PathLike[str]) -> int:
        """Write a body already read with ``read()`` to ``path``; returns its size."""
        if self._content is None:
            raise StreamAlreadyConsumed("write_to_file() needs a fully read body: call read() first")
        with open(path, "wb") as f:
            f.write(self._content)
        return len(self._content)


def _rechunk(chunks: Iterator[bytes], size: int | None) -> Iterator[bytes]:
    if size is None:
        yield from chunks
        return
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) >= size:
            view = memoryview(buffer)
            stop = len(buffer) - len(buffer) % size
            for start in range(0, stop, size):
                yield bytes(view[start : start + size])
            view.release()
            del buffer[:stop]
    if buffer:
        yield bytes(buffer)


class _Replay:
    """A body already read, as an ``EventSource`` (the raw view reads the body before parsing it)."""

    def __init__(self, response: StreamedResponse, content: bytes) -> None:
        self.status_code, self.headers = response.status_code, response.headers
        self.url, self.request = response.url, response.request
        self._view = memoryview(content)
        self.is_closed = False

    def readinto(self, buffer: memoryview, /) -> int:
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def close(self) -> None:
        self.is_closed = True
