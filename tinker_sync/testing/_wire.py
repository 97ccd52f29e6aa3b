"""The wire: the HTTP server, its request handler and the one body writer every route uses.

Owns: accepting connections (TLS wrapped here, handshaken on the connection's
own thread), reading and recording each request, choosing its fault, and
``_Exchange``, the ``_types.Request`` a route answers through. ``emit`` applies
every wire fault (resets, stalls, wrong lengths, trickles) and the rate caps,
so every route gets them for free.

Rules: this module knows the server only as ``Host`` (below), so it never
imports ``_server``; waits go through the server's stop event, never
``time.sleep``, so ``stop()`` ends every waiting response at once.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import msgspec

from ._head import read_fields
from ._types import (
    ABORT,
    HANG,
    NO_FAULT,
    WRITE_SIZE,
    Chunk,
    Fault,
    Headers,
    HTTPError,
    RecordedRequest,
    Request,
    ServerState,
)
from ._validate import violation

__all__ = ["Host", "HTTPServer", "Socket"]

Socket = socket.socket | tuple[bytes, socket.socket]  # what socketserver calls a request


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    # The listen backlog (socketserver's default is 5): a client opening a few dozen connections at
    # once (a training burst's threads, the official SDK's hundreds) overflowed it, and each dropped
    # SYN cost its connection a 1 s retransmission, as no real server's backlog would.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], mock: Host) -> None:
        self.mock = mock
        self._stop = False
        self._wake_read, self._wake_write = socket.socketpair()
        super().__init__(address, _Handler)

    def serve_until_stopped(self) -> None:
        """Accept connections until ``stop_serving()``, which wakes this loop at once (the stdlib's
        ``serve_forever`` notices ``shutdown()`` only at its next poll, a delay on every test's teardown)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._stop:
                for key, _ in selector.select():
                    if key.fileobj is self and not self._stop:
                        self.handle_request()  # readable: returns once it has accepted

    def stop_serving(self) -> None:
        """Make ``serve_until_stopped`` return (the caller joins its thread)."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wake_read.close()
        self._wake_write.close()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        context = self.mock.ssl_context
        if context is not None:  # the handshake runs on the connection's own thread (_Handler.setup)
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Socket, client_address: Any) -> None:
        self.mock._accepted(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Socket) -> None:
        self.mock._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Socket, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ValueError, OSError)):
            return  # a client that went away, a failed TLS handshake, or a socket closed by stop()
        super().handle_error(request, client_address)


class Host(ServerState, Protocol):
    """What the wire needs of the server object, besides what routes need."""

    ssl_context: ssl.SSLContext | None
    rate_limit: float | None
    latency: float
    _stopping: threading.Event

    def _accepted(self, sock: Socket) -> None: ...
    def _closed(self, sock: Socket) -> None: ...
    def _record(self, request: RecordedRequest) -> None: ...
    def _answering(self, delta: int) -> None: ...
    def _sent(self, n: int) -> None: ...
    def _take_fault(self, path: str) -> Fault | None: ...
    def _route(self, request: Request) -> None: ...


class _Bucket:
    """A token bucket pacing body bytes at ``rate`` per second, with ~50 ms of burst."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.burst = max(1024, int(rate / 20))
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()

    def take(self, n: int, wait: Callable[[float], bool]) -> bool:
        """Spend ``n`` bytes, waiting (on the server's stop event) while in debt. True if stopped."""
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return self.tokens < 0 and wait(-self.tokens / self.rate)


class _Handler(BaseHTTPRequestHandler):
    """One connection: reads each request, records it and hands an ``_Exchange`` to its route."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no delayed-ACK stalls
    server_version = "MockTinker/1.0"
    server: HTTPServer
    raw_requestline: bytes  # set by http.server before parse_request
    fault: Fault = NO_FAULT
    bucket: _Bucket | None = None  # the connection's rate cap (MockTinkerServer.rate_limit)
    aborted = False
    fields: dict[str, str] = {}  # the request's header fields, names lower-cased, the last value wins
    first: dict[str, str] = {}  # the same, the first value wins (what http.server's own reads see)

    def parse_request(self) -> bool:
        """``http.server``'s parse, cheaper for the usual request: an ``HTTP/1.0`` or ``HTTP/1.1``
        request line is taken apart here and its header block read by ``_head.read_fields``; any
        other line goes through the stdlib's parse whole. Either way: the same fields, the same
        431 answers at its limits, keep-alive and ``Expect: 100-continue`` handled as it does."""
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            if not super().parse_request():
                return False
            self._take_fields(self.headers.items())
            return True
        self.requestline = line
        self.command, path, self.request_version = words
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path  # as http.server does
        self.close_connection = self.request_version == "HTTP/1.0"
        try:
            self.headers, fields = read_fields(self.rfile)
        except http.client.LineTooLong as error:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(error))
            return False
        except http.client.HTTPException as error:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(error))
            return False
        self._take_fields(fields)
        connection = self.first.get("connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if self.first.get("expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _take_fields(self, fields: list[tuple[str, str]]) -> None:
        lowered = [(name.lower(), value) for name, value in fields]
        self.fields = dict(lowered)
        self.first = self.fields if len(self.fields) == len(lowered) else dict(reversed(lowered))

    def send_response(self, code: int, message: str | None = None) -> None:
        """``http.server``'s status line, ``Server`` and ``Date`` (without its ``log_request``,
        whose only output, ``log_message``, is silenced here)."""
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())
        self.send_header("Date", self.date_time_string())

    _date = (0, "")  # (second, its Date header): formatted once a second, not once a response

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        date = _Handler._date
        if date[0] != second:
            date = _Handler._date = (second, formatdate(second, usegmt=True))
        return date[1]

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    @property
    def mock(self) -> Host:
        return self.server.mock

    # -- connection end ----------------------------------------------------------------------------

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        if self.aborted:
            if self.fault.rst:
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Closed here, before the server's shutdown_request, which then finds it closed.
            self.connection.close()

    def abort(self) -> None:
        self.aborted = True
        self.close_connection = True

    def hang(self) -> None:
        """Send nothing more until the client closes its end or the server stops."""
        sock = self.connection
        stopping = self.mock._stopping
        while not stopping.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable and not sock.recv(65536):  # the connection is aborted next: reading is harmless
                    return  # the client closed its end
            except ssl.SSLWantReadError:
                continue
            except (OSError, ValueError):
                return

    # -- request -----------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        """The request's body; ConnectionError when the client went away before all of it came
        (a client's deadline can cut its own request): a part of a body is never routed."""
        if "chunked" in self.first.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("the client went away inside a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self._read_exactly(size))
                self.rfile.readline(65537)
        length = int(self.first.get("content-length") or 0)
        return self._read_exactly(length) if length else b""

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise ConnectionError(f"the client went away after {len(data)} of {size} body bytes")
        return data

    def _dispatch(self) -> None:
        mock = self.mock
        self.fault = NO_FAULT
        exchange: _Exchange | None = None
        try:
            path, query = self.path, {}
            if "?" in path or "#" in path or path[:1] != "/":  # else urlsplit would give it back whole
                split = urlsplit(path)
                path = split.path
                query = dict(parse_qsl(split.query, keep_blank_values=True))
            body = self._read_body()
            headers = self.fields
            mock._record(RecordedRequest(self.command, path, dict(query), dict(headers), body))
            exchange = _Exchange(self, path, query, body, headers)
            mock._answering(1)
            try:
                fault = mock._take_fault(path)
                if fault is None and (path.startswith("/test/") or path.startswith("/signed/")):
                    fault = Fault.from_query(query)
                self.fault = exchange.fault = fault or NO_FAULT
                if self.fault.delay_headers and mock.wait(self.fault.delay_headers):
                    return self.abort()
                if mock.latency and mock.wait(mock.latency):
                    return self.abort()
                mock._route(exchange)
            except HTTPError as error:
                if error.violation:
                    mock.add_violation(f"{self.command} {path}: {error.message}")
                exchange.send_error_json(error.status, error.message, error.type, error.headers)
            finally:
                mock._answering(-1)
        except (ConnectionError, TimeoutError, ssl.SSLError):  # the client went away (over TLS: an EOF)
            self.close_connection = True
        except Exception as error:  # a bug in a route: answer 500 if still possible, and say so
            traceback.print_exc()
            if exchange is None or exchange.headers_sent:
                return self.abort()
            self.fault = exchange.fault = NO_FAULT
            exchange.send_error_json(500, f"mock server error: {error!r}", "mock_server_error")
            self.close_connection = True


class _Exchange:
    """One request and its response: the ``_types.Request`` every route is given."""

    def __init__(
        self, handler: _Handler, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]
    ):
        self.handler = handler
        self.command = handler.command
        self.path = path
        self.query = query
        self.body = body
        self.headers = headers
        self.fault: Fault = NO_FAULT
        self.headers_sent = False

    @property
    def state(self) -> Host:
        return self.handler.mock

    def json_body(self) -> dict[str, Any]:
        try:
            value = msgspec.json.decode(self.body) if self.body else {}
        except msgspec.DecodeError as error:
            raise violation(400, f"invalid JSON body: {error}") from None
        if not isinstance(value, dict):
            raise violation(400, "JSON body must be an object")
        return value

    def start_response(
        self,
        status: int,
        headers: Headers,
        *,
        length: int | None = None,
        framing: str = "length",
    ) -> str:
        """Send the status line and headers; returns the framing actually used."""
        if self.fault.wrong_length is not None:
            framing, length = "wrong", self.fault.wrong_length
        handler = self.handler
        self.headers_sent = True
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        if framing in ("length", "wrong"):
            handler.send_header("Content-Length", str(length or 0))
        elif framing == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        if framing in ("close", "wrong") or self.fault.close:
            handler.send_header("Connection", "close")
        if self.fault.close:
            handler.close_connection = True
        handler.end_headers()
        return framing

    def _bucket(self) -> _Bucket | None:
        if self.fault.rate:
            return _Bucket(self.fault.rate)
        rate = self.state.rate_limit
        if not rate:
            return None
        handler = self.handler
        if handler.bucket is None or handler.bucket.rate != rate:
            handler.bucket = _Bucket(rate)
        return handler.bucket

    def emit(self, chunks: Iterable[Chunk], framing: str, *, max_write: int | None = None) -> None:
        """Write a body: each chunk as it comes (one HTTP chunk each when chunked), split into writes
        of at most ``max_write`` bytes, with the request's fault and rate cap applied. ``ABORT`` /
        ``HANG`` items reset the connection / wait for the client to leave. Nothing for HEAD."""
        handler = self.handler
        if self.command == "HEAD":
            if framing in ("close", "wrong"):
                handler.close_connection = True
            return
        fault = self.fault
        bucket = self._bucket()
        chunked = framing == "chunked"
        limit = min(x for x in (max_write, fault.trickle, WRITE_SIZE, bucket and bucket.burst) if x)
        stall_at, reset_at = fault.stall_after, fault.reset_after
        sent = 0
        wrote = False
        write = handler.wfile.write
        wait = self.state.wait
        for chunk in chunks:
            if chunk is ABORT:
                return handler.abort()
            if chunk is HANG:
                handler.hang()
                return handler.abort()
            view = memoryview(chunk)  # type: ignore[arg-type]
            pos, total = 0, len(view)
            while pos < total:
                if stall_at is not None and sent >= stall_at:
                    stall_at = None
                    if wait(fault.stall):
                        return handler.abort()
                if reset_at is not None and sent >= reset_at:
                    return handler.abort()
                n = min(total - pos, limit)
                if stall_at is not None:
                    n = min(n, stall_at - sent)
                if reset_at is not None:
                    n = min(n, reset_at - sent)
                if wrote and fault.trickle and fault.trickle_delay and wait(fault.trickle_delay):
                    return handler.abort()
                if bucket is not None and bucket.take(n, wait):
                    return handler.abort()
                piece = view[pos : pos + n]
                self.state._sent(n)  # before the write: a client can read the piece before write() returns
                if chunked:
                    write(b"%x\r\n%s\r\n" % (n, piece))
                else:
                    write(piece)
                wrote = True
                pos += n
                sent += n
        if stall_at is not None and sent >= stall_at and wait(fault.stall):
            return handler.abort()
        if reset_at is not None and sent >= reset_at:
            return handler.abort()
        if chunked:
            write(b"0\r\n\r\n")
        if framing in ("close", "wrong"):
            handler.close_connection = True

    def send_json(self, status: int, obj: Any, headers: Headers = ()) -> None:
        self.send_body(status, [("Content-Type", "application/json"), *headers], msgspec.json.encode(obj))

    def send_body(self, status: int, headers: Headers, body: bytes) -> None:
        """Answer ``body`` whole. Without a fault or a rate cap, a small body leaves in the same
        write as the head: one segment, one read for the client (the training routes answer
        thousands of these a second; two writes cost both sides a syscall and a wake-up each)."""
        handler = self.handler
        if self.fault is not NO_FAULT or self._bucket() is not None or len(body) > WRITE_SIZE:
            return self.emit([body], self.start_response(status, headers, length=len(body)))
        self.headers_sent = True
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        if self.command != "HEAD":
            self.state._sent(len(body))  # before the write, as emit counts it
            # http.server's head buffer (end_headers without its flush): the body joins it
            handler._headers_buffer.extend((b"\r\n", body))  # type: ignore[attr-defined]
            handler.flush_headers()
        else:
            handler.end_headers()

    def send_error_json(
        self, status: int, message: str, type: str | None = "error", headers: Headers = ()
    ) -> None:
        if self.state.error_format == "detail":  # FastAPI's shapes: a list for a validation error
            detail: Any = message
            if status == 422:
                detail = [{"loc": ["body"], "msg": message, "type": type or "value_error"}]
            return self.send_json(status, {"detail": detail}, headers)
        error: dict[str, Any] = {"message": message}
        if type is not None:
            error["type"] = type
        self.send_json(status, {"error": error}, headers)

    def send_empty(self, status: int, headers: Headers = ()) -> None:
        self.start_response(status, headers, length=0)
