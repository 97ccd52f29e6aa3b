"""Every body has a bound: a non-streamed call (typed, JSON, raw view) stops reading at
``max_response_size`` (a client option, and per call through ``with_options``), raises
``ResponseTooLargeError`` naming the limit and the option, discards the connection, and holds
memory near the limit, whatever the server sends: a huge Content-Length, an endless chunked or
close-delimited body, a gzip bomb. Real sockets (tests/_sockets.py).
"""

from __future__ import annotations

import functools
import gzip
import json
import socket
import threading

import pytest
from _sockets import raw_server

from tinker_sync import Client, ResponseTooLargeError, TinkerError
from tinker_sync._config import DEFAULT_MAX_RESPONSE_SIZE

API_KEY = "tml-test-key"
MiB = 1 << 20
LIMIT = 1 * MiB
PIECE = b"x" * (64 << 10)


def _page(size: int) -> bytes:
    """A training-runs page of about ``size`` bytes (valid JSON for the typed calls)."""
    run = {
        "training_run_id": "r",
        "base_model": "m",
        "model_owner": "o",
        "is_lora": True,
        "last_request_time": "2025-01-01T00:00:00Z",
        "user_metadata": {"pad": ""},
    }
    body = {"training_runs": [run], "cursor": {"offset": 0, "limit": 1, "total_count": 1}}
    bare = len(json.dumps(body).encode())
    run["user_metadata"]["pad"] = "p" * max(size - bare, 0)
    data = json.dumps(body).encode()
    assert len(data) == size or size < bare
    return data


@functools.cache
def _bomb() -> bytes:
    """64 MiB of zeros, gzipped (about 64 KiB): compressed once per worker, not per case."""
    return gzip.compress(b"\0" * (64 * MiB), compresslevel=9)


def _read_request_body(conn: socket.socket, head: bytes) -> None:
    """Read what follows the head (a POST's JSON), so that the next recv sees only a close."""
    top, _, rest = head.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in top.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(rest) < length:
        rest += conn.recv(length - len(rest))


