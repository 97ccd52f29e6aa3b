"""Streamed responses: raw bodies, text, lines and Server-Sent Events.

Rules:
1. Bytes are handed out as soon as they arrive (urllib3 ``read1``): a
   trickling stream is never held back to fill a buffer.
2. A body read to its end gives its connection back to the pool; anything
   else (close, break, error, garbage collection) discards the connection.
   An endless stream is never drained.
3. A body is read once: reading it again raises StreamAlreadyConsumed.
4. An ``EventStream`` sends nothing until it is first iterated or entered.
"""

from __future__ import annotations

import codecs
import functools
import logging
import operator
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from ._events import ServerSentEvent
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    StreamAlreadyConsumed,
)
from ._observe import mask_url
from ._transport import Headers, RawResponse, Request, discard, read_chunk
from .sse import SSEDecoder

__all__ = ["EventStream", "StreamedResponse", "json_decoder"]

T = TypeVar("T")
log = logging.getLogger("tinker_sync")

# How much one read asks the socket for. read1 returns what has arrived, so
# this only caps a chunk; 256 KiB keeps per-chunk overhead low on fast links.
READ_SIZE = 256 * 1024


@functools.lru_cache(maxsize=256)
def json_decoder(cast_to: Any) -> msgspec.json.Decoder:
    """One reused msgspec decoder per target type."""
    return msgspec.json.Decoder(cast_to)


def decode_json(content: bytes | memoryview, cast_to: Any, response: Any = None) -> Any:
    """Decode JSON into ``cast_to``; a mismatch raises APIResponseValidationError keeping msgspec's path."""
    try:
        return json_decoder(cast_to).decode(content)
    except msgspec.ValidationError as exc:
        raise APIResponseValidationError(f"Response does not fit {cast_to!r}: {exc}", response) from exc
    except msgspec.DecodeError as exc:
        raise APIResponseValidationError(f"Response is not valid JSON: {exc}", response) from exc


def _charset(headers: Headers, default: str = "utf-8") -> str:
    for param in headers.get("content-type", "").split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            name = value.strip("\"' ")
            try:
                return codecs.lookup(name).name
            except LookupError:
                return default
    return default


