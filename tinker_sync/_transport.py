"""The one module that imports urllib3: the pool, sending, reading bodies, error mapping.

Rules:
1. Every urllib3 or socket error is mapped here, once, to the most specific
   tinker_sync exception (``raise ... from``), with a ``cause`` the retry
   policy reads; nothing above this module sees a urllib3 exception.
2. Bodies are never preloaded (``preload_content=False``) and redirects are
   never followed here: the client decides, so that credentials never cross
   origins.
3. Bodies are read into the caller's buffers (``Body.readinto``), straight
   from the socket: no read allocates, so a 16 KiB TLS record costs a copy,
   not a 256 KiB allocation.
4. A connection whose body was not read to its end is closed before its pool
   slot is given back: a half-read connection is never reused.
5. A deadline (``Timeout.total``) covers connecting, the response head and
   the body: a watchdog shuts the socket down when it passes, so even a
   server trickling its headers a byte at a time is cut on time.
"""

from __future__ import annotations

import heapq
import http.client
import io
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import Url, parse_url

from ._config import Timeout
from ._exceptions import APIConnectionError, APITimeoutError, InvalidRequestError
from ._observe import mask_url

__all__ = [
    "READ_SIZE",
    "Body",
    "Headers",
    "RawResponse",
    "Request",
    "Transport",
    "check_request",
    "check_url",
    "first_buffer",
    "mapped_errors",
    "next_buffer",
    "origin_of",
]

# Case-insensitive, multi-valued header mapping (re-exported so that no other
# module imports urllib3).
Headers = urllib3.HTTPHeaderDict
RawResponse = urllib3.BaseHTTPResponse

# Connections kept per host. Extra concurrent requests still get a connection
# (the pool does not block); only this many are kept alive afterwards.
DEFAULT_POOL_MAXSIZE = 32
_DEFAULT_PORTS = {"http": 80, "https": 443}
# While the socket file's own buffer may hold bytes (after the head, a chunk
# header), reads ask for at most its size, so that they never wait for more
# after copying what is already there.
_SMALL_READ = io.DEFAULT_BUFFER_SIZE
_MAX_LINE = 65536
# A body's read buffer starts at one TLS record and doubles while reads fill
# it, up to READ_SIZE: a thousand quiet streams cost 16 KiB each, a fast one
# reads 256 KiB at a time. Reads return what has arrived: the size only caps them.
FIRST_READ_SIZE = 16 * 1024
READ_SIZE = 256 * 1024


@dataclass
class Request:
    """What was (or will be) sent: kept on responses, errors and hook records."""

    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    body: bytes | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {mask_url(self.url)}>"


