"""Server-sent event test routes, ``/test/sse`` and ``/test/sse-raw``, and the event body writer.

``serve_events`` is shared with ``POST /api/v1/stream_sample`` (in ``_sampling``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ._types import ABORT, HANG, Chunk, HTTPError, Marker, Request

EOLS = {"lf": b"\n", "cr": b"\r", "crlf": b"\r\n"}
COALESCE = 64 * 1024


def _opt_int(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise HTTPError(400, f"query {name} must be an integer", "invalid_request_error") from None


def _int(query: dict[str, str], name: str, default: int) -> int:
    value = _opt_int(query, name)
    return default if value is None else value


def _float(query: dict[str, str], name: str, default: float) -> float:
    value = query.get(name)
    try:
        return default if value in (None, "") else float(value)
    except ValueError:
        raise HTTPError(400, f"query {name} must be a number", "invalid_request_error") from None


def _framing(query: dict[str, str]) -> str:
    framing = query.get("framing", "chunked")
    if framing not in ("chunked", "length", "close"):
        raise HTTPError(400, "framing must be chunked, length or close", "invalid_request_error")
    return framing


def _coalesce(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Batch small event chunks into ~64 KiB writes (only used when no delay or chunk is asked)."""
    buf = bytearray()
    for chunk in chunks:
        if isinstance(chunk, Marker):
            if buf:
                yield bytes(buf)
                buf.clear()
            yield chunk
            continue
        buf += chunk
        if len(buf) >= COALESCE:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


EventSource = Callable[[bool], Iterator[Chunk]]


def serve_events(
    request: Request,
    events: EventSource,
    *,
    status: int,
    content_type: str,
    framing: str,
    chunk: int | None,
    delay: float,
) -> None:
    """``events(live)`` is a generator function; called first with ``live=False`` (no delays, no cut)
    to measure the body for Content-Length framing."""
    headers = [("Content-Type", content_type), ("Cache-Control", "no-cache")]
    length = None
    if framing == "length":
        length = sum(len(c) for c in events(False) if not isinstance(c, Marker))
    framing = request.start_response(status, headers, length=length, framing=framing)
    body = events(True)
    if not delay and not chunk:
        body = _coalesce(body)
    request.emit(body, framing, max_write=chunk)


def sse(request: Request) -> None:
    """``/test/sse``: numbered events, with the framing, pacing and failures the query asks for."""
    q = request.query
    count = _int(q, "count", 10)
    size = _int(q, "size", 100)
    delay = _float(q, "delay", 0.0)
    eol = EOLS.get(q.get("eol", "lf"))
    if eol is None:
        raise HTTPError(400, "eol must be lf, cr or crlf", "invalid_request_error")
    framing = _framing(q)
    chunk = _opt_int(q, "chunk")
    ids = q.get("ids") in ("1", "true")
    retry = _opt_int(q, "retry")
    error_at = _opt_int(q, "error_at")
    ping = q.get("ping") in ("1", "true")
    event_name = q.get("event")
    cut_after = _opt_int(q, "cut_after")
    hang = q.get("hang") in ("1", "true")
    start = 0
    last_id = request.headers.get("last-event-id")
    if ids and last_id not in (None, ""):
        try:
            start = int(last_id) + 1
        except ValueError:
            start = 0
    wait = request.state.wait
    assert eol is not None

    def events(with_delay: bool) -> Iterator[Chunk]:
        sent = 0
        for i in range(start, count):
            if with_delay and delay and wait(delay):
                yield ABORT
                return
            if cut_after is not None and with_delay and sent >= cut_after:
                yield ABORT
                return
            lines = []
            if ping:
                lines.append(b": ping")
            if error_at is not None and i == error_at:
                lines += [b"event: error", b'data: {"message":"boom"}', b"", b""]
                yield eol.join(lines)
                if hang:
                    yield HANG
                return
            if event_name:
                lines.append(b"event: " + event_name.encode())
            if ids:
                lines.append(b"id: %d" % i)
            if retry is not None and sent == 0:
                lines.append(b"retry: %d" % retry)
            head = b'{"index":%d,"payload":"' % i
            lines.append(b"data: " + head + b"x" * max(0, size - len(head) - 2) + b'"}')
            lines += [b"", b""]
            yield eol.join(lines)
            sent += 1
        if cut_after is not None and with_delay and sent >= cut_after:
            yield ABORT
            return
        if hang:
            yield HANG

    status = _int(q, "status", 200)
    content_type = q.get("content_type", "text/event-stream")
    serve_events(
        request, events, status=status, content_type=content_type, framing=framing, chunk=chunk, delay=delay
    )


def sse_raw(request: Request) -> None:
    """``/test/sse-raw``: the request body echoed as an event stream."""
    q = request.query
    body = request.body
    chunk = _opt_int(q, "chunk")
    delay = _float(q, "delay", 0.0)
    framing = _framing(q)
    wait = request.state.wait
    step = chunk or max(1, len(body))

    def events(with_delay: bool) -> Iterator[Chunk]:
        for pos in range(0, len(body), step):
            if with_delay and delay and pos and wait(delay):
                yield ABORT
                return
            yield body[pos : pos + step]

    content_type = q.get("content_type", "text/event-stream")
    serve_events(
        request,
        events,
        status=_int(q, "status", 200),
        content_type=content_type,
        framing=framing,
        chunk=chunk,
        delay=delay,
    )