def body_script(kind: str, discarded: threading.Event, size: int = 0):
    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        head_ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        _read_request_body(conn, head)
        try:
            if kind == "content_length_huge":
                conn.sendall(head_ok + b"Content-Length: 10000000000\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(PIECE)
            elif kind == "chunked_endless":
                conn.sendall(head_ok + b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (len(PIECE), PIECE)
                while not stop.is_set():
                    conn.sendall(chunk)
            elif kind == "close_delimited_endless":
                conn.sendall(head_ok + b"Connection: close\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(PIECE)
            elif kind == "gzip_bomb":
                bomb = _bomb()
                conn.sendall(
                    head_ok + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb
                )
                conn.recv(1)
            elif kind in ("exact", "one_over"):
                data = _page(size if kind == "exact" else size + 1)
                conn.sendall(head_ok + b"Content-Length: %d\r\n\r\n" % len(data) + data)
                conn.recv(1)
            elif kind in ("chunked_exact", "chunked_one_over"):
                data = _page(size if kind == "chunked_exact" else size + 1)
                pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
                framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
                conn.sendall(head_ok + b"Transfer-Encoding: chunked\r\n\r\n" + framed)
                conn.recv(1)
            else:
                raise AssertionError(kind)
        except OSError:
            discarded.set()  # the client closed the connection mid-body
            raise
        if conn.recv(1) == b"":
            discarded.set()

    return script


ENDLESS = [
    "content_length_huge",
    "chunked_endless",
    "close_delimited_endless",
    "gzip_bomb",
    "one_over",
    "chunked_one_over",
]
CALLS = {
    "get_json": lambda c: c.get("/api/v1/training_runs"),
    "post_json": lambda c: c.post("/api/v1/anything", json={"a": 1}),
    "typed_resource": lambda c: c.training_runs.list(),
    "raw_view": lambda c: c.with_raw_response.training_runs.list(),
    "health": lambda c: c.health.check(),
}
# The raw server answers one request, the call's own: no handshake (client/config) before it.
WAYS = {
    "client_option": lambda url: Client(
        api_key=API_KEY, base_url=url, max_retries=0, max_response_size=LIMIT, handshake=False
    ),
    "per_call": lambda url: Client(
        api_key=API_KEY, base_url=url, max_retries=0, handshake=False
    ).with_options(max_response_size=LIMIT),
}


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize("kind", ENDLESS)
def test_a_body_over_the_limit_stops_there_and_says_which_option(kind, call, way):
    discarded = threading.Event()
    with raw_server(body_script(kind, discarded, LIMIT)) as url:
        client = way(url)
        with pytest.raises(ResponseTooLargeError) as caught:
            call(client)
        client.close()
        if kind not in ("one_over", "chunked_one_over"):  # a body received whole may go back to the pool
            assert discarded.wait(30), "the connection was not discarded"
    error = caught.value
    assert isinstance(error, TinkerError) and error.limit == LIMIT
    assert str(LIMIT) in str(error) and "max_response_size" in str(error)


@pytest.mark.parametrize("kind", ["exact", "chunked_exact"])
@pytest.mark.parametrize("call", ["get_json", "typed_resource", "raw_view"])
def test_a_body_at_the_limit_is_read(kind, call):
    discarded = threading.Event()
    with raw_server(body_script(kind, discarded, LIMIT)) as url:
        with Client(
            api_key=API_KEY, base_url=url, max_retries=0, max_response_size=LIMIT, handshake=False
        ) as client:
            result = CALLS[call](client)
    assert result is not None


KEPT = {  # what the caller still holds when it closes the client: the connection is idle in the pool
    "raw_view": ("exact", lambda c: c.with_raw_response.training_runs.list()),
    "typed_page": ("exact", lambda c: c.training_runs.list()),
    "json_answer": ("chunked_exact", lambda c: c.get("/api/v1/training_runs")),
    "error_over_limit": ("chunked_one_over", lambda c: pytest.raises(ResponseTooLargeError, c.get, "/x")),
}


@pytest.mark.parametrize("closing", ["close", "with_block"])
@pytest.mark.parametrize("kept", KEPT.values(), ids=KEPT.keys())
def test_closing_the_client_shuts_its_idle_connections_at_once(kept, closing):
    """Client.close() shuts every pooled connection then, not when the garbage collector gets to
    them: a response (or an error whose traceback holds one) the caller keeps must not keep a
    socket open (urllib3 2's PoolManager.clear() only forgets its pools)."""
    kind, call = kept
    discarded = threading.Event()
    with raw_server(body_script(kind, discarded, LIMIT)) as url:
        client = Client(
            api_key=API_KEY, base_url=url, max_retries=0, max_response_size=LIMIT, handshake=False
        )
        if closing == "close":
            held = call(client)
            client.close()
        else:
            with client:
                held = call(client)
        assert discarded.wait(30), "the idle connection is still open"
        assert held is not None


def test_the_default_is_documented_and_well_above_any_page():
    assert DEFAULT_MAX_RESPONSE_SIZE == 64 * MiB
    with Client(api_key=API_KEY, base_url="http://127.0.0.1:9") as client:
        assert client.max_response_size == DEFAULT_MAX_RESPONSE_SIZE
        assert client.with_options(max_response_size=5).max_response_size == 5
        assert client.max_response_size == DEFAULT_MAX_RESPONSE_SIZE  # the copy only


@pytest.mark.parametrize("bad", [0, -1, 1.5, "64MB", None, True])
def test_a_bad_limit_is_refused_at_once(bad):
    if bad is None:  # with_options(None) means "unchanged"; the client refuses it
        with pytest.raises(ValueError, match="max_response_size"):
            Client(api_key=API_KEY, base_url="http://127.0.0.1:9", max_response_size=bad)
        return
    with pytest.raises(ValueError, match="max_response_size"):
        Client(api_key=API_KEY, base_url="http://127.0.0.1:9", max_response_size=bad)
    with Client(api_key=API_KEY, base_url="http://127.0.0.1:9") as client, pytest.raises(ValueError):
        client.with_options(max_response_size=bad)


@pytest.mark.limit_memory("40 MB", current_thread_only=True)
@pytest.mark.parametrize("kind", ["chunked_endless", "close_delimited_endless", "gzip_bomb"])
def test_memory_stays_near_the_limit(kind):
    """16 MiB limit, an endless body: the call holds about the limit (twice, as bytes), no more."""
    discarded = threading.Event()
    with raw_server(body_script(kind, discarded)) as url:
        with Client(
            api_key=API_KEY, base_url=url, max_retries=0, max_response_size=16 * MiB, handshake=False
        ) as client:
            with pytest.raises(ResponseTooLargeError):
                client.get("/api/v1/training_runs")


def test_streamed_calls_are_not_bounded(tinker_server, client, tmp_path):
    """The bound is for what is read into memory at once: a download or a stream goes on."""
    small = client.with_options(max_response_size=1024)
    target = small.download("/test/bytes?size=100000&seed=1", tmp_path / "f")
    assert target.stat().st_size == 100000
    with small.stream("GET", "/test/bytes?size=100000&seed=1") as response:
        assert sum(len(chunk) for chunk in response.iter_bytes()) == 100000


SMALL = [  # (what the server sends after the status line, what the call gets: bytes, or the error)
    ("exact", b"Content-Length: 7\r\n\r\n" + b'"seven"', "seven"),
    ("empty", b"Content-Length: 0\r\n\r\n", None),
    ("at 16 KiB", b"Content-Length: 16386\r\n\r\n" + b'"' + b"s" * 16384 + b'"', "s" * 16384),
    ("cut short", b"Content-Length: 9\r\n\r\n" + b'"sev', "short of its Content-Length"),
    (
        "chunked wins over its Content-Length",
        b'Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n7\r\n"seven"\r\n0\r\n\r\n',
        "seven",
    ),
]


@pytest.mark.parametrize(("sent", "expected"), [case[1:] for case in SMALL], ids=[case[0] for case in SMALL])
def test_a_small_answer_is_read_whole_or_fails(sent: bytes, expected: object) -> None:
    """Small answers (most API answers): the bytes announced, a cut an error, chunked framing
    over a Content-Length; the connection kept after a whole one."""

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + sent)  # then closes

    with (
        raw_server(script) as url,
        Client(base_url=url, api_key=API_KEY, handshake=False, max_retries=0) as client,
    ):
        if isinstance(expected, str) and " " in expected:
            with pytest.raises(TinkerError, match=expected):
                client.get("/small")
            return
        assert client.get("/small") == expected
        stats = client._transport.pool_stats(url + "/small")
        assert stats["idle"] == 1  # read to its end: back in the pool
