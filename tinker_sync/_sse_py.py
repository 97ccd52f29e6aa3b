"""PySSEDecoder: the pure-Python, sans-IO Server-Sent Events decoder (the reference twin).

Bytes in, events out: ``feed(chunk) -> list``, ``close()`` at end of stream. No
sockets, threads or clocks. ``tinker_sync._sse.SSEDecoder`` (csrc/_sse.pyx) is the
Cython twin: same constructor, methods, events, errors and messages.

Rule 1, WHATWG exactly ("Interpreting an event stream", HTML Living Standard):
only CR, LF and CRLF end a line (a CR is acted on at once, and an LF that follows
it, even in the next chunk, is skipped); the stream is UTF-8 with one leading BOM
stripped and invalid sequences replaced by U+FFFD, exactly as
``stream.decode("utf-8", "replace")`` would. Lines are parsed as *bytes*: every
byte the rules look at (CR, LF, ":", " ", NUL, digits, field names) is ASCII and
ASCII bytes never belong to a UTF-8 sequence, so decoding each value on its own
gives the same text as decoding the whole stream.

Rule 2, any chunking gives the same result: the same events, the same
``last_event_id``/``retry``, the same error after the same events. A size error
found after some events of a chunk were completed is held back: ``feed`` returns
those events and the next ``feed``/``close`` raises it.

Rule 3, linear and bounded: a chunk is searched once for its last line end (the
pending partial line never holds one, so it is never searched again) and
complete lines are handled as a batch; no line and no event's data may exceed
``max_size`` bytes, or ``SSEDecodeError`` is raised.

Decisions where the spec leaves room (shared by both twins):

- ``last_event_id`` is the spec's "last event ID string": it changes when an
  event is dispatched (at a blank line), not when the ``id`` line is read.
- An event's ``retry`` is the last valid ``retry`` of its own block (between blank
  lines); the ``retry`` property is the stream's reconnection time, set at once
  by every valid ``retry`` line. A digits-only value too long for ``int()``
  (over ``sys.get_int_max_str_digits()`` significant digits) is ignored.
- ``close()`` ends the stream: the unterminated line and event are discarded
  (an ``id`` read in that event is forgotten too), ``last_event_id`` and
  ``retry`` are kept. A later ``feed()`` starts a new stream (a reconnection):
  it may again begin with a BOM, and events carry on with the kept last event ID.
- After an ``SSEDecodeError`` the decoder is broken: every later ``feed`` and
  ``close`` raises the same error. An exception raised by ``decode`` breaks it
  too: ``feed`` returns the events completed before it, the next ``feed`` or
  ``close`` raises that exception unchanged (at once if there were none), the
  rest of that chunk is not read, and later calls raise ``SSEDecodeError``.
- Typed mode (``decode`` given) skips an event whose data is empty (``data:``
  or ``data`` alone, a keep-alive): ``decode`` is not called and nothing is
  returned for it, since ``b""`` is no valid document for a typed decoder. The
  event is otherwise dispatched as usual: its ``id`` becomes ``last_event_id``
  and its ``retry`` applies. ``"error"`` events are still returned as
  ``ServerSentEvent``, even with empty data; without ``decode`` an empty-data
  event is returned as ``ServerSentEvent(data="")``, as the spec says.
- ``feed`` takes ``bytes``, ``bytearray`` or ``memoryview`` (anything else is a
  ``TypeError``) and keeps no reference to the chunk once it returns, so the
  caller may refill one ``bytearray`` and feed ``memoryview(buf)[:n]`` each
  time. The pure twin copies a chunk that is not ``bytes`` once, into
  ``bytes``; the Cython twin reads a C-contiguous chunk in place (a
  non-contiguous ``memoryview`` is copied once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._events import ServerSentEvent
from ._exceptions import SSEDecodeError

__all__ = ["DEFAULT_MAX_SIZE", "PySSEDecoder"]

# The longest line, and the most data one event may accumulate, in bytes.
# Tinker events are small JSON documents (progress, a future's result, a
# checkpoint record: kilobytes); the largest legitimate one is a result carrying
# a big payload such as sampled tokens or logprobs, a few MB at most. 16 MiB
# leaves ample room for those, while a server that never sends a line end (a
# wrong content type, a proxy's binary body) costs at most ~16 MiB of buffer,
# plus at most as much again for the event's data, before a clear error.
DEFAULT_MAX_SIZE = 16 * 2**20

# Error messages, shared with the Cython twin so the texts are identical.
LINE_TOO_LONG = "SSE line longer than max_size ({} bytes)"
EVENT_TOO_LONG = "SSE event data longer than max_size ({} bytes)"
DECODE_FAILED = "SSE decoder unusable: an exception escaped an earlier feed()"

_BOM = b"\xef\xbb\xbf"


def check_max_size(max_size: Any) -> int:
    """``max_size`` as a positive int, or TypeError / ValueError (shared with the Cython twin)."""
    if isinstance(max_size, bool):
        raise TypeError("max_size must be an int, not bool")
    size: int | None = max_size.__index__() if hasattr(max_size, "__index__") else None
    if size is None:
        raise TypeError(f"max_size must be an int, not {type(max_size).__name__}")
    if size < 1:
        raise ValueError(f"max_size must be at least 1, got {size}")
    return size


def retry_value(value: bytes) -> int | None:
    """The ``retry`` field's value as an int, or None if it is not digits only (shared)."""
    if not value.isdigit():  # bytes.isdigit: ASCII 0-9 only, False when empty
        return None
    try:
        return int(value.lstrip(b"0") or b"0")
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return None


