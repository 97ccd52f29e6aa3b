"""Server-sent event routes: ``/test/sse``, ``/test/sse-raw`` and ``POST /api/v1/stream_sample``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ._server import ABORT, HANG, HTTPError

EOLS = {"lf": b"\n", "cr": b"\r", "crlf": b"\r\n"}
COALESCE = 64 * 1024


def _int(query: dict[str, str], name: str, default: int | None) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise HTTPError(400, f"query {name} must be an integer", "invalid_request_error") from None


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


def _coalesce(chunks: Iterator[Any]) -> Iterator[Any]:
    """Batch small event chunks into ~64 KiB writes (only used when no delay or chunk is asked)."""
    buf = bytearray()
    for chunk in chunks:
        if chunk is ABORT or chunk is HANG:
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


def _serve_events(
    handler: Any,
    events: Any,
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
        length = sum(len(c) for c in events(False) if c is not ABORT and c is not HANG)
    framing = handler.start_response(status, headers, length=length, framing=framing)
    if handler.command == "HEAD":
        return
    body = events(True)
    if not delay and not chunk:
        body = _coalesce(body)
    handler.emit(body, framing, max_write=chunk)


def sse(handler: Any) -> None:
    q = handler.query
    count = _int(q, "count", 10)
    size = _int(q, "size", 100)
    delay = _float(q, "delay", 0.0)
    eol = EOLS.get(q.get("eol", "lf"))
    if eol is None:
        raise HTTPError(400, "eol must be lf, cr or crlf", "invalid_request_error")
    framing = _framing(q)
    chunk = _int(q, "chunk", None)
    ids = q.get("ids") in ("1", "true")
    retry = _int(q, "retry", None)
    error_at = _int(q, "error_at", None)
    ping = q.get("ping") in ("1", "true")
    event_name = q.get("event")
    cut_after = _int(q, "cut_after", None)
    hang = q.get("hang") in ("1", "true")
    start = 0
    last_id = handler.headers.get("Last-Event-ID")
    if ids and last_id not in (None, ""):
        try:
            start = int(last_id) + 1
        except ValueError:
            start = 0
    wait = handler.mock._wait

    def events(with_delay: bool) -> Iterator[Any]:
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
    _serve_events(
        handler, events, status=status, content_type=content_type, framing=framing, chunk=chunk, delay=delay
    )


def sse_raw(handler: Any) -> None:
    q = handler.query
    body = handler.body
    chunk = _int(q, "chunk", None)
    delay = _float(q, "delay", 0.0)
    framing = _framing(q)
    wait = handler.mock._wait
    step = chunk or max(1, len(body))

    def events(with_delay: bool) -> Iterator[Any]:
        for pos in range(0, len(body), step):
            if with_delay and delay and pos and wait(delay):
                yield ABORT
                return
            yield body[pos : pos + step]

    content_type = q.get("content_type", "text/event-stream")
    _serve_events(
        handler,
        events,
        status=_int(q, "status", 200),
        content_type=content_type,
        framing=framing,
        chunk=chunk,
        delay=delay,
    )


def stream_sample(handler: Any) -> None:
    request = handler.json_body()
    if not isinstance(request.get("prompt", ""), str):
        raise HTTPError(400, "prompt must be a string", "invalid_request_error")
    max_tokens = int(request.get("max_tokens", 8))
    error_at = request.get("error_at")
    delay = float(request.get("delay") or 0.0)
    wait = handler.mock._wait
    encode = msgspec.json.encode

    def events(with_delay: bool) -> Iterator[Any]:
        for i in range(max_tokens):
            if error_at is not None and i == error_at:
                yield b'event: error\ndata: {"event_type":"error","message":"boom"}\n\n'
                return
            if with_delay and delay and wait(delay):
                yield ABORT
                return
            data = encode(
                {"event_type": "token", "token": f"tok{i}", "token_id": i, "index": i, "logprob": -0.5}
            )
            yield b"id: %d\ndata: %s\n\n" % (i, data)
        if error_at is not None and error_at >= max_tokens:
            yield b'event: error\ndata: {"event_type":"error","message":"boom"}\n\n'
            return
        data = encode({"event_type": "done", "finish_reason": "length", "total_tokens": max_tokens})
        yield b"data: %s\n\n" % data

    _serve_events(
        handler,
        events,
        status=200,
        content_type="text/event-stream",
        framing="chunked",
        chunk=None,
        delay=delay,
    )
