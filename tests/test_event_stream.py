"""EventStream (``stream_get/post/...``): framing, timing, content types, errors, limits."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import msgspec
import pytest
from _sockets import raw_server

from tinker_sync import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    Client,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ServerSentEvent,
    SSEDecodeError,
    UnprocessableEntityError,
)

# Tests that reach the SSE decoder run once per twin (py, cython): they ask for ``sse_implementation``.

API_KEY = "tml-test-key"


class Chunk(msgspec.Struct):
    event_type: str
    token: str | None = None
    index: int | None = None
    finish_reason: str | None = None
    total_tokens: int | None = None


# -- a one-connection raw socket server, sequenced by the test -----------------------------------


EVENT1 = b"id: 1\ndata: first\n\n"
EVENT2 = b"id: 2\ndata: second\n\n"


def _frame(framing: str) -> tuple[bytes, Callable[[bytes], bytes], bytes]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    if framing == "chunked":
        return (
            head + b"Transfer-Encoding: chunked\r\n\r\n",
            lambda b: b"%x\r\n%s\r\n" % (len(b), b),
            b"0\r\n\r\n",
        )
    if framing == "length":
        length = len(EVENT1) + len(EVENT2)
        return head + b"Content-Length: %d\r\n\r\n" % length, lambda b: b, b""
    return head + b"Connection: close\r\n\r\n", lambda b: b, b""


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_event_handed_out_when_its_blank_line_arrives(framing, sse_implementation):
    released = threading.Event()
    waited: list[bool] = []
    head, frame, tail = _frame(framing)

    def script(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(head + frame(EVENT1))
        # the test sets ``released`` only after it got event 1; a client holding it back times this out
        waited.append(released.wait(10))
        conn.sendall(frame(EVENT2) + tail)

    with raw_server(script) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0, timeout=30) as c:
            stream = c.stream_get("/events")
            first = next(stream)
            assert first == ServerSentEvent(data="first", id="1")
            released.set()
            assert list(stream) == [ServerSentEvent(data="second", id="2")]
            assert stream.response.is_closed
    assert waited == [True]


def test_raw_iter_bytes_first_chunk_before_rest_is_sent():
    released = threading.Event()
    waited: list[bool] = []

    def script(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        waited.append(released.wait(10))
        conn.sendall(b"world")

    with raw_server(script) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0, timeout=30) as c:
            with c.stream("GET", "/x") as response:
                chunks = response.iter_bytes()
                assert next(chunks) == b"hello"
                released.set()
                assert b"".join(chunks) == b"world"
    assert waited == [True]


def test_close_delimited_body_cut_is_end(sse_implementation):
    # a close-delimited stream ends when the server closes: events so far are complete
    def script(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + EVENT1
        )

    with raw_server(script) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0) as c:
            assert [e.data for e in c.stream_get("/e")] == ["first"]


# -- content types -------------------------------------------------------------------------------


def test_wrong_content_type_shows_body_start(client, sse_implementation):
    stream = client.stream_get("/test/sse?count=3&content_type=application/json")
    with pytest.raises(APIResponseValidationError) as info:
        next(stream)
    message = str(info.value)
    assert "text/event-stream" in message
    assert "application/json" in message
    assert 'data: {"index":0' in message
    assert stream.response is None or stream.response.is_closed


def test_wrong_content_type_on_entry(client, sse_implementation):
    with pytest.raises(APIResponseValidationError, match="text/html"):
        with client.stream_post("/test/sse-raw?content_type=text/html", json="<html>"):
            pass


@pytest.mark.parametrize(
    "content_type",
    [
        "text/event-stream; charset=latin-1",
        "Text/Event-Stream",
        "TEXT/EVENT-STREAM;charset=utf-8",
        "text/event-stream ",
    ],
)
def test_content_type_params_and_case_ignored_and_utf8(client, content_type, sse_implementation):
    # the event name is sent as UTF-8; a charset parameter on the content type does not change that
    stream = client.stream_get(
        "/test/sse", params={"count": 2, "event": "héllo ✓", "content_type": content_type}
    )
    events = list(stream)
    assert [e.event for e in events] == ["héllo ✓", "héllo ✓"]
    assert stream.response.headers["content-type"].strip() == content_type.strip()


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,cls",
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (418, APIStatusError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (503, InternalServerError),
    ],
)
def test_status_errors_before_streaming(client, tinker_server, status, cls, sse_implementation):
    stream = client.stream_get(f"/test/status/{status}", max_retries=0)
    with pytest.raises(cls) as info:
        next(stream)
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.response.status_code == status
    assert error.body == {"error": {"message": f"status {status}"}}
    assert str(error).startswith(f"Error code: {status} - ")
    assert len(tinker_server.requests) == 1


def test_status_error_body_decoded(client, sse_implementation):
    with pytest.raises(NotFoundError) as info:
        list(client.stream_get("/test/status/404"))
    assert info.value.body == {"error": {"message": "status 404"}}
    assert str(info.value) == 'Error code: 404 - {"error":{"message":"status 404"}}'


def test_api_key_rejected(tinker_server, sse_implementation):
    with Client(api_key="tml-wrong", base_url=tinker_server.url) as c:
        with pytest.raises(AuthenticationError) as info:
            list(c.stream_post("/api/v1/stream_sample", json={"prompt": "hi"}))
    assert info.value.body["error"]["type"] == "authentication_error"


def test_error_event_after_earlier_events(client, sse_implementation):
    seen = []
    with pytest.raises(APIError) as info:
        for event in client.stream_get("/test/sse?count=10&error_at=3"):
            seen.append(event.json()["index"])
    assert seen == [0, 1, 2]
    assert "boom" in str(info.value)
    assert info.value.body == {"message": "boom"}
    assert not isinstance(info.value, APIStatusError)


def test_stream_sample_typed(client, sse_implementation):
    chunks = list(
        client.stream_post("/api/v1/stream_sample", json={"prompt": "hi", "max_tokens": 3}, cast_to=Chunk)
    )
    assert [c.token for c in chunks[:3]] == ["tok0", "tok1", "tok2"]
    assert chunks[-1] == Chunk(event_type="done", finish_reason="length", total_tokens=3)


def test_stream_sample_error_event(client, sse_implementation):
    seen = []
    with pytest.raises(APIError, match="boom"):
        for chunk in client.stream_post(
            "/api/v1/stream_sample", json={"max_tokens": 5, "error_at": 2}, cast_to=Chunk
        ):
            seen.append(chunk.token)
    assert seen == ["tok0", "tok1"]


def test_cast_to_mismatch_in_event(client, sse_implementation):
    class Wrong(msgspec.Struct):
        index: str

    with pytest.raises(APIResponseValidationError) as info:
        list(client.stream_get("/test/sse?count=2", cast_to=Wrong))
    assert "$.index" in str(info.value)


def test_oversized_line_raises(client, tinker_server, sse_implementation):
    with Client(api_key=client.api_key, base_url=tinker_server.url, max_event_size=1 << 16) as small:
        stream = small.stream_get("/test/sse?count=3&size=200000")
        with pytest.raises(SSEDecodeError, match="max_size"):
            next(stream)
        assert stream.response.is_closed
    # the default limit (16 MiB) lets the same stream through
    assert len(list(client.stream_get("/test/sse?count=3&size=200000"))) == 3


def _read_events(client: Client, how: str, limit: int | None) -> int:
    """Read /test/sse?count=3&size=200000 one way a user can; the number of events."""
    path = "/test/sse?count=3&size=200000"
    if how == "stream_get":
        return len(list(client.stream_get(path)))
    with client.stream("GET", path) as response:
        if how == "stream().iter_events":
            return len(list(response.iter_events(max_event_size=limit)))
        return len(list(response.iter_events(dict, max_event_size=limit)))


LIMITS = [(1 << 16, None, True), (1 << 24, None, False), (1 << 24, 1 << 16, True), (1 << 16, 1 << 24, False)]
READS = [
    (how, *limits)
    for how in ("stream_get", "stream().iter_events", "stream().iter_events(cast_to=dict)")
    for limits in LIMITS
    if how != "stream_get" or limits[1] is None  # stream_get takes the client's limit
]


@pytest.mark.parametrize(("how", "client_limit", "call_limit", "raises"), READS)
def test_the_event_size_limit_is_the_clients_whichever_way_events_are_read(
    tinker_server, sse_implementation, how, client_limit, call_limit, raises
):
    """``Client(max_event_size=...)`` bounds every event reader (a streamed response's too); a
    response's ``iter_events(max_event_size=...)`` overrides it for one call."""
    with Client(api_key=API_KEY, base_url=tinker_server.url, max_event_size=client_limit) as client:
        if raises:
            with pytest.raises(SSEDecodeError, match="max_size"):
                _read_events(client, how, call_limit)
        else:
            assert _read_events(client, how, call_limit) == 3


@pytest.mark.parametrize(("limit", "raises"), [(16, True), (None, False)])
def test_the_streaming_views_events_take_the_clients_limit(tinker_server, sse_implementation, limit, raises):
    options = {} if limit is None else {"max_event_size": limit}
    with Client(api_key=API_KEY, base_url=tinker_server.url, **options) as client:
        with client.with_streaming_response.sampling.stream_sample("hi", max_tokens=4) as response:
            if raises:
                with pytest.raises(SSEDecodeError, match="max_size"):
                    list(response.iter_events())
            else:
                assert len(list(response.iter_events())) >= 4


def test_truncated_event_stream_raises(client, sse_implementation):
    seen = []
    with pytest.raises(APIConnectionError):
        for event in client.stream_get("/test/sse?count=10&cut_after=4"):
            seen.append(event)
    assert len(seen) == 4


def test_event_stream_response_attribute(client, tinker_server, sse_implementation):
    stream = client.stream_get("/test/sse?count=2")
    assert stream.response is None
    assert "EventStream" in repr(stream)
    next(stream)
    assert stream.response.status_code == 200
    assert stream.response.url == tinker_server.url + "/test/sse?count=2"
    stream.close()
    assert stream.response.is_closed


# -- keep-alive data lines, Last-Event-ID, early breaks, freed buffers ----------------------------


def _events_then_close(body: bytes):
    def script(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        conn.sendall(head + body)

    return script


# Empty data between real events, in every form a keep-alive takes.
KEEPALIVES = [
    b"data:\n\n",
    b"data\n\n",
    b"data: \n\n",
    b"id: 7\ndata:\n\n",
    b"retry: 10\ndata:\n\n",
    b"event: ping\ndata:\n\n",
    b"data:\r\n\r\n",
    b"data:\r\r",
    b": comment\ndata:\n\n",
]


@pytest.mark.parametrize("keepalive", KEEPALIVES)
def test_typed_streams_skip_empty_data(keepalive, sse_implementation):
    body = b'data: {"index": 0}\n\n' + keepalive + keepalive + b'data: {"index": 1}\n\n'
    with raw_server(_events_then_close(body), _events_then_close(body)) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0) as c:
            typed = [item.index for item in c.stream_get("/e", cast_to=Item)]
            raw = [event.data for event in c.stream_get("/e")]
    assert typed == [0, 1]  # the keep-alives never reached the JSON decoder
    assert raw == ['{"index": 0}', "", "", '{"index": 1}']  # the raw layer delivers them, as the spec says


class Item(msgspec.Struct):
    index: int


LAST_IDS = ["7", "événement-42", "日本語", "emoji-😀", "a b", "x" * 300, ""]


@pytest.mark.parametrize("last_id", LAST_IDS)
def test_last_event_id_is_sent_as_utf8_and_never_empty(last_id, sse_implementation):
    heads: list[bytes] = []

    def first(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        heads.append(request)
        data = b"id: %s\ndata: one\n\n" % last_id.encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100000\r\n\r\n" + data
        )

    def second(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        heads.append(request)
        _events_then_close(b"data: two\n\n")(conn, request, stop)

    with raw_server(first, second) as url:
        with Client(api_key=API_KEY, base_url=url, sleep=lambda s: None) as c:
            events = list(c.stream_get("/e", reconnect=True))
    assert [e.data for e in events] == ["one", "two"]
    assert b"last-event-id" not in heads[0].lower()
    if last_id:
        assert b"\r\nLast-Event-ID: " + last_id.encode("utf-8") + b"\r\n" in heads[1]
        assert events[1].id == last_id  # the ID carries on, round-tripped
    else:
        assert b"last-event-id" not in heads[1].lower()


@pytest.mark.parametrize("first", ["for", "next() then for", "next() in the loop"])
@pytest.mark.parametrize("how", ["break", "exception", "exhausted"])
def test_the_loops_end_closes_the_connection_at_once(client, tinker_server, how, first, sse_implementation):
    stream = client.stream_get(
        "/test/sse?count=1000&delay=0.01" if how != "exhausted" else "/test/sse?count=3"
    )
    if first == "next() then for":
        next(stream)  # a first event peeked at, the rest in a loop
    try:
        for _event in stream:
            if first == "next() in the loop":
                next(stream, None)  # an event skipped from inside the loop
            if how == "break":
                break
            if how == "exception":
                raise LookupError("in the loop")
    except LookupError:
        pass
    # No del, no close(), no garbage collection: the loop's end dropped the generator.
    assert stream.response is not None and stream.response.is_closed
    stats = client._transport.pool_stats(tinker_server.url)
    assert stats["num_connections"] - stats["idle"] == 0  # no connection is held
    assert list(stream) == []  # and iterating again yields nothing


def test_a_failed_stream_frees_its_buffers_without_the_garbage_collector(client, sse_implementation):
    """100 streams failing with an oversized line, with gc disabled: nothing of them survives."""
    import gc
    import weakref

    from tinker_sync import SSEDecodeError

    small = Client(api_key=API_KEY, base_url=client.base_url, max_event_size=1 << 14)
    refs: list[weakref.ref[object]] = []
    gc.collect()
    gc.disable()
    try:
        rss = _rss()
        for _ in range(100):
            stream = small.stream_get("/test/sse?count=2&size=100000")
            try:
                next(stream)
            except SSEDecodeError as exc:
                refs.append(weakref.ref(exc))
            refs.append(weakref.ref(stream.response))  # type: ignore[arg-type]
            refs.append(weakref.ref(stream))
            del stream
        alive = [r() for r in refs if r() is not None]
        assert alive == []  # freed by reference counting alone: no cycle holds a decoder or a buffer
        assert _rss() - rss < 8 << 20  # and the memory is back: 100 x (16 KiB line + buffers) would show
    finally:
        gc.enable()
        small.close()


def _rss() -> int:
    """This process's resident set size, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fail_status(c: Client) -> tuple[BaseException, object]:
    try:
        c.get("/api/v1/training_runs/no-such-run")
    except APIStatusError as exc:
        return exc, exc.response
    raise AssertionError("no error")


def _fail_cut_body(c: Client) -> tuple[BaseException, object]:
    with c.stream("GET", "/test/bytes?size=100000&reset_after=1000", max_retries=0) as response:
        try:
            response.read()
        except APIConnectionError as exc:
            return exc, response
    raise AssertionError("no error")


def _fail_typed_event(c: Client) -> tuple[BaseException, object]:
    stream = c.stream_get("/test/sse?count=3", cast_to=int)
    try:
        next(stream)
    except APIResponseValidationError as exc:
        return exc, stream.response
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "fail", [_fail_status, _fail_cut_body, _fail_typed_event], ids=lambda f: f.__name__[6:]
)
def test_a_raised_error_is_freed_with_its_response_without_the_garbage_collector(
    client, sse_implementation, fail
):
    """No frame of the library keeps the error it raised (a frame <-> traceback cycle would keep the
    error, its response and their buffers until the cyclic collector ran)."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        refs = []
        for _ in range(20):
            error, response = fail(client)
            refs += [weakref.ref(error), weakref.ref(response)]
            del error, response
        assert [r() for r in refs if r() is not None] == []
    finally:
        gc.enable()
