"""The lane: small requests answered whole, on keep-alive connections of its own (the training engine's POSTs).

A thousand samples in flight are two thousand small POSTs (a submission and a
poll each), and urllib3's and http.client's per-request machinery (header
objects, a regular expression per header, the email parser for the response
head, the pool manager's URL parse) costs ~0.35 ms of the GIL each: in a burst,
the client's whole CPU, and what the burst waits on. The lane writes the request
in one piece and reads the answer with a few calls (~0.05 ms).

Rules:
1. Its connections are made as the transport makes them: by the pool that
   serves the URL (its connection class, TLS context and settings, the
   certificate check), then spoken over directly. A URL a proxy carries is not
   the lane's (``Transport.lane_for`` says None): those go through ``send``.
2. A connection is reused only when idle and silent (a readable idle
   connection was closed by the server, or holds junk: closed); one whose answer
   said ``Connection: close``, was HTTP/1.0 without keep-alive, was ended by the
   close, or failed, is closed. At most ``maxsize`` idle connections per origin.
3. No deadline (``Timeout.total``): the watchdog is the pools'. Callers with
   one use ``send``. Connect and read timeouts apply as urllib3 applies them.
4. Errors are mapped as the transport maps them (``mapped_errors``); an answer
   cut short, or not HTTP, is a broken connection; a body over ``limit`` is
   ``ResponseTooLargeError`` and its connection is dropped.
5. A forked child never uses (or closes) the parent's lane connections.
6. The request's method and headers are checked as every request's are
   (``check_request``): CR, LF and NUL never reach the wire.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import ProtocolError
from urllib3.util.wait import wait_for_read

from .._config import Timeout
from .._exceptions import ResponseTooLargeError
from .._observe import mask_url
from ._errors import mapped_errors
from ._pools import PoolManager
from ._request import DEFAULT_PORTS, Headers, Request, check_request, check_url, origin_of

__all__ = ["Lane", "Reply"]

_MAX_HEAD = 65536  # bytes of a response head (status line and headers) at most, as http.client's limit
_READ = 65536


@dataclass
class Reply:
    """A response read whole: what ``status_error`` and the engine read of it."""

    status_code: int
    headers: Headers
    content: bytes
    request: Request

    @property
    def url(self) -> str:
        return self.request.url

    def read(self) -> bytes:
        """The body (decoded from its Content-Encoding)."""
        return self.content

    def read_capped(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (the connection is already released)."""
        return self.content[:limit]

    def read_bounded(self, limit: int) -> bytes:
        """The body: the lane read it within its own limit already."""
        return self.content

    def close(self) -> None:
        """Nothing to release: the connection went back when the body was read."""


@dataclass(frozen=True)
class _Target:
    origin: tuple[str, str, int]
    line: bytes  # " /path?query HTTP/1.1\r\n": the request line without its method
    host: bytes  # "Host: host[:port]\r\n", as http.client writes it


class _Broken(Exception):
    """The answer is not usable HTTP (raised inside ``mapped_errors`` as urllib3's ProtocolError)."""


class Lane:
    """Keep-alive connections per origin for ``exchange``; thread-safe."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[Any]] = {}
        self._targets: dict[str, _Target] = {}
        self._pid = os.getpid()
        self._closed = False

    def forked(self) -> None:
        """In a forked child: forget the parent's connections (neither used nor closed)."""
        self._lock = threading.Lock()
        self._idle = {}
        self._pid = os.getpid()

    def close(self) -> None:
        """Close every idle connection; those in use are closed when their exchange ends."""
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            scheme, host, port = origin_of(url)
            host_header = host if port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
            path = check_url(url).request_uri
            line = f" {path} HTTP/1.1\r\n".encode("ascii")
            target = _Target((scheme, host, port), line, f"Host: {host_header}\r\n".encode("ascii"))
            if len(self._targets) < 256:
                self._targets[url] = target
        return target

    def _take(self, origin: tuple[str, str, int]) -> Any | None:
        if self._pid != os.getpid():
            self.forked()
        while True:
            with self._lock:
                conns = self._idle.get(origin)
                conn = conns.pop() if conns else None
            if conn is None:
                return None
            sock = conn.sock
            if sock is not None and not wait_for_read(sock, timeout=0.0):
                return conn
            conn.close()  # closed by the server while idle (or junk arrived): never reused

    def _give(self, origin: tuple[str, str, int], conn: Any) -> None:
        with self._lock:
            if not self._closed and self._pid == os.getpid():
                conns = self._idle.setdefault(origin, [])
                if len(conns) < self.maxsize:
                    conns.append(conn)
                    return
        conn.close()

    def exchange(self, manager: PoolManager, request: Request, timeout: Timeout, limit: int) -> Reply:
        """Send ``request`` (a body of bytes or none) and read its answer whole, decoded.

        ``manager``: the transport's direct pool manager, whose pool for the URL makes new
        connections. Raises APIConnectionError / APITimeoutError as ``send`` does, and
        ResponseTooLargeError past ``limit`` bytes.
        """
        check_request(request.method, request.headers)
        target = self._target(request.url)
        body = request.body or b""
        headers = request.headers
        head = [request.method.encode("ascii"), target.line]
        if "host" not in headers:
            head.append(target.host)
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if "content-length" not in headers and (body or request.method in ("POST", "PUT", "PATCH")):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        data = b"".join(head) + body
        conn: Any = self._take(target.origin)
        done = False
        try:
            if conn is None:
                pool = manager.connection_from_url(request.url)
                conn = pool._new_conn()  # the pool's connection class and settings (TLS, its checks)
                with mapped_errors(request, "while connecting"):
                    conn.timeout = timeout.connect
                    pool._validate_conn(conn)  # https: connects, as the pool does before a request
                    if conn.is_closed:
                        conn.connect()
            with mapped_errors(request, "while sending the request"):
                conn.sock.settimeout(timeout.read)
                conn.sock.sendall(data)
            with mapped_errors(request, "while reading the response"):
                try:
                    reply, keep = _read(conn.sock, request, limit)
                except _Broken as error:
                    raise ProtocolError(str(error)) from None
            done = True
        finally:
            if not done and conn is not None:
                conn.close()
        if keep:
            self._give(target.origin, conn)
        else:
            conn.close()
        return reply