class StreamedResponse:
    """An HTTP response whose body has not been read yet.

    Attributes:
        status_code, headers (case-insensitive), url, request.
        num_bytes_downloaded: body bytes received so far.
    """

    def __init__(
        self, raw: RawResponse, request: Request, *, deadline: float | None = None, attempts: int = 1
    ) -> None:
        self._raw = raw
        self.request = request
        self.url = request.url
        self.status_code: int = raw.status
        self.headers: Headers = raw.headers
        self.num_bytes_downloaded = 0
        self._content: bytes | None = None
        self._consumed = False
        self._complete = False
        self._closed = False
        self._deadline = deadline  # time.monotonic() past which reading raises APITimeoutError
        self.attempts = attempts  # how many sends it took to establish this response
        self._reopen: Callable[[int, str], StreamedResponse | None] | None = None
        self._on_restart: Callable[[], None] | None = None
        self._first_byte = 0
        if raw.status == 206:
            parsed = parse_content_range(raw.headers.get("content-range", ""))
            self._first_byte = parsed[0] if parsed else 0

    def __repr__(self) -> str:
        return f"<StreamedResponse [{self.status_code}] {self.request.method} {self.url}>"

    def __enter__(self) -> StreamedResponse:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state ---------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once the connection was released or discarded."""
        return self._closed

    @property
    def is_stream_consumed(self) -> bool:
        """True once iteration over the body has started."""
        return self._consumed

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read to its end, else closed."""
        if self._closed:
            return
        self._closed = True
        if self._complete:
            self._raw.release_conn()
        else:
            discard(self._raw)

    def _start(self) -> None:
        if self._consumed or self._closed:
            raise StreamAlreadyConsumed(
                "The response body was already read or closed; a streamed body can be read only once."
            )
        self._consumed = True

    # -- bytes ---------------------------------------------------------------

    def _read_raw(self, size: int = READ_SIZE) -> Iterator[bytes]:
        """The body as it arrives; releases the connection at its end, discards it otherwise.

        A broken body is resumed with a Range request when the client allows
        it (see ``resume_with``), so the caller sees one seamless stream.
        """
        self._start()
        request, deadline = self.request, self._deadline
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise APITimeoutError("Request timed out: total deadline passed while reading", request)
                try:
                    chunk = read_chunk(self._raw, size, request)
                except APIConnectionError as exc:
                    self._resume_after(exc)
                    continue
                if not chunk:
                    break
                self.num_bytes_downloaded += len(chunk)
                yield chunk
            self._complete = True
        finally:
            self.close()

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
        return int(length) if length and length.isdigit() and "content-encoding" not in self.headers else None

    @property
    def validator(self) -> str | None:
        """What If-Range can pin a resume to: a strong ETag, else Last-Modified."""
        etag = self.headers.get("etag")
        if etag and not etag.startswith("W/"):
            return etag
        return self.headers.get("last-modified")

    def resume_with(
        self,
        reopen: Callable[[int, str], StreamedResponse | None],
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        """Let a broken body continue through ``reopen(offset, validator)``.

        ``reopen`` sends ``Range: bytes=offset-`` with ``If-Range`` and
        returns the new response, or None when the retry budget is spent.
        A resume answered with anything but the matching 206 raises, unless
        ``on_restart`` is given: then a full 200 restarts the body from zero
        (``on_restart`` is called first, so the caller can truncate its file).
        """
        self._reopen = reopen
        self._on_restart = on_restart

    @property
    def reopener(self) -> Callable[[int, str], StreamedResponse | None] | None:
        """The ``reopen`` given to ``resume_with`` (None when a broken body cannot resume)."""
        return self._reopen

    def _resume_after(self, exc: APIConnectionError) -> None:
        reopen = getattr(self, "_reopen", None)
        validator = self.validator
        if reopen is None or validator is None or "content-encoding" in self.headers:
            raise exc
        discard(self._raw)
        offset = self.position
        new = reopen(offset, validator)
        if new is None:
            raise exc
        problem = _resume_problem(self, new, offset)
        if problem is None:
            log.info("Resumed %s at byte %d", mask_url(self.url), offset)
        elif new.status_code == 200 and self._on_restart is not None:
            log.warning("Restarting %s from byte 0: %s", mask_url(self.url), problem)
            self._on_restart()
            self.status_code, self.headers = 200, new.headers
            self._first_byte = self.num_bytes_downloaded = 0
        else:
            new.close()
            raise APIConnectionError(
                f"Cannot resume {mask_url(self.url)} at byte {offset}: {problem}", self.request
            ) from exc
        self._raw = new._raw

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Iterate over the body.

        Args:
            chunk_size: None hands out data as soon as it arrives; an int
                re-chunks to exactly that size (the last chunk may be shorter).
        """
        if self._content is not None:
            yield from _rechunk(iter((self._content,)), chunk_size)
            return
        if chunk_size is None:
            yield from self._read_raw()
        else:
            if chunk_size <= 0:
                raise ValueError("chunk_size must be a positive int or None")
            yield from _rechunk(self._read_raw(max(chunk_size, READ_SIZE)), chunk_size)

    def iter_text(self, chunk_size: int | None = None) -> Iterator[str]:
        """Iterate over the body decoded with the charset of Content-Type (UTF-8 by default).

        ``chunk_size`` applies to the bytes before decoding.
        """
        decoder = codecs.getincrementaldecoder(_charset(self.headers))(errors="replace")
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

    def iter_events(self, cast_to: Any = None, *, idle_timeout: float | None = None) -> Iterator[Any]:
        """Iterate over the body as Server-Sent Events (always UTF-8).

        With ``cast_to``, each event's data is decoded into that type instead
        (msgspec, straight from bytes). An event named ``error`` raises
        APIError, and data that does not fit ``cast_to`` raises
        APIResponseValidationError, each after every event before it.
        """
        return _iterate_events([self], _no_reopen, cast_to, False, 0, idle_timeout, time.sleep, None, None)

    # -- whole body ----------------------------------------------------------

    def read(self) -> bytes:
        """Read and return the whole body (cached: calling again returns the same bytes)."""
        if self._content is None:
            self._content = b"".join(self._read_raw())
        return self._content

    def read_capped(self, limit: int) -> bytes:
        """Read at most ``limit`` bytes of the body, then release it (as ``read()`` returns later).

        For error bodies: a broken or over-long one never hides the status
        it explains (what is past ``limit``, or after a break, is dropped).
        """
        if self._content is None:
            chunks: list[bytes] = []
            size = 0
            try:
                self._start()
                while size < limit:
                    chunk = read_chunk(self._raw, limit - size, self.request)
                    if not chunk:
                        self._complete = True
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            except APIConnectionError:
                pass
            finally:
                self.close()
            self._content = b"".join(chunks)
            self.num_bytes_downloaded = len(self._content)
        return self._content

    def text(self) -> str:
        """The whole body as text, decoded with the charset of Content-Type (UTF-8 by default)."""
        return self.read().decode(_charset(self.headers), errors="replace")

    def json(self, cast_to: Any = Any) -> Any:
        """The whole body decoded from JSON (into ``cast_to`` when given)."""
        return decode_json(self.read(), cast_to, self)

    # -- files ---------------------------------------------------------------

    def stream_to_file(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int | None = None,
        progress: Callable[[int, int | None], None] | None = None,
        resume: bool = True,
    ) -> int:
        """Stream the body to ``path`` in constant memory: atomic, verified, resumable.

        See ``tinker_sync._download.stream_to_file``. Returns the final file's size.
        """
        from ._download import stream_to_file

        return stream_to_file(self, path, chunk_size=chunk_size, progress=progress, resume=resume)

    def write_to_file(self, path: str | os.PathLike[str]) -> int:
        """Write a body already read with ``read()`` to ``path``; returns its size."""
        if self._content is None:
            raise StreamAlreadyConsumed("write_to_file() needs a fully read body: call read() first")
        with open(path, "wb") as f:
            f.write(self._content)
        return len(self._content)


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """``bytes A-B/N`` as (A, B, N or None for ``*``); None when malformed."""
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    if unit.lower() != "bytes" or not (first.isdigit() and last.isdigit()):
        return None
    if not (total.isdigit() or total == "*"):
        return None
    return int(first), int(last), int(total) if total.isdigit() else None


def _resume_problem(old: StreamedResponse, new: StreamedResponse, offset: int) -> str | None:
    """Why ``new`` cannot continue ``old``'s body at ``offset`` (None when it can)."""
    if new.status_code != 206:
        return f"the server answered {new.status_code} instead of 206 Partial Content"
    parsed = parse_content_range(new.headers.get("content-range", ""))
    if parsed is None or parsed[0] != offset:
        return f"wrong Content-Range {new.headers.get('content-range')!r} for a resume at byte {offset}"
    total = old.total_size
    if total is not None and parsed[2] is not None and parsed[2] != total:
        return f"the resource size changed from {total} to {parsed[2]}"
    if new.validator is not None and new.validator != old.validator:
        return f"the resource changed (validator {old.validator!r} became {new.validator!r})"
    return None


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


def _error_event(event: ServerSentEvent, response: StreamedResponse | None) -> APIError:
    body: Any = event.data
    message = event.data
    try:
        body = msgspec.json.decode(event.data)
    except msgspec.DecodeError:
        pass
    else:
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = str(inner.get("message", event.data) if isinstance(inner, dict) else inner)
    request = response.request if response is not None else None
    return APIError(f"The server sent an error event: {message}", request, body=body)


def check_event_stream(response: StreamedResponse) -> None:
    """Raise unless a successful response is a ``text/event-stream``."""
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "text/event-stream":
        return
    try:
        start = read_chunk(response._raw, 200, response.request)
    except APIConnectionError:
        start = b""
    response.close()
    raise APIResponseValidationError(
        f"Expected a text/event-stream response, got Content-Type {content_type or 'none'!r}; "
        f"the body starts with {start[:200]!r}",
        response,
    )


class EventStream(Generic[T]):
    """A lazy stream of Server-Sent Events (or of their data, decoded into ``cast_to``).

    Nothing is sent until the first iteration or ``with`` entry. Use it in a
    ``for`` loop, as ``next(stream)``, or as a ``with`` block. Its connection
    is released when the stream is exhausted and discarded when it is closed,
    broken out of, or garbage-collected mid-way.
    """

    def __init__(
        self,
        open_response: Callable[[dict[str, str]], StreamedResponse],
        *,
        cast_to: Any = None,
        reconnect: bool = False,
        max_reconnects: int = 0,
        idle_timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_end: Callable[[StreamedResponse | None, int, BaseException | None], None] | None = None,
        on_reconnect: Callable[[int, str, float], None] | None = None,
    ) -> None:
        self._open = open_response
        self._cast_to = cast_to
        self._reconnect = reconnect
        self._max_reconnects = max_reconnects
        self._idle_timeout = idle_timeout
        self._sleep = sleep
        self._on_end = on_end
        self._on_reconnect = on_reconnect
        self._holder: list[StreamedResponse | None] = [None]
        self._iterator: Iterator[T] | None = None
        self._closed = False

    @property
    def response(self) -> StreamedResponse | None:
        """The current HTTP response, or None before the request was sent."""
        return self._holder[0]

    def __repr__(self) -> str:
        return f"<EventStream response={self.response!r}>"

    def _ensure_iterator(self) -> Iterator[T]:
        if self._iterator is None:
            if self._closed:
                raise StreamAlreadyConsumed("This event stream was closed before it was read.")
            self._iterator = _iterate_events(
                self._holder,
                self._open,
                self._cast_to,
                self._reconnect,
                self._max_reconnects,
                self._idle_timeout,
                self._sleep,
                self._on_end,
                self._on_reconnect,
            )
        return self._iterator

    def __iter__(self) -> Iterator[T]:
        # The generator itself, so a ``for`` loop pays no extra call per event.
        return self._ensure_iterator()

    def __next__(self) -> T:
        return next(self._ensure_iterator())

    def __enter__(self) -> EventStream[T]:
        """Send the request now (so status errors raise here) and return the stream."""
        if self._holder[0] is None:
            try:
                self._holder[0] = _open_event_stream(self._open, {})
            except BaseException as exc:
                self._closed = True
                if self._on_end is not None:  # as when the first iteration fails to open
                    self._on_end(None, 0, exc)
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the stream and discard its connection (if still open)."""
        was_closed, self._closed = self._closed, True
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        response = self._holder[0]
        if response is not None:
            response.close()
            # Entered but never iterated: the generator's ``finally`` never ran, so report the end here.
            if self._iterator is None and not was_closed and self._on_end is not None:
                self._on_end(response, 0, None)


def _open_event_stream(
    open_response: Callable[[dict[str, str]], StreamedResponse], headers: dict[str, str]
) -> StreamedResponse:
    response = open_response(headers)
    check_event_stream(response)
    return response


def _no_reopen(headers: dict[str, str]) -> StreamedResponse:
    raise AssertionError("a single response is never reopened")


def _iterate_events(
    holder: list[StreamedResponse | None],
    open_response: Callable[[dict[str, str]], StreamedResponse],
    cast_to: Any,
    reconnect: bool,
    max_reconnects: int,
    idle_timeout: float | None,
    sleep: Callable[[float], None],
    on_end: Callable[[StreamedResponse | None, int, BaseException | None], None] | None,
    on_reconnect: Callable[[int, str, float], None] | None,
) -> Iterator[Any]:
    """The generator behind EventStream and ``iter_events``: the hot loop, in one frame.

    It holds no reference to the EventStream (no cycle), so dropping the
    stream mid-way closes the connection at once. Batches with no error
    event are handed out with ``yield from`` (checked in C, not per event).
    """
    decode = None if cast_to is None else json_decoder(cast_to).decode
    decoder = SSEDecoder()  # one for all reconnections: it keeps the last event ID and retry
    feed = decoder.feed
    count = 0
    reconnects = 0
    error: BaseException | None = None
    try:
        while True:
            response = holder[0]
            if response is None:
                last_id = decoder.last_event_id
                response = holder[0] = _open_event_stream(
                    open_response, {} if last_id is None else {"Last-Event-ID": last_id}
                )
            try:
                last_event = time.monotonic()
                for chunk in response.iter_bytes():
                    try:
                        items = feed(chunk, decode)
                    except (
                        msgspec.DecodeError
                    ) as exc:  # held back by the decoder until the events before it were out
                        raise _invalid_event(exc, cast_to, response) from exc
                    if not items:
                        if idle_timeout is not None and time.monotonic() - last_event > idle_timeout:
                            raise APITimeoutError(
                                f"No event for {idle_timeout} s (idle timeout)", response.request
                            )
                        continue
                    if (
                        "error" not in map(_event_name, items)
                        if decode is None
                        else ServerSentEvent not in map(type, items)
                    ):
                        batch = iter(items)
                        try:
                            yield from batch
                        finally:  # count what was handed out, even when the consumer stops mid-batch
                            count += len(items) - batch.__length_hint__()
                    else:
                        for item in items:
                            if type(item) is ServerSentEvent and item.event == "error":
                                raise _error_event(item, response)
                            count += 1
                            yield item
                    last_event = time.monotonic()
                try:
                    decoder.close(decode)  # events always come out of feed(); this raises a held-back error
                except msgspec.DecodeError as exc:
                    raise _invalid_event(exc, cast_to, response) from exc
                return
            except APIConnectionError as exc:
                # Without an ID only a stream that delivered nothing yet can restart without replaying.
                if not reconnect or (decoder.last_event_id is None and count) or reconnects >= max_reconnects:
                    raise
                decoder.close()  # the broken, unterminated event is discarded
                reconnects += 1
                wait = (decoder.retry if decoder.retry is not None else 1000) / 1000.0
                log.info(
                    "Event stream broke; reconnecting in %.3fs with Last-Event-ID %r",
                    wait,
                    decoder.last_event_id,
                )
                if on_reconnect is not None:
                    on_reconnect(reconnects, f"stream broke ({exc}); reconnecting", wait)
                response.close()
                holder[0] = None
                sleep(wait)
    except BaseException as exc:
        error = exc
        raise
    finally:
        response = holder[0]
        if response is not None:
            response.close()
        if on_end is not None:
            on_end(response, count, error if not isinstance(error, GeneratorExit) else None)


def _invalid_event(
    exc: msgspec.DecodeError, cast_to: Any, response: StreamedResponse
) -> APIResponseValidationError:
    if isinstance(exc, msgspec.ValidationError):
        return APIResponseValidationError(f"Event data does not fit {cast_to!r}: {exc}", response)
    return APIResponseValidationError(f"Event data is not valid JSON: {exc}", response)


_event_name = operator.attrgetter("event")
