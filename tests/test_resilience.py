"""Resilience on real sockets: timeouts, byte resume, SSE reconnect, abandoned streams."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tinker_sync import APIConnectionError, APITimeoutError, Client, Timeout
from tinker_sync._config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
from tinker_sync.testing import Fault, _data

API_KEY = "tml-test-key"
MiB = 1 << 20


@pytest.fixture
def waits(client):
    recorded: list[float] = []
    client._sleep = recorded.append
    return recorded


@contextmanager
def raw_server(script: Callable[[socket.socket], None]) -> Iterator[str]:
    """Serve one connection with ``script(conn)`` after reading the request head; yields the base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            try:
                script(conn, stop)
            except OSError:
                pass  # the client went away

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(10)
        listener.close()


# -- timeouts ------------------------------------------------------------------------------------


def test_timeout_coerce():
    assert Timeout.coerce(2.5) == Timeout(connect=2.5, read=2.5)
    assert Timeout.coerce(30) == Timeout(connect=DEFAULT_CONNECT_TIMEOUT, read=30.0)
    assert Timeout.coerce(None) == Timeout(connect=None, read=None, total=None)
    t = Timeout(connect=1, read=2, total=3)
    assert Timeout.coerce(t) is t
    assert Timeout() == Timeout(DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, None)
    assert Client(api_key=API_KEY, base_url="http://x").timeout == Timeout(5.0, 60.0, None)


def test_stalled_event_stream_times_out(client, tinker_server):
    start = time.monotonic()
    stream = client.stream_get("/test/sse?count=1&hang=1", timeout=0.5, max_retries=0)
    assert next(stream).json()["index"] == 0
    with pytest.raises(APITimeoutError):
        next(stream)
    elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 5
    assert stream.response.is_closed
    # the connection was discarded: the next request works on a new one
    assert client.get("/api/v1/healthz") == {"status": "ok"}
    assert tinker_server.connections == 2


def test_stalled_raw_stream_times_out(client):
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        with client.stream(
            "GET", "/test/bytes?size=100000&stall_after=1000&stall=30", timeout=0.5, max_retries=0
        ) as response:
            response.read()
    assert time.monotonic() - start < 5
    assert response.is_closed


def test_stalled_plain_call_times_out_and_is_retried(client, tinker_server, waits):
    tinker_server.script("/test/echo", Fault(stall_after=0, stall=30, delay_headers=0))
    tinker_server.script("/test/echo", Fault(delay_headers=30))
    start = time.monotonic()
    assert client.get("/test/echo", timeout=Timeout(connect=1, read=0.5))["method"] == "GET"
    assert time.monotonic() - start < 10
    assert len(tinker_server.requests) == 3
    assert len(waits) == 2


def test_total_timeout_on_plain_call(client, tinker_server, waits):
    tinker_server.script("/test/bytes", Fault(trickle=10, trickle_delay=0.1))
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        client.get("/test/bytes?size=10000", timeout=Timeout(connect=1, read=5, total=0.5), cast_to=bytes)
    assert time.monotonic() - start < 5


def test_slow_but_live_stream_is_not_cut(client, sse_implementation):
    # an event every 0.2 s for ~2 s, with a 0.5 s read timeout: the read timeout applies between chunks
    events = list(client.stream_get("/test/sse?count=10&delay=0.2", timeout=0.5, max_retries=0))
    assert [e.json()["index"] for e in events] == list(range(10))


def test_idle_timeout_with_pings_only(sse_implementation):
    def script(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        ping = b": ping\n\n"
        conn.sendall(b"%x\r\n%s\r\n" % (len(ping) + 9, b"data: 1\n\n" + ping))
        while not stop.wait(0.1):  # keep-alive pings, never another event
            conn.sendall(b"%x\r\n%s\r\n" % (len(ping), ping))

    with raw_server(script) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0) as c:
            stream = c.stream_get("/events", idle_timeout=0.5)
            start = time.monotonic()
            assert next(stream).data == "1"
            with pytest.raises(APITimeoutError, match="idle"):
                next(stream)
            assert 0.4 < time.monotonic() - start < 5
            assert stream.response.is_closed


def test_idle_timeout_not_hit_by_live_events(client):
    events = list(client.stream_get("/test/sse?count=8&delay=0.1", idle_timeout=0.5, max_retries=0))
    assert len(events) == 8


# -- byte resume ---------------------------------------------------------------------------------


def test_resume_64_mib_through_100_resets(client, tinker_server, waits):
    size, seed = 64 * MiB, 7
    rng = random.Random(1234)
    offsets = [rng.randrange(0, MiB) for _ in range(100)]
    assert sum(offsets) < size
    tinker_server.script("/test/bytes", *[Fault(reset_after=n) for n in offsets])
    digest = hashlib.sha256()
    received = 0
    with client.stream("GET", f"/test/bytes?size={size}&seed={seed}", max_retries=110) as response:
        for chunk in response.iter_bytes():
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == _data.sha256_of(seed, size)
    requests = tinker_server.requests
    assert len(requests) == 101
    assert "range" not in requests[0].headers
    position = 0
    for n, request in zip(offsets, requests[1:], strict=False):
        position += n
        assert request.headers["range"] == f"bytes={position}-"
        assert request.headers["if-range"] == response.headers["etag"]
        assert "x-api-key" in request.headers
    assert len(waits) == 100


def test_resume_budget_exhausted_raises(client, tinker_server, waits):
    # One resume after progress, then failures without progress spend the budget.
    tinker_server.script("/test/bytes", Fault(reset_after=1000), *[Fault(reset_after=0)] * 4)
    with pytest.raises(APIConnectionError):
        with client.stream("GET", "/test/bytes?size=100000", max_retries=2) as response:
            response.read()
    assert len(tinker_server.requests) == 3