def _too_large(request: Request, limit: int, what: str) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"The response to {request.method} {mask_url(request.url)} is too large: {what}, over the "
        f"limit of {limit} bytes (max_response_size; set it with Client(max_response_size=...) or "
        "client.with_options(max_response_size=...), or stream the response)",
        request,
        limit=limit,
    )


class _Reader:
    """Bytes of one connection: what was received and not yet consumed, and more on demand."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buf = bytearray()

    def more(self, what: str) -> None:
        chunk = self.sock.recv(_READ)
        if not chunk:
            raise _Broken(f"Connection closed {what}")
        self.buf += chunk

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise _Broken("a chunk size line is too long")
            self.more("inside a chunked body")
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def exactly(self, n: int, what: str) -> bytes:
        while len(self.buf) < n:
            self.more(what)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


def _read(sock: Any, request: Request, limit: int) -> tuple[Reply, bool]:
    """One answer: the reply, and whether the connection may be reused."""
    reader = _Reader(sock)
    while True:  # 1xx answers (100 Continue, 103 Early Hints) come before the real one
        while (end := reader.buf.find(b"\r\n\r\n")) < 0:
            if len(reader.buf) > _MAX_HEAD:
                raise _Broken("the response head is too long")
            reader.more("before the response head" if not reader.buf else "inside the response head")
        lines = bytes(reader.buf[:end]).decode("latin-1").split("\r\n")
        del reader.buf[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _Broken(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        if status >= 200 or status == 101:
            break
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _Broken(f"a malformed header line: {line[:80]!r}")
        headers.add(name, value.strip(" \t"))
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    encoding = (headers.get("content-encoding") or "identity").strip().lower()
    length = headers.get("content-length")
    if status in (204, 304) or 100 <= status < 200 or request.method == "HEAD":
        content = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        size = 0
        while True:
            field = reader.line().split(b";", 1)[0].strip()
            try:
                n = int(field, 16)
            except ValueError:
                raise _Broken(f"a malformed chunk size {field[:40]!r}") from None
            if n == 0:
                while reader.line():  # the trailer, up to its empty line
                    pass
                break
            size += n
            if size > limit and encoding == "identity":
                raise _too_large(request, limit, f"more than {limit} bytes arrived")
            parts.append(reader.exactly(n, "inside a chunk"))
            if reader.exactly(2, "after a chunk") != b"\r\n":
                raise _Broken("a chunk is not followed by CRLF")
        content = b"".join(parts)
    elif length is not None:
        if not length.strip().isdigit():
            raise _Broken(f"a malformed Content-Length {length[:40]!r}")
        n = int(length)
        if n > limit and encoding == "identity":
            raise _too_large(request, limit, f"it announces {n} bytes")
        content = reader.exactly(n, f"after {len(reader.buf)} of {n} body bytes")
    else:  # ended by the close
        keep = False
        while True:
            if len(reader.buf) > limit and encoding == "identity":
                raise _too_large(request, limit, f"more than {limit} bytes arrived")
            chunk = sock.recv(_READ)
            if not chunk:
                break
            reader.buf += chunk
        content = bytes(reader.buf)
        reader.buf.clear()
    if reader.buf:
        keep = False  # bytes after the answer: nothing was asked for them
    if encoding != "identity":
        decoded = urllib3.HTTPResponse(
            body=io.BytesIO(content), headers=headers, status=status, preload_content=False
        ).read(limit + 1, decode_content=True)
        if len(decoded) > limit:
            raise _too_large(request, limit, f"more than {limit} bytes once decoded")
        content = decoded
    return Reply(status, headers, content, request), keep
