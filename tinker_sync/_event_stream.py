"""Event streams: Server-Sent Events read lazily from a response, typed, reconnected.

Rules:
1. An ``EventStream`` sends nothing until it is first iterated or entered:
   it is given a ``Connector`` (by the client) and opens through it then.
2. It reads through any ``EventSource`` (a ``StreamedResponse``) into one
   reused buffer, grown while reads fill it, and feeds views of it to the
   SSE decoder: no read allocates. The events of each read come out as one
   batch, flattened in C (``itertools.chain``): no Python frame runs per event.
3. An event named ``error`` raises APIError, and data that does not fit
   ``cast_to`` raises APIResponseValidationError, each after every event
   before it was handed out.
4. A broken stream reconnects only when asked (``reconnect=True``), with
   ``Last-Event-ID``, through the connector's retry budget; without an event
   ID only a stream that delivered nothing yet may start again.
5. The stream closes its connection when it is exhausted, closed, broken out
   of (a ``for`` loop's ``break`` drops the generator, which closes it) or
   garbage-collected; the generator holds no reference back to the
   ``EventStream``, so no cycle keeps a connection alive.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
import weakref
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar, cast

import msgspec

from ._buffers import ReadBuffer
from ._events import ServerSentEvent
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    StreamAlreadyConsumed,
)
from ._observe import redact
from ._typing import E
from .sse import DEFAULT_MAX_SIZE, SSEDecoder

__all__ = ["Connector", "EventSource", "EventStream", "json_decoder"]

log = logging.getLogger("tinker_sync")

# An error event's message is quoted up to this many characters (``.body`` keeps it whole).
MAX_MESSAGE = 1024
# The SSE spec's default reconnection time, when the server sent no ``retry``.
DEFAULT_RECONNECT_WAIT = 1.0


@functools.lru_cache(maxsize=256)
def json_decoder(cast_to: Any) -> msgspec.json.Decoder[Any]:
    """One reused msgspec decoder per target type."""
    return msgspec.json.Decoder(cast_to)


class EventSource(Protocol):
    """What an event stream reads: an open HTTP response (``StreamedResponse``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def url(self) -> str: ...
    @property
    def request(self) -> Any: ...
    @property
    def is_closed(self) -> bool: ...
    def readinto(self, buffer: memoryview, /) -> int: ...
    def close(self) -> None: ...


class Connector(Protocol):
    """How an event stream opens and reconnects; the client gives one per logical request."""

    def open(self, last_event_id: str | None) -> EventSource:
        """Send the request (``Last-Event-ID`` when given), retried until its response is established."""
        ...

    def wait_to_reconnect(self, error: APIConnectionError, *, events: int, retry: float) -> bool:
        """Wait before reconnecting after ``error``; False when the retry budget is spent."""
        ...

    def finished(self, source: EventSource | None, events: int, error: BaseException | None) -> None:
        """The stream ended: exhausted, closed early, or failed with ``error``."""
        ...


_T = TypeVar("_T", covariant=True)


class Events(Protocol[_T]):
    """What ``EventStream._new_generator`` returns: an iterator of the events that can be closed
    (a generator is one; a subclass may wrap the stream's own in one of its own)."""

    def __iter__(self) -> Iterator[_T]: ...
    def __next__(self) -> _T: ...
    def close(self) -> None: ...


class _Events(itertools.chain[Any]):
    """A stream's events: ``chain.from_iterable`` of the batches its generator yields (an event is
    handed out by C code, with no generator resumed per event); closing it closes that generator.
    It can be referenced weakly."""

    generator: Generator[Iterable[Any]]

    def close(self) -> None:
        """Close the generator (its connection with it); the events not yet handed out go too."""
        self.generator.close()


class EventStream(Generic[E]):
    """A lazy stream of Server-Sent Events (or of their data, decoded into ``cast_to``).

    Nothing is sent until the first iteration or ``with`` entry. Use it in a
    ``for`` loop, as ``next(stream)``, or as a ``with`` block. Its connection
    is released when the stream is exhausted and discarded when it is closed,
    broken out of, or garbage-collected mid-way.

    With ``cast_to``, an event whose data is empty (a keep-alive ``data:``
    line) is skipped: there is nothing to decode.
    """

    def __init__(
        self,
        connector: Connector | None = None,
        *,
        source: EventSource | None = None,
        cast_to: type[E] | None = None,
        reconnect: bool = False,
        idle_timeout: float | None = None,
        max_event_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if connector is None and source is None:
            raise TypeError("EventStream needs a connector or an open source")
        self._connector = connector
        self._cast_to = cast_to
        self._reconnect = reconnect
        self._idle_timeout = idle_timeout
        self._max_event_size = max_event_size
        self._holder: list[EventSource | None] = [source]
        # The events (and their generator): held strongly once ``next()`` is used, only weakly
        # when a ``for`` loop took them (so that the loop's end, even a ``break``, drops and
        # closes the generator).
        self._generator: Events[E] | None = None
        self._weak: weakref.ref[Events[E]] | None = None
        self._started = False
        self._closed = False

    @property
    def response(self) -> EventSource | None:
        """The current HTTP response, or None before the request was sent."""
        return self._holder[0]

    def __repr__(self) -> str:
        return f"<EventStream response={self.response!r}>"

    def _live(self) -> Events[E] | None:
        return self._generator or (self._weak() if self._weak is not None else None)

    def _new_generator(self) -> Events[E]:
        if self._closed and not self._started:
            raise StreamAlreadyConsumed("This event stream was closed before it was read.")
        self._started = True
        generator = _iterate_events(
            self._holder,
            self._connector,
            self._cast_to,
            self._reconnect,
            self._idle_timeout,
            self._max_event_size,
        )
        events = cast(_Events, _Events.from_iterable(generator))
        events.generator = generator
        return cast(Events[E], events)

    def __iter__(self) -> Iterator[E]:
        """The events' iterator itself (a ``for`` loop pays no extra call per event).

        The stream keeps only a weak reference to it: when the loop ends, by
        exhaustion, ``break`` or an exception, it goes with its generator, and
        the connection is closed at once. Iterating again after that yields nothing.
        """
        generator = self._live()
        if generator is None:
            if self._started:
                return iter(())
            generator = self._new_generator()
        # The loop owns it from now on, also when ``next()`` started it: the stream lets go of
        # its strong reference, so that the loop's end closes the connection.
        self._generator = None
        self._weak = weakref.ref(generator)
        return generator

    def __next__(self) -> E:
        generator = self._live()
        if generator is None:
            if self._started:
                raise StopIteration
            generator = self._generator = self._new_generator()
        # Held strongly only when ``next()`` started it; inside a ``for`` loop the loop holds it.
        return next(generator)

    def __enter__(self) -> EventStream[E]:
        """Send the request now (so status errors raise here) and return the stream."""
        if self._holder[0] is None and self._connector is not None:
            try:
                self._holder[0] = _open(self._connector, None)
            except BaseException as exc:
                self._closed = True
                self._connector.finished(None, 0, exc)  # as when the first iteration fails to open
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the stream and discard its connection (if still open)."""
        was_closed, self._closed = self._closed, True
        events = self._live()
        if events is not None:
            events.close()
        self._generator = None
        source = self._holder[0]
        if source is not None:
            source.close()
            # Entered but never iterated: the generator's ``finally`` never ran, so report the end here.
            if not self._started and not was_closed and self._connector is not None:
                self._connector.finished(source, 0, None)


def check_event_stream(source: EventSource) -> None:
    """Raise unless a successful response is a ``text/event-stream``, showing the start of its body."""
    content_type = source.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "text/event-stream":
        return
    buffer = memoryview(bytearray(200))
    try:
        n = source.readinto(buffer)
    except APIConnectionError:
        n = 0
    source.close()
    request = source.request
    start = redact(repr(bytes(buffer[:n])), request.headers, request.url)
    raise APIResponseValidationError(
        f"Expected a text/event-stream response, got Content-Type {content_type or 'none'!r}; "
        f"the body starts with {start}",
        source,
    )


def _open(connector: Connector, last_event_id: str | None) -> EventSource:
    source = connector.open(last_event_id)
    check_event_stream(source)
    return source


def _iterate_events(
    holder: list[EventSource | None],
    connector: Connector | None,
    cast_to: Any,
    reconnect: bool,
    idle_timeout: float | None,
    max_event_size: int,
) -> Generator[Iterable[Any]]:
    """The generator behind an EventStream: the hot loop, in one frame. It yields batches.

    A read's events with no error event among them (the decoder's count of
    them did not move) are one batch; an error event raises APIError after
    the events before it were handed out, one by one.
    """
    decode = None if cast_to is None else json_decoder(cast_to).decode
    decoder = SSEDecoder(max_event_size)  # one for all reconnections: it keeps the last event ID and retry
    feed = decoder.feed
    errors = 0  # the decoder's error_events when the last batch was handed out
    reader = ReadBuffer()
    buffer = reader.view
    count = 0
    error: BaseException | None = None
    try:
        while True:
            source = holder[0]
            if source is None:
                assert connector is not None
                source = holder[0] = _open(connector, decoder.last_event_id)
            readinto = source.readinto
            try:
                last_event = time.monotonic()
                while n := readinto(buffer):
                    try:
                        items = feed(buffer[:n], decode)
                    except (
                        msgspec.DecodeError,
                        RecursionError,  # data nested too deeply
                    ) as exc:  # held back by the decoder until the events before it were out
                        raise _invalid_event(exc, cast_to, source) from exc
                    buffer = reader.next(n)
                    if not items:
                        if idle_timeout is not None and time.monotonic() - last_event > idle_timeout:
                            raise APITimeoutError(
                                f"No event for {idle_timeout} s (idle timeout)", source.request
                            )
                        continue
                    if decoder.error_events == errors:
                        batch = iter(items)
                        try:
                            yield batch
                        finally:  # count what was handed out, even when the consumer stops mid-batch
                            count += len(items) - batch.__length_hint__()  # type: ignore[attr-defined]
                            for _ in batch:  # closed mid-batch: the rest is not handed out
                                pass
                    else:
                        errors = decoder.error_events
                        for item in items:
                            if type(item) is ServerSentEvent and item.event == "error":
                                raise _error_event(item, source)
                            count += 1
                            yield (item,)
                    last_event = time.monotonic()
                try:
                    decoder.close(decode)  # events always come out of feed(); this raises a held-back error
                except (msgspec.DecodeError, RecursionError) as exc:
                    raise _invalid_event(exc, cast_to, source) from exc
                return
            except APIConnectionError as exc:
                # Without an ID only a stream that delivered nothing yet can restart without replaying.
                if connector is None or not reconnect or (decoder.last_event_id is None and count):
                    raise
                decoder.close()  # the broken, unterminated event is discarded
                retry = (
                    decoder.retry if decoder.retry is not None else DEFAULT_RECONNECT_WAIT * 1000
                ) / 1000.0
                source.close()
                holder[0] = None
                if not connector.wait_to_reconnect(exc, events=count, retry=retry):
                    raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        reader.close()
        # Drop the buffers now: a traceback kept by the caller holds this frame (never a cycle: ``error`` goes too).
        del buffer, reader, decoder, feed
        source = holder[0]
        if source is not None:
            source.close()
        if connector is not None:
            connector.finished(source, count, error if not isinstance(error, GeneratorExit) else None)
        error = None


def _invalid_event(
    exc: msgspec.DecodeError | RecursionError, cast_to: Any, source: EventSource
) -> APIResponseValidationError:
    if isinstance(exc, msgspec.ValidationError):
        return APIResponseValidationError(f"Event data does not fit {cast_to!r}: {exc}", source)
    return APIResponseValidationError(f"Event data is not valid JSON: {exc}", source)


def _error_event(event: ServerSentEvent, source: EventSource) -> APIError:
    body: Any = event.data
    message = event.data
    try:
        body = msgspec.json.decode(event.data)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        pass
    else:
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = str(inner.get("message", event.data) if isinstance(inner, dict) else inner)
    request = source.request
    message = redact(message[:MAX_MESSAGE], request.headers, request.url)
    return APIError(f"The server sent an error event: {message}", request, body=body)