def check_url(url: str) -> Url:
    """``url`` parsed by urllib3's parser (the one that connects), or InvalidRequestError.

    Only an unambiguous absolute http(s) URL with a host passes: no whitespace
    or control characters, no backslash (parsers disagree on it), no userinfo
    (``user:pw@``: the API key travels in a header, and ``a@b@c`` reads
    differently to different parsers), no percent-encoding in the host. The
    origin check (``origin_of``) and the connection then read the same parts.
    """
    shown = repr(mask_url(url)) if isinstance(url, str) else repr(url)
    if not isinstance(url, str) or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise InvalidRequestError(f"Invalid URL {shown}: it contains whitespace or control characters")
    if "\\" in url:
        raise InvalidRequestError(f"Invalid URL {shown}: it contains a backslash")
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        raise InvalidRequestError(f"Invalid URL {shown}: {exc}") from None
    if (parts.scheme or "").lower() not in _DEFAULT_PORTS:
        raise InvalidRequestError(f"Invalid URL {shown}: only http and https URLs can be requested")
    authority = (
        url.split("//", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0] if "//" in url else ""
    )
    if not parts.host or not authority:
        raise InvalidRequestError(f"Invalid URL {shown}: no host")
    if parts.auth is not None or "@" in authority:
        raise InvalidRequestError(
            f"Invalid URL {shown}: credentials in the URL (user@host) are not supported"
        )
    if "%" in authority:
        raise InvalidRequestError(f"Invalid URL {shown}: percent-encoding in the host")
    return parts


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, as urllib3 will connect to it: lower case, the scheme's default
    port filled in, a trailing dot dropped (``host.`` is ``host``)."""
    parts = check_url(url)
    scheme = (parts.scheme or "").lower()
    host = (parts.host or "").lower().removesuffix(".")
    return scheme, host, parts.port or _DEFAULT_PORTS[scheme]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_request(method: str, headers: Mapping[str, object]) -> None:
    """InvalidRequestError unless the method is a token and every header name a token and value a
    string without CR, LF or NUL (which would split the request on the wire). Values never appear
    in the message: they may be secrets."""
    if not _TOKEN.fullmatch(method):
        raise InvalidRequestError(f"Invalid HTTP method {method[:40]!r}")
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidRequestError(f"Invalid header name {str(name)[:40]!r}")
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"Invalid value for header {name}: a str is needed, not {type(value).__name__}"
            )
        if "\r" in value or "\n" in value or "\x00" in value:
            raise InvalidRequestError(f"Invalid value for header {name}: it contains CR, LF or NUL")


@contextmanager
def mapped_errors(request: Request | None, during: str = "", deadline: float | None = None) -> Iterator[None]:
    """Map urllib3, socket and http.client errors to APIConnectionError / APITimeoutError.

    Past ``deadline`` (the watchdog shut the socket down), any error is the deadline's.
    """
    where = f" {during}" if during else ""
    try:
        yield
    except (HTTPError, OSError, http.client.HTTPException) as exc:
        if deadline is not None and time.monotonic() >= deadline:
            raise APITimeoutError(
                f"Request timed out{where}: the total deadline passed", request, cause="deadline"
            ) from exc
        raise _mapped(exc, request, where) from exc


def _mapped(exc: BaseException, request: Request | None, where: str) -> APIConnectionError:
    if isinstance(exc, NameResolutionError):  # a NewConnectionError: first
        return APIConnectionError(f"Could not resolve host{where}: {exc}", request, cause="dns")
    if isinstance(exc, NewConnectionError):  # a ConnectTimeoutError subclass: before it
        return APIConnectionError(f"Connection failed{where}: {exc}", request, cause="connect")
    if isinstance(exc, (TimeoutError, ConnectTimeoutError, ReadTimeoutError)):
        return APITimeoutError(f"Request timed out{where}: {exc}", request, cause="timeout")
    if isinstance(exc, SSLError):
        return APIConnectionError(f"TLS error{where}: {exc}", request, cause="tls")
    if isinstance(exc, LocationParseError):
        return APIConnectionError(f"Invalid URL: {exc}", request, cause="url")
    if isinstance(exc, ProtocolError):
        return APIConnectionError(f"Connection broken{where}: {exc}", request, cause="broken")
    return APIConnectionError(f"Connection error{where}: {exc}", request, cause="broken")


# -- the deadline watchdog ------------------------------------------------------------------------


class _Watchdog:
    """Shuts down the sockets of calls past their deadline. One thread, started on first use."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, HTTPConnection]] = []
        self._armed: dict[int, int] = {}  # id(conn) -> the entry's sequence number
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, conn: HTTPConnection, deadline: float) -> None:
        with self._cond:
            seq = next(self._seq)
            self._armed[id(conn)] = seq
            heapq.heappush(self._heap, (deadline, seq, conn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tinker-sync-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, conn: Any) -> None:
        with self._cond:
            self._armed.pop(id(conn), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._armed.get(id(self._heap[0][2])) != self._heap[0][1]:
                    heapq.heappop(self._heap)  # disarmed
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, conn = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                del self._armed[id(conn)]
                sock = conn.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


_watchdog = _Watchdog()
_deadline = threading.local()  # the deadline of the call this thread is sending


class _ConnectionMixin:
    """Arms the watchdog as the request goes out, for calls with a deadline."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline = getattr(_deadline, "value", None)
        if deadline is not None:
            _watchdog.arm(self, deadline)  # type: ignore[arg-type]
            _deadline.conn = self
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_ConnectionMixin, HTTPConnection):
    pass


class _HTTPSConnection(_ConnectionMixin, HTTPSConnection):
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


# -- the transport --------------------------------------------------------------------------------


class Transport:
    """A urllib3 PoolManager: thread-safe, one per client."""

    def __init__(self, *, pool_maxsize: int = DEFAULT_POOL_MAXSIZE) -> None:
        self._pool = urllib3.PoolManager(maxsize=pool_maxsize, block=False, retries=False)
        self._pool.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}

    def send(self, request: Request, timeout: Timeout, deadline: float | None = None) -> RawResponse:
        """Send ``request`` and return the response with its body unread.

        With a ``deadline``, connecting and waiting for the head each wait at
        most the time left, and the watchdog cuts the socket when it passes
        (``Body`` then raises APITimeoutError).
        """
        connect, read = timeout.connect, timeout.read
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.001)
            connect = left if connect is None else min(connect, left)
            read = left if read is None else min(read, left)
        _deadline.value = deadline
        try:
            with mapped_errors(request, "while connecting", deadline):
                return self._pool.urlopen(
                    request.method,
                    request.url,
                    body=request.body,
                    headers=request.headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    timeout=urllib3.Timeout(connect=connect, read=read),
                )
        except BaseException:
            conn = getattr(_deadline, "conn", None)
            if conn is not None:
                _watchdog.disarm(conn)
            raise
        finally:
            _deadline.value = _deadline.conn = None

    def pool_stats(self, url: str) -> dict[str, Any]:
        """Open and idle connection counts of the pool serving ``url`` (for tests and debugging)."""
        pool = self._pool.connection_from_url(url)
        # The pool's queue is padded with None placeholders: count real connections only.
        idle = sum(conn is not None for conn in list(pool.pool.queue)) if pool.pool else 0
        return {"num_connections": pool.num_connections, "idle": idle}

    def close(self) -> None:
        self._pool.clear()


# -- bodies ---------------------------------------------------------------------------------------


def first_buffer(limit: int = READ_SIZE) -> memoryview:
    """A read buffer for a new body: small, until reads show the body is fast."""
    return memoryview(bytearray(min(FIRST_READ_SIZE, limit)))


def next_buffer(buffer: memoryview, n: int, limit: int = READ_SIZE) -> memoryview:
    """The buffer for the next read: twice as big when the last read filled it, up to ``limit``."""
    if n == len(buffer) and n < limit:
        return memoryview(bytearray(min(2 * n, limit)))
    return buffer


class Body:
    """One response's body, read into the caller's buffers as bytes arrive.

    ``readinto(view)`` returns as soon as any bytes are there (never waiting
    to fill ``view``: a trickle is handed on as it comes) and 0 at the end. A
    body cut short (fewer bytes than Content-Length, a broken chunked
    encoding, a reset) raises APIConnectionError, never a quiet 0.

    Plain and chunked bodies are read straight from the socket's file;
    a body with a Content-Encoding goes through urllib3's decoder.
    """

    def __init__(self, raw: RawResponse, request: Request, deadline: float | None = None) -> None:
        self.raw = raw
        self.request = request
        self.deadline = deadline
        self.complete = False
        self.closed = False
        response = getattr(raw, "_fp", None)
        self._response: http.client.HTTPResponse | None = None
        self._file: Any = None
        self._left: int | None = None  # bytes left of a Content-Length body or of the current chunk
        self._chunked = False
        self._small = True
        encoding = raw.headers.get("content-encoding", "identity").strip().lower()
        if isinstance(response, http.client.HTTPResponse) and encoding in ("", "identity") and response.fp:
            self._response, self._file = response, response.fp
            self._chunked = bool(response.chunked)
            self._left = 0 if self._chunked else response.length
            if self._left == 0 and not self._chunked:
                self._finish()

    def readinto(self, view: memoryview) -> int:
        """Read the next bytes into ``view``; the count, 0 at the end of the body."""
        if self.complete:
            return 0
        try:
            if self._file is None:
                return self._readinto_decoded(view)
            if self._chunked:
                return self._readinto_chunked(view)
            return self._readinto_plain(view)
        except (HTTPError, OSError, http.client.HTTPException, APIConnectionError) as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc

    def _error(self, exc: BaseException) -> APIConnectionError:
        """The error to raise for ``exc``: the deadline's once it passed (the watchdog cut the socket)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return APITimeoutError(
                "Request timed out while reading the body: the total deadline passed",
                self.request,
                cause="deadline",
            )
        if isinstance(exc, APIConnectionError):
            return exc
        return _mapped(exc, self.request, " while reading the body")

    def _read(self, view: memoryview, limit: int | None) -> int:
        size = len(view) if limit is None else min(len(view), limit)
        if self._small:
            size = min(size, _SMALL_READ)
        n: int = self._file.readinto1(view[:size])
        if self._small and n < size:
            self._small = False  # the file's own buffer is now empty: read big, straight from the socket
        return n

    def _readinto_plain(self, view: memoryview) -> int:
        n = self._read(view, self._left)
        if self._left is None:  # ends with the connection
            if not n:
                self._finish()
            return n
        if not n:
            raise APIConnectionError(
                f"Connection broken while reading the body: it ended {self._left} bytes short of its Content-Length",
                self.request,
                cause="broken",
            )
        self._left -= n
        if not self._left:
            self._finish()
        return n

    def _readinto_chunked(self, view: memoryview) -> int:
        if not self._left:
            size = self._next_chunk_size()
            if size == 0:
                self._read_trailer()
                self._finish()
                return 0
            self._left = size
        assert self._left is not None
        n = self._read(view, self._left)
        if not n:
            raise APIConnectionError(
                "Connection broken while reading the body: it ended inside a chunk",
                self.request,
                cause="broken",
            )
        self._left -= n
        if not self._left and self._readline() not in (b"\r\n", b"\n"):
            raise APIConnectionError(
                "Connection broken: a chunk is not followed by CRLF", self.request, cause="broken"
            )
        return n

    def _readline(self) -> bytes:
        self._small = True  # the line's read may have buffered what follows it
        line: bytes = self._file.readline(_MAX_LINE)
        return line

    def _next_chunk_size(self) -> int:
        line = self._readline()
        if not line:
            raise APIConnectionError(
                "Connection broken while reading the body: it ended before its last chunk",
                self.request,
                cause="broken",
            )
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise APIConnectionError(
                f"Connection broken: invalid chunk size line {line[:40]!r}", self.request, cause="broken"
            ) from None

    def _read_trailer(self) -> None:
        while True:
            line = self._readline()
            if line in (b"\r\n", b"\n", b""):
                return

    def _readinto_decoded(self, view: memoryview) -> int:
        data = self.raw.read1(len(view), decode_content=True)
        if not data:
            self.complete = True
            return 0
        n = len(data)
        view[:n] = data
        return n

    def _finish(self) -> None:
        self.complete = True
        if self._response is not None:
            self._response.close()  # the socket's file only: the connection stays open for reuse

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read to its end, else closed."""
        if self.closed:
            return
        self.closed = True
        _watchdog.disarm(self.raw.connection)
        if self.complete:
            self.raw.release_conn()
        else:
            self.raw.close()
            self.raw.release_conn()
