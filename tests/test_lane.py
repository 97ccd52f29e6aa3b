"""The transport's lane (``_transport._lane``): small requests answered whole on keep-alive connections.

Over real loopback sockets, a raw server sends the bytes each case needs: every
framing a server may use (length, chunked with extensions and a trailer, ended by
the close, gzip and deflate, a 100 Continue first, a head trickled a byte at a
time), and whether the connection is used again; answers cut short or not HTTP,
a silent server, bodies over the limit; an idle connection the server closed;
TLS with the client's trust (and a certificate it does not trust); a proxy
(never the lane's). A raw server accepts one connection per script, so a case
that must reuse its connection has one script, and a second connection would
never be answered (the read timeout then fails the test).
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import zlib
from collections.abc import Callable

import pytest
from _sockets import raw_server, read_head

from tinker_sync import APIConnectionError, APITimeoutError, InvalidRequestError
from tinker_sync._config import ProxyRules, Timeout
from tinker_sync._exceptions import ResponseTooLargeError
from tinker_sync._transport import Headers, Request, Transport

TIMEOUT = Timeout(connect=5.0, read=5.0)
LIMIT = 1 << 20


def post(url: str, body: bytes = b'{"a": 1}', **headers: str) -> Request:
    return Request(
        "POST", url + "/api/v1/x?q=1", Headers({"Content-Type": "application/json", **headers}), body
    )


def answering(
    *answers: bytes, close: bool = False
) -> Callable[[socket.socket, bytes, threading.Event], None]:
    """A script answering one request per answer on its connection (the first head is read already)."""

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        for i, answer in enumerate(answers):
            if i:
                assert read_head(conn), "the client left before its next request"
            conn.sendall(answer)
        if close:
            conn.shutdown(socket.SHUT_WR)

    return script


def trickled(answer: bytes) -> Callable[[socket.socket, bytes, threading.Event], None]:
    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        for i in range(len(answer)):
            conn.sendall(answer[i : i + 1])

    return script


HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
KEPT = [
    ("length", HELLO),
    (
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\nhe\r\n3\r\nllo\r\n0\r\nX-Trailer: 1\r\n\r\n",
    ),
    (
        "gzip",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gzip.compress(b"hello")), gzip.compress(b"hello")),
    ),
    (
        "deflate",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
        % (len(zlib.compress(b"hello")), zlib.compress(b"hello")),
    ),
    ("100 continue first", b"HTTP/1.1 100 Continue\r\n\r\n" + HELLO),
    (
        "HTTP/1.0 keep-alive",
        HELLO.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"OK\r\n", b"OK\r\nConnection: keep-alive\r\n"),
    ),
]


@pytest.mark.parametrize(("case", "answer"), KEPT, ids=[c for c, _ in KEPT])
def test_each_framing_is_read_whole_and_its_connection_used_again(case: str, answer: bytes) -> None:
    transport = Transport()
    try:
        with raw_server(answering(answer, answer, answer)) as url:
            for _ in range(3):  # one connection for all three: the server accepts no other
                reply = transport.exchange(post(url), TIMEOUT, LIMIT)
                assert reply is not None and reply.status_code == 200 and reply.content == b"hello"
    finally:
        transport.close()


CLOSED = [
    ("ended by the close", b"HTTP/1.1 200 OK\r\n\r\nhello", True),
    ("Connection: close", HELLO.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n"), False),
    ("HTTP/1.0", HELLO.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
    ("trickled head", None, False),
]


@pytest.mark.parametrize(("case", "answer", "close"), CLOSED, ids=[c for c, _, _ in CLOSED])
def test_a_connection_the_answer_ends_is_not_used_again(case: str, answer: bytes | None, close: bool) -> None:
    transport = Transport()
    if answer is None:
        scripts = [trickled(HELLO.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n"))] * 2
    else:
        scripts = [answering(answer, close=close)] * 2
    try:
        with raw_server(*scripts) as url:
            for _ in range(2):  # the second on a new connection (the first one's script is done)
                reply = transport.exchange(post(url), TIMEOUT, LIMIT)
                assert reply is not None and reply.content == b"hello"
    finally:
        transport.close()


def test_an_idle_connection_the_server_closed_is_never_reused() -> None:
    transport = Transport()
    done = threading.Event()

    def answer_then_close(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(HELLO)  # keep-alive, by the look of it: then the server closes while it is idle
        done.set()

    try:
        with raw_server(answer_then_close, answering(HELLO)) as url:
            assert transport.exchange(post(url), TIMEOUT, LIMIT).content == b"hello"  # type: ignore[union-attr]
            done.wait(5)
            reply = transport.exchange(post(url), TIMEOUT, LIMIT)
            assert reply is not None and reply.content == b"hello"
    finally:
        transport.close()


def test_the_request_goes_out_whole_with_its_host_and_length() -> None:
    heads: list[bytes] = []

    def record(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        while len(head) < head.index(b"\r\n\r\n") + 4 + 8:
            head += conn.recv(65536)
        heads.append(head)
        conn.sendall(HELLO)

    transport = Transport()
    try:
        with raw_server(record) as url:
            transport.exchange(post(url, X_Extra="1"), TIMEOUT, LIMIT)
    finally:
        transport.close()
    port = url.rsplit(":", 1)[1]
    head, _, body = heads[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/v1/x?q=1 HTTP/1.1"
    assert sorted(lines[1:]) == sorted(
        [
            f"Host: 127.0.0.1:{port}".encode(),
            b"Content-Type: application/json",
            b"X_Extra: 1",
            b"Content-Length: 8",
        ]
    )
    assert body == b'{"a": 1}'


FAILURES = [
    ("cut inside the body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", APIConnectionError),
    (
        "cut inside a chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhel",
        APIConnectionError,
    ),
    ("cut inside the head", b"HTTP/1.1 200 OK\r\nContent-Le", APIConnectionError),
    ("closed before a byte", b"", APIConnectionError),
    ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", APIConnectionError),
    ("a bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", APIConnectionError),
    ("a bad length", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", APIConnectionError),
]


@pytest.mark.parametrize(("case", "answer", "error"), FAILURES, ids=[c for c, _, _ in FAILURES])
def test_an_answer_cut_short_or_not_http_is_a_broken_connection(
    case: str, answer: bytes, error: type
) -> None:
    transport = Transport()
    try:
        with raw_server(answering(answer, close=True)) as url:
            with pytest.raises(error) as info:
                transport.exchange(post(url), TIMEOUT, LIMIT)
    finally:
        transport.close()
    assert info.value.cause == "broken"


TOO_LARGE = [
    ("announced", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100),
    (
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100 + b"\r\n0\r\n\r\n",
    ),
    ("ended by the close", b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100),
    (
        "once decoded",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gzip.compress(b"x" * 100)), gzip.compress(b"x" * 100)),
    ),
]


@pytest.mark.parametrize(("case", "answer"), TOO_LARGE, ids=[c for c, _ in TOO_LARGE])
def test_a_body_over_the_limit_raises_and_its_connection_is_dropped(case: str, answer: bytes) -> None:
    transport = Transport()
    try:
        with raw_server(answering(answer, close=True), answering(HELLO)) as url:
            with pytest.raises(ResponseTooLargeError, match="over the limit of 50 bytes") as info:
                transport.exchange(post(url), TIMEOUT, 50)
            assert info.value.limit == 50
            reply = transport.exchange(post(url), TIMEOUT, 50)  # a new connection answers
            assert reply is not None and reply.content == b"hello"
    finally:
        transport.close()


def test_a_silent_server_is_a_read_timeout() -> None:
    def silent(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        stop.wait(10)

    transport = Transport()
    try:
        with raw_server(silent) as url:
            with pytest.raises(APITimeoutError) as info:
                transport.exchange(post(url), Timeout(connect=5.0, read=0.2), LIMIT)
    finally:
        transport.close()
    assert info.value.cause == "timeout"


def test_a_refused_connection_is_a_connection_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    transport = Transport()
    with pytest.raises(APIConnectionError) as info:
        transport.exchange(post(f"http://127.0.0.1:{port}"), TIMEOUT, LIMIT)
    assert info.value.cause == "connect"


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\x00b"])
def test_cr_lf_nul_never_reach_the_wire(bad: str) -> None:
    transport = Transport()
    with raw_server() as url:  # no script: a connection would not be answered
        with pytest.raises(InvalidRequestError):
            transport.exchange(post(url, X_Bad=bad), TIMEOUT, LIMIT)


def test_a_url_a_proxy_carries_is_not_the_lanes() -> None:
    transport = Transport(proxies=ProxyRules(http="http://127.0.0.1:9"))
    assert transport.exchange(post("http://127.0.0.1:1"), TIMEOUT, LIMIT) is None  # nothing sent


def test_tls_with_the_clients_trust(tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    trusted = Transport(verify=str(ca_file))
    untrusted = Transport()
    try:
        with raw_server(answering(HELLO, HELLO), answering(HELLO), tls=context) as url:
            for _ in range(2):  # one connection, TLS once
                reply = trusted.exchange(post(url), TIMEOUT, LIMIT)
                assert reply is not None and reply.content == b"hello"
            with pytest.raises(APIConnectionError, match="(?i)certificate") as info:
                untrusted.exchange(post(url), TIMEOUT, LIMIT)
            assert info.value.cause == "tls"
    finally:
        trusted.close()
        untrusted.close()


def test_a_forked_child_never_uses_the_parents_connections() -> None:
    transport = Transport()
    try:
        with raw_server(answering(HELLO), answering(HELLO)) as url:
            transport.exchange(post(url), TIMEOUT, LIMIT)
            parent = dict(transport._lane._idle)
            assert sum(map(len, parent.values())) == 1
            transport.forked()  # what the at-fork handler runs in the child
            assert transport._lane._idle == {}
            reply = transport.exchange(post(url), TIMEOUT, LIMIT)  # a connection of its own
            assert reply is not None and reply.content == b"hello"
            (left,) = next(iter(parent.values()))
            assert left.sock is not None  # the parent's, left open
            left.close()  # (as the parent would)
    finally:
        transport.close()