def utf8_bytes(data: bytes) -> bytes:
    """``data`` with invalid UTF-8 replaced by U+FFFD (``data`` itself when it is valid)."""
    if data.isascii():
        return data
    return data.decode("utf-8", "replace").encode("utf-8")


def _check_data(data: object) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"feed() takes bytes, bytearray or memoryview, not {type(data).__name__}")


class PySSEDecoder:
    """Decode a ``text/event-stream`` body, chunk by chunk, into events.

    Args:
        max_size: the longest line, and the most data one event may
            accumulate, in bytes (UTF-8, line ends not counted).

    ``feed(chunk)`` returns the events the chunk completed, as
    ``ServerSentEvent(event, data, id, retry)``. With ``decode`` (for example
    ``msgspec.json.Decoder(T).decode``), each event whose type is not
    ``"error"`` is returned as ``decode(data)`` instead, ``data`` being the
    event's data as UTF-8 bytes; ``"error"`` events stay ``ServerSentEvent``,
    and an event with empty data is skipped (see the decisions above).
    """

    __slots__ = (
        "_max_size",
        "_pending",
        "_skip_lf",
        "_bom",
        "_data",
        "_data_len",
        "_type",
        "_id_buf",
        "_last_id",
        "_event_retry",
        "_retry",
        "_error",
        "_held",
        "_error_events",
    )

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._max_size = check_max_size(max_size)
        self._last_id: str | None = None
        self._retry: int | None = None
        self._error: str | None = None
        self._held: Exception | None = None
        self._error_events = 0
        self._start_stream()

    def _start_stream(self) -> None:
        self._pending = bytearray()  # the partial line after the last line end: never holds CR or LF
        self._skip_lf = False  # the last chunk ended with a CR: skip an LF starting the next one
        self._bom: bytes | None = b""  # BOM bytes held so far; None once the stream start is decided
        self._data: list[bytes] = []  # raw data values of the current event
        self._data_len = 0  # len of the spec's data buffer: values plus one LF each
        self._type: bytes = b""
        self._id_buf = self._last_id
        self._event_retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The last event ID in force: None until an event is dispatched after an accepted ``id``."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in milliseconds from the last valid ``retry`` field, else None."""
        return self._retry

    @property
    def error_events(self) -> int:
        """How many ``"error"`` events were returned so far: a caller handing events out in
        batches checks a batch for them once (did this count move?), not event by event."""
        return self._error_events

    def feed(
        self, data: bytes | bytearray | memoryview, decode: Callable[[bytes], Any] | None = None
    ) -> list[Any]:
        """Consume one chunk; return the events it completed, in order.

        A ``bytearray`` or ``memoryview`` chunk is copied once into ``bytes``
        (the Cython twin reads it in place); nothing refers to it afterwards.

        Raises:
            SSEDecodeError: a line or an event's data is longer than ``max_size``
                (or was earlier: the decoder is broken).
        """
        if self._error is not None:
            self._raise_error()
        data = _check_data(data)
        if self._bom is not None:
            held = self._bom + data
            if len(held) < 3 and _BOM.startswith(held):
                self._bom = held
                return []
            self._bom = None
            data = held[3:] if held.startswith(_BOM) else held
        start = 0
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 10:
                start = 1
        end = max(data.rfind(b"\n", start), data.rfind(b"\r", start))
        pending = self._pending
        if end < 0:
            if len(pending) + len(data) - start > self._max_size:
                return self._fail([], LINE_TOO_LONG)
            pending += memoryview(data)[start:]
            return []
        if pending:
            region = bytes(pending) + data[start : end + 1]
        else:
            region = data[start : end + 1]
        rest = data[end + 1 :]
        self._skip_lf = data[end] == 13 and not rest
        self._pending = bytearray(rest)
        if b"\r" in region:
            region = region.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = region.split(b"\n")
        lines.pop()  # the region ends with a line end: the last piece is empty
        events: list[Any] = []
        if max(map(len, lines)) > self._max_size:
            for index, line in enumerate(lines):
                if len(line) > self._max_size:
                    del lines[index:]
                    break
            error: str | None = LINE_TOO_LONG
        elif len(rest) > self._max_size:
            error = LINE_TOO_LONG
        else:
            error = None
        try:
            complete = self._lines(lines, events, decode)
        except Exception as exc:
            self._fail([], DECODE_FAILED, raise_now=False)
            if not events:
                raise
            self._held = exc  # raised by the next call, after the events before it
            return events
        except BaseException:
            self._fail([], DECODE_FAILED, raise_now=False)
            raise
        if not complete:
            return self._fail(events, EVENT_TOO_LONG)
        if error is not None:
            return self._fail(events, error)
        return events

    def _lines(self, lines: list[bytes], events: list[Any], decode: Callable[[bytes], Any] | None) -> bool:
        """Interpret complete lines, appending dispatched events; False if an event grew too long."""
        data = self._data
        data_len = self._data_len
        max_size = self._max_size
        for line in lines:
            if not line:  # dispatch
                self._last_id = self._id_buf
                etype, event_retry = self._type, self._event_retry
                self._type = b""
                self._event_retry = None
                if data:
                    raw = data[0] if len(data) == 1 else b"\n".join(data)
                    data = self._data = []
                    data_len = self._data_len = 0
                    if decode is not None and etype != b"error":
                        if raw:  # typed mode skips an event with empty data: decode never sees b""
                            events.append(decode(utf8_bytes(raw)))
                    else:
                        if etype == b"error":
                            self._error_events += 1
                        events.append(
                            ServerSentEvent(
                                etype.decode("utf-8", "replace") if etype else "message",
                                raw.decode("utf-8", "replace"),
                                self._last_id,
                                event_retry,
                            )
                        )
                continue
            if line[:6] == b"data: ":
                value = line[6:]
            else:
                colon = line.find(b":")
                if colon == 0:  # comment
                    continue
                if colon < 0:
                    name, value = line, b""
                else:
                    name, value = line[:colon], line[colon + 1 :]
                    if value[:1] == b" ":
                        value = value[1:]
                if name == b"event":
                    self._type = value
                    continue
                if name == b"id":
                    if b"\0" not in value:
                        self._id_buf = value.decode("utf-8", "replace")
                    continue
                if name == b"retry":
                    retry = retry_value(value)
                    if retry is not None:
                        self._retry = self._event_retry = retry
                    continue
                if name != b"data":
                    continue
            data_len += len(value) + 1
            if data_len > max_size:
                self._data_len = data_len
                return False
            data.append(value)
        self._data_len = data_len
        return True

    def _raise_error(self) -> None:
        """Raise what broke the decoder: a held-back ``decode`` exception once, then SSEDecodeError."""
        held, self._held = self._held, None
        if held is not None:
            try:
                raise held
            finally:
                del held  # no frame <-> traceback cycle keeping this decoder (and its buffer) alive
        raise SSEDecodeError(self._error)

    def _fail(self, events: list[Any], template: str, raise_now: bool = True) -> list[Any]:
        """Break the decoder; raise now, or after returning the events this chunk completed."""
        self._error = template.format(self._max_size)
        self._pending = bytearray()
        self._data = []
        if events or not raise_now:
            return events
        raise SSEDecodeError(self._error)

    def close(self, decode: Callable[[bytes], Any] | None = None) -> list[Any]:
        """End of stream: discard an unterminated line or event; return events not yet returned.

        Every event is returned by the ``feed`` that completed it, so this
        returns ``[]``, or raises the ``SSEDecodeError`` held back by ``feed``.
        ``last_event_id`` and ``retry`` are kept; a later ``feed`` starts a new stream.
        """
        if self._error is not None:
            self._raise_error()
        self._start_stream()
        return []