def test_resume_budget_renews_with_progress(client, tinker_server, waits):
    # Each break comes after new bytes: the budget (2) renews every time, and each resume goes at once.
    tinker_server.script("/test/bytes", *[Fault(reset_after=1000)] * 4)
    with client.stream("GET", "/test/bytes?size=100000&seed=3", max_retries=2) as response:
        body = response.read()
    assert body == b"".join(_data.generate(3, 100_000))
    assert len(tinker_server.requests) == 5
    assert waits == [0.0] * 4


def test_resume_refused_when_range_ignored(client, tinker_server, waits):
    tinker_server.script("/test/bytes", Fault(reset_after=1000), Fault(ignore_range=True))
    received = bytearray()
    with pytest.raises(APIConnectionError, match="200 instead of 206"):
        with client.stream("GET", "/test/bytes?size=100000") as response:
            for chunk in response.iter_bytes():
                received += chunk
    assert bytes(received) == b"".join(_data.generate(0, 100_000))[:1000]  # no splice
    assert tinker_server.requests[1].headers["range"] == "bytes=1000-"


def test_resume_refused_when_etag_changed(client, tinker_server, waits):
    tinker_server.script("/test/bytes", Fault(reset_after=5000), Fault(change_etag=True))
    received = bytearray()
    with pytest.raises(APIConnectionError, match="Cannot resume"):
        with client.stream("GET", "/test/bytes?size=100000&seed=2") as response:
            for chunk in response.iter_bytes():
                received += chunk
    assert len(received) == 5000
    assert bytes(received) == b"".join(_data.generate(2, 5000))


def test_no_resume_for_post(client, tinker_server, waits):
    with pytest.raises(APIConnectionError):
        with client.stream("POST", "/test/sse-raw?reset_after=10", content=b"x" * 1000) as response:
            response.read()
    assert len(tinker_server.requests) == 1


# -- SSE reconnect -------------------------------------------------------------------------------


def test_sse_reconnect_yields_each_event_once(client, tinker_server, waits, sse_implementation):
    cuts = [250, 333, 500, 117, 999]  # body bytes of each response before the cut, mid-event
    tinker_server.script("/test/sse", *[Fault(reset_after=n) for n in cuts])
    events = list(client.stream_get("/test/sse?count=50&ids=1", reconnect=True))
    assert [e.json()["index"] for e in events] == list(range(50))
    assert [e.id for e in events] == [str(i) for i in range(50)]
    requests = tinker_server.requests
    assert len(requests) == 6
    assert "last-event-id" not in requests[0].headers
    last_ids = [int(r.headers["last-event-id"]) for r in requests[1:]]
    assert last_ids == sorted(last_ids) and len(set(last_ids)) == 5
    assert waits == [1.0] * 5  # no retry field: the default reconnection time


def test_sse_reconnect_waits_server_retry(client, tinker_server, waits):
    tinker_server.script("/test/sse", Fault(reset_after=400), Fault(reset_after=400))
    events = list(client.stream_get("/test/sse?count=10&ids=1&retry=50", reconnect=True))
    assert [e.json()["index"] for e in events] == list(range(10))
    assert waits == [0.05, 0.05]


def test_sse_reconnect_after_cut_before_first_event(client, tinker_server, waits):
    # nothing was delivered yet, so the stream restarts (no Last-Event-ID) without replaying anything
    tinker_server.script("/test/sse", Fault(reset_after=20))
    events = list(client.stream_get("/test/sse?count=10&ids=1", reconnect=True))
    assert [e.json()["index"] for e in events] == list(range(10))
    assert ["last-event-id" in r.headers for r in tinker_server.requests] == [False, False]


def test_sse_no_reconnect_without_ids_after_events(client, tinker_server, waits):
    # events without IDs were delivered: a restart would replay them, so the break is raised
    tinker_server.script("/test/sse", Fault(reset_after=250))
    seen = []
    with pytest.raises(APIConnectionError):
        for event in client.stream_get("/test/sse?count=10", reconnect=True):
            seen.append(event.json()["index"])
    assert seen == [0, 1]
    assert len(tinker_server.requests) == 1


def test_sse_without_reconnect_raises(client, tinker_server, waits):
    tinker_server.script("/test/sse", Fault(reset_after=250))
    seen = []
    with pytest.raises(APIConnectionError):
        for event in client.stream_get("/test/sse?count=50&ids=1"):
            seen.append(event.json()["index"])
    assert seen == [0, 1]
    assert len(tinker_server.requests) == 1


def test_sse_reconnect_budget(client, tinker_server, waits):
    # A break after events renews the budget; the breaks before any new event spend it.
    tinker_server.script("/test/sse", Fault(reset_after=300), *[Fault(reset_after=0)] * 10)
    seen = []
    with pytest.raises(APIConnectionError):
        for event in client.stream_get("/test/sse?count=50&ids=1", reconnect=True, max_retries=3):
            seen.append(event.json()["index"])
    assert seen == list(range(len(seen)))  # in order, no duplicates
    assert len(tinker_server.requests) == 4


# -- abandoned streams ---------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_thousand_abandoned_streams_leave_no_fd(client, tinker_server):
    list(client.stream_get("/test/sse?count=1"))  # warm up: imports, the pool
    before = _open_fds()
    for _ in range(1000):
        for _event in client.stream_get("/test/sse?count=1&hang=1"):
            break
    # the server side (same process) notices closed clients within its 50 ms poll; wait for that
    deadline = time.monotonic() + 15
    while _open_fds() > before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_fds() <= before + 5
    assert tinker_server.connections >= 1000
    assert client.get("/api/v1/healthz") == {"status": "ok"}
