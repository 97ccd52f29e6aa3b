"""Chunked bodies: the framing is stripped in place from large reads, whatever reads it is cut into.

Each body is served over a real socket in two writes, cut at every offset in turn (a size line, a
chunk's CRLF, the trailer all split between reads), on one kept-alive connection: every body must
come out whole, and the connection must be fit for the next request.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from _sockets import raw_server, read_head

from tinker_sync import APIConnectionError, Client

API_KEY = "tml-test-key"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

VALID = [
    ("two chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    ("extension, upper-case hex, bare LF", b"A;name=v\r\n0123456789\n3\nabc\n0\n\n", b"0123456789abc"),
    ("trailer fields", b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", b"abc"),
    ("one-byte chunks", b"1\r\na\r\n" * 40 + b"0\r\n\r\n", b"a" * 40),
    ("leading zeros", b"0004\r\nwxyz\r\n0\r\n\r\n", b"wxyz"),
    ("CRLF bytes inside the data", b"6\r\n\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n\r\n"),
    ("an empty body", b"0\r\n\r\n", b""),
]

INVALID = [
    ("a bad size", b"zz\r\nabc\r\n0\r\n\r\n", "invalid chunk size line"),
    ("no CRLF after the data", b"3\r\nabcX\r\n0\r\n\r\n", "not followed by CRLF"),
    ("cut inside a chunk", b"5\r\nhel", "ended inside a chunk"),
    ("cut before its CRLF", b"3\r\nabc", "not followed by CRLF"),
    ("cut before the last chunk", b"3\r\nabc\r\n", "ended before its last chunk"),
    ("cut inside a size line", b"3\r\nabc\r\n1", "ended before its last chunk"),
    ("a size line too long", b"1" + b" " * 70_000 + b"\r\nx\r\n0\r\n\r\n", "invalid chunk size line"),
]


def _split_server(body: bytes, cuts: list[int], served: list[int]) -> object:
    """One kept-alive connection: the n-th request gets ``body`` in two writes cut at ``cuts[n]``."""

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for cut in cuts:
            conn.sendall(HEAD + body[:cut])
            time.sleep(0.002)  # the client reads the first part before the second arrives
            conn.sendall(body[cut:])
            served.append(cut)
            if cut != cuts[-1] and not read_head(conn):
                return

    return script


@pytest.mark.parametrize(("name", "body", "expected"), VALID, ids=[v[0] for v in VALID])
def test_chunked_body_whole_at_every_cut(name, body, expected):
    cuts = list(range(len(body) + 1))
    served: list[int] = []
    with raw_server(_split_server(body, cuts, served)) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0) as c:
            for cut in cuts:
                with c.stream("GET", "/body") as response:
                    got = b"".join(response.iter_bytes())
                assert got == expected, cut
                assert response.is_closed
            stats = c._transport.pool_stats(url)
    assert served == cuts  # every body on the one connection: each was read to its end, then reused
    assert stats["num_connections"] == 1


@pytest.mark.parametrize(("name", "body", "problem"), INVALID, ids=[v[0] for v in INVALID])
@pytest.mark.parametrize("cut", [None, 1, 4])
def test_broken_chunked_body_raises(name, body, problem, cut):
    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(HEAD + body[: cut or len(body)])
        if cut:
            time.sleep(0.002)
            conn.sendall(body[cut:])
        conn.shutdown(socket.SHUT_WR)  # the body ends here, complete or not

    with raw_server(script) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0) as c:
            with pytest.raises(APIConnectionError, match=problem) as info:
                with c.stream("GET", "/body") as response:
                    b"".join(response.iter_bytes())
    assert info.value.cause == "broken"


@pytest.mark.parametrize("surplus", [b"X", b"HTTP/1.1 200 OK\r\n"])
def test_bytes_after_the_body_keep_its_connection_from_reuse(surplus):
    second: list[bytes] = []

    def first(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(HEAD + b"2\r\nok\r\n0\r\n\r\n" + surplus)
        second.append(read_head(conn))  # b"": the client closed this connection

    def fresh(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")

    with raw_server(first, fresh) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0) as c:
            with c.stream("GET", "/one") as response:
                assert b"".join(response.iter_bytes()) == b"ok"
            with c.stream("GET", "/two") as response:
                assert b"".join(response.iter_bytes()) == b"fresh"
    assert second == [b""]


@pytest.mark.parametrize("chunk", [1, 7, 4096, 16384, 70_000])
@pytest.mark.slow
def test_many_chunks_come_out_in_large_reads(chunk):
    """A fast body of small chunks is handed out many chunks at a time, not one read per chunk."""
    data = bytes(range(256)) * 2048  # 512 KiB
    body = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + chunk]), data[i : i + chunk]) for i in range(0, len(data), chunk)
    )

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(HEAD + body + b"0\r\n\r\n")

    with raw_server(script) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0) as c:
            with c.stream("GET", "/body") as response:
                time.sleep(0.05)  # all of it is in the socket before the first read
                pieces = list(response.iter_bytes())
    assert b"".join(pieces) == data
    if chunk < 16384:
        assert len(pieces) < len(data) // chunk // 4  # at least four chunks per read


@pytest.mark.parametrize("small", [1, 2, 36, 4096, 8191, 8192])
@pytest.mark.parametrize("chunked", [True, False])
def test_a_small_read_then_a_large_one_never_waits_for_bytes_already_here(small, chunked):
    """A read smaller than the socket file's own buffer fills that buffer: the next read, however
    large, hands out what it holds without waiting on the socket for more (the server sent all)."""
    data = bytes(range(256)) * 64  # 16 KiB
    if chunked:
        answer = HEAD + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    else:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(answer)
        stop.wait(10)  # the connection stays open: a read that waited for more would time out

    got = bytearray()
    with raw_server(script) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=0, timeout=3) as c:
            with c.stream("GET", "/body") as response:
                time.sleep(0.05)  # all of it is in the socket before the first read
                view = memoryview(bytearray(1 << 18))
                n = response.readinto(view[:small])
                got += view[:n]
                while n := response.readinto(view):
                    got += view[:n]
    assert bytes(got) == data
