"""The loopback mock Tinker server: a stdlib ``ThreadingHTTPServer`` in a daemon thread.

It is an independent oracle for the client's tests, so it uses the standard
library and msgspec only and never imports the client. Every body is
generated on the fly and written in modest chunks; wire faults (resets,
stalls, wrong lengths, trickles) are applied by one writer, ``_Handler._emit``,
so every route gets them for free.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import select
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

__all__ = ["Fault", "MockTinkerServer", "RecordedRequest", "serve"]

WRITE_SIZE = 64 * 1024  # the largest single socket write of a body
ABORT = object()  # a body iterator yields this to reset the connection mid-body
HANG = object()  # ... or this to send nothing more until the client goes away or the server stops


class RecordedRequest(msgspec.Struct, frozen=True):
    """One request as the server saw it. ``headers`` names are lower-cased; ``query`` keeps the last value."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return msgspec.json.decode(self.body)


@dataclasses.dataclass(frozen=True)
class Fault:
    """A wire fault for one response; see ``MockTinkerServer.script``.

    Byte counts are body bytes (payload, not chunked framing).
    """

    reset_after: int | None = None  # close the connection mid-body after this many body bytes
    rst: bool = False  # ... with an RST (SO_LINGER 0; may drop bytes in flight) instead of a FIN
    stall_after: int | None = None  # after this many body bytes, sleep ``stall`` seconds, then continue
    stall: float = 0.0
    status: int | None = None  # answer this status with a JSON error body instead
    retry_after: float | None = None  # ... with this Retry-After (seconds)
    ignore_range: bool = False  # answer 200 with the full body even to a Range request
    change_etag: bool = False  # bump the resource's version first: its ETag changes from now on
    wrong_length: int | None = None  # announce this Content-Length, send the true bytes, then close
    trickle: int | None = None  # write the body in pieces of this many bytes ...
    trickle_delay: float = 0.0  # ... with this delay between them
    delay_headers: float = 0.0  # wait this long before sending the status line

    @classmethod
    def from_query(cls, query: dict[str, str]) -> Fault:
        """The fault given by query parameters (``reset_after=``, ``stall_after=&stall=``, ...)."""

        def num(name: str, kind: type = int) -> Any:
            value = query.get(name)
            return None if value in (None, "") else kind(value)

        return cls(
            reset_after=num("reset_after"),
            rst=query.get("rst") in ("1", "true"),
            stall_after=num("stall_after"),
            stall=num("stall", float) or 0.0,
            ignore_range=query.get("ignore_range") in ("1", "true"),
            change_etag=query.get("change_etag") in ("1", "true"),
            wrong_length=num("wrong_length"),
            trickle=num("trickle"),
            trickle_delay=num("trickle_delay", float) or 0.0,
            delay_headers=num("delay_headers", float) or 0.0,
        )


NO_FAULT = Fault()


class HTTPError(Exception):
    """Raised by a route to answer a JSON error."""

    def __init__(self, status: int, message: str, type: str = "error", headers: Iterable = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.headers = list(headers)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], mock: MockTinkerServer):
        self.mock = mock
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.mock._lock:
            self.mock._connections += 1
            self.mock._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.mock._lock:
            self.mock._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ValueError, OSError)):
            return  # a client that went away, or a socket closed by stop()
        super().handle_error(request, client_address)


class MockTinkerServer:
    """A mock Tinker API server on 127.0.0.1 (ephemeral port by default).

    Use as a context manager (``with MockTinkerServer() as server: server.url``)
    or call ``start()`` / ``stop()``. See the package docstring for the routes.
    """

    def __init__(self, api_key: str = "tml-test-key", *, host: str = "127.0.0.1", port: int = 0):
        self.api_key = api_key
        self.host = host
        self.port = port
        self.signed_url_ttl: float = 15 * 60
        self.signed_checksums: tuple[str, ...] = ()  # e.g. ("md5", "crc32c"): x-goog-hash on signed files
        self.supported_models: list[str] = ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B"]
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections = 0
        self._open: set[Any] = set()
        self._scripts: list[tuple[str, collections.deque[Fault]]] = []
        self._versions: dict[Any, int] = {}
        self._checksums: dict[Any, str] = {}
        self._futures: dict[str, list[Any]] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self.started_at = time.time()
        from . import _checkpoints

        self._registry = _checkpoints.Registry(self)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> MockTinkerServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"mock-tinker-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        self._stopping.set()
        if httpd is not None:
            try:
                httpd.shutdown()
            finally:
                with self._lock:
                    open_sockets = list(self._open)
                for sock in open_sockets:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                httpd.server_close()
                if self._thread is not None:
                    self._thread.join(5)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> MockTinkerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (no trailing slash; API paths start with /api/v1)."""
        return f"http://{self.host}:{self.port}"

    # -- recording ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received since the last ``clear()``, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """The number of TCP connections accepted since the last ``clear()``."""
        with self._lock:
            return self._connections

    def clear(self) -> None:
        """Forget recorded requests and violations, and reset the connection count."""
        with self._lock:
            self._requests.clear()
            self._connections = 0
            del self.violations[:]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # -- faults ------------------------------------------------------------------------------------

    def script(self, path_prefix: str, *faults: Fault) -> None:
        """Queue faults; each is consumed by the next request whose path starts with ``path_prefix``."""
        with self._lock:
            for prefix, queue in self._scripts:
                if prefix == path_prefix:
                    queue.extend(faults)
                    return
            self._scripts.append((path_prefix, collections.deque(faults)))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for prefix, queue in self._scripts:
                if queue and path.startswith(prefix):
                    return queue.popleft()
        return None

    def version(self, key: Any) -> int:
        with self._lock:
            return self._versions.get(key, 1)

    def bump_version(self, key: Any) -> None:
        with self._lock:
            self._versions[key] = self._versions.get(key, 1) + 1

    def _wait(self, seconds: float) -> bool:
        """Sleep, waking early when the server stops. True if it stopped."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    def tmpdir(self) -> str:
        with self._lock:
            if self._tmpdir is None:
                self._tmpdir = tempfile.mkdtemp(prefix="mock-tinker-")
            return self._tmpdir

    # -- checkpoints and futures -------------------------------------------------------------------

    def add_checkpoint(
        self,
        tinker_path: str,
        *,
        size: int,
        seed: int = 0,
        n_files: int = 4,
        compression: str | None = None,
        prepare_seconds: float = 0.0,
        prepare_status: int = 503,
        public: bool = False,
    ) -> dict[str, Any]:
        """Register ``tinker://RUN/KIND/NAME`` (KIND: weights, sampler_weights, external_weights)."""
        return self._registry.add(
            tinker_path,
            size=size,
            seed=seed,
            n_files=n_files,
            compression=compression,
            prepare_seconds=prepare_seconds,
            prepare_status=prepare_status,
            public=public,
        )

    def add_hostile_archive(self, tinker_path: str, kind: str) -> dict[str, Any]:
        """Register a checkpoint whose archive is ``archives.HOSTILE_ARCHIVES[kind]()``."""
        return self._registry.add(tinker_path, size=0, hostile=kind)

    def add_future(self, request_id: str, *results: Any) -> None:
        """Queue answers for ``POST /api/v1/retrieve_future``; the last one repeats."""
        with self._lock:
            self._futures[request_id] = list(results)

    def _next_future(self, request_id: str) -> Any:
        with self._lock:
            queue = self._futures.get(request_id)
            if not queue:
                raise HTTPError(404, f"unknown request_id {request_id!r}", "not_found")
            return queue.pop(0) if len(queue) > 1 else queue[0]


@contextlib.contextmanager
def serve(**kwargs: Any) -> Iterator[MockTinkerServer]:
    """``with serve() as server:`` -- a started ``MockTinkerServer``, stopped on exit."""
    server = MockTinkerServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no delayed-ACK stalls
    server_version = "MockTinker/1.0"
    server: _HTTPServer
    fault: Fault = NO_FAULT
    _aborted = False
    _headers_sent = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- connection end ----------------------------------------------------------------------------

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        if self._aborted:
            if self.fault.rst:
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Closed here, before the server's shutdown_request, which then finds it closed.
            self.connection.close()

    def _abort(self) -> None:
        self._aborted = True
        self.close_connection = True

    # -- request -----------------------------------------------------------------------------------

    @property
    def mock(self) -> MockTinkerServer:
        return self.server.mock

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        mock = self.mock
        self.fault = NO_FAULT
        self._headers_sent = False
        try:
            split = urlsplit(self.path)
            path = split.path
            self.query = dict(parse_qsl(split.query, keep_blank_values=True))
            self.body = self._read_body()
            self.lheaders = {name.lower(): value for name, value in self.headers.items()}
            recorded = RecordedRequest(self.command, path, dict(self.query), dict(self.lheaders), self.body)
            mock._record(recorded)
            fault = mock._take_fault(path)
            if fault is None and (path.startswith("/test/") or path.startswith("/signed/")):
                fault = Fault.from_query(self.query)
            self.fault = fault or NO_FAULT
            if self.fault.delay_headers and mock._wait(self.fault.delay_headers):
                return self._abort()
            try:
                self._route(path)
            except HTTPError as error:
                self.send_error_json(error.status, error.message, error.type, error.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as error:  # a bug in a route: answer 500 if still possible, and say so
            import traceback

            traceback.print_exc()
            if self._headers_sent:
                return self._abort()
            self.fault = NO_FAULT
            self.send_error_json(500, f"mock server error: {error!r}", "mock_server_error")
            self.close_connection = True

    def _route(self, path: str) -> None:
        from . import _files, _sse_routes

        if self.fault.change_etag:
            key = _files.resource_key(self, path)
            if key is not None:
                self.mock.bump_version(key)
        if self.fault.status is not None:
            headers = []
            if self.fault.retry_after is not None:
                headers.append(("Retry-After", _fmt_seconds(self.fault.retry_after)))
            raise HTTPError(self.fault.status, f"injected status {self.fault.status}", "fault", headers)
        if path.startswith("/api/v1/") or path == "/api/v1":
            if self.headers.get("X-API-Key") != self.mock.api_key:
                raise HTTPError(401, "missing or invalid X-API-Key", "authentication_error")
            return self._api(unquote(path[len("/api/v1") :]))
        if path.startswith("/signed/"):
            return self.mock._registry.serve_signed(self, path)
        if path == "/test/sse":
            return _sse_routes.sse(self)
        if path == "/test/sse-raw":
            return _sse_routes.sse_raw(self)
        if path == "/test/echo":
            return self.send_json(
                200,
                {
                    "method": self.command,
                    "path": path,
                    "query": self.query,
                    "headers": self.lheaders,
                    "body": self.body.decode("latin-1"),
                },
                _retry_headers(self.query),
            )
        if path.startswith("/test/status/"):
            code = int(path.rsplit("/", 1)[1])
            return self.send_error_json(code, f"status {code}", None, _retry_headers(self.query))
        if path == "/test/bytes":
            return _files.bytes_route(self)
        raise HTTPError(404, f"no route for {self.command} {path}", "not_found")

    def _api(self, path: str) -> None:
        from . import _sse_routes

        method = self.command
        if path == "/healthz" and method in ("GET", "HEAD"):
            return self.send_json(200, {"status": "ok"})
        if path == "/get_server_capabilities" and method == "GET":
            models = [{"model_name": name} for name in self.mock.supported_models]
            return self.send_json(200, {"supported_models": models})
        if path == "/stream_sample" and method == "POST":
            return _sse_routes.stream_sample(self)
        if path == "/retrieve_future" and method == "POST":
            request = self.json_body()
            return self.send_json(200, self.mock._next_future(str(request.get("request_id"))))
        return self.mock._registry.route(self, method, path)

    def json_body(self) -> dict[str, Any]:
        try:
            value = msgspec.json.decode(self.body) if self.body else {}
        except msgspec.DecodeError as error:
            raise HTTPError(400, f"invalid JSON body: {error}", "invalid_request_error") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "JSON body must be an object", "invalid_request_error")
        return value

    # -- response ----------------------------------------------------------------------------------

    def start_response(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        *,
        length: int | None = None,
        framing: str = "length",
    ) -> str:
        """Send the status line and headers; returns the framing actually used."""
        if self.fault.wrong_length is not None:
            framing, length = "wrong", self.fault.wrong_length
        self._headers_sent = True
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if framing in ("length", "wrong"):
            self.send_header("Content-Length", str(length or 0))
        elif framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        if framing in ("close", "wrong"):
            self.send_header("Connection", "close")
        self.end_headers()
        return framing

    def emit(self, chunks: Iterable[Any], framing: str, *, max_write: int | None = None) -> None:
        """Write a body: each chunk as it comes (one HTTP chunk each when chunked), split into writes
        of at most ``max_write`` bytes, with the request's fault applied. ``ABORT`` / ``HANG`` items
        reset the connection / wait for the client to leave."""
        fault = self.fault
        chunked = framing == "chunked"
        limit = min(x for x in (max_write, fault.trickle, WRITE_SIZE) if x)
        stall_at, reset_at = fault.stall_after, fault.reset_after
        sent = 0
        wrote = False
        write = self.wfile.write
        wait = self.mock._wait
        for chunk in chunks:
            if chunk is ABORT:
                return self._abort()
            if chunk is HANG:
                self._hang()
                return self._abort()
            view = memoryview(chunk)
            pos, total = 0, len(view)
            while pos < total:
                if stall_at is not None and sent >= stall_at:
                    stall_at = None
                    if wait(fault.stall):
                        return self._abort()
                if reset_at is not None and sent >= reset_at:
                    return self._abort()
                n = min(total - pos, limit)
                if stall_at is not None:
                    n = min(n, stall_at - sent)
                if reset_at is not None:
                    n = min(n, reset_at - sent)
                if wrote and fault.trickle and fault.trickle_delay and wait(fault.trickle_delay):
                    return self._abort()
                piece = view[pos : pos + n]
                if chunked:
                    write(b"%x\r\n%s\r\n" % (n, piece))
                else:
                    write(piece)
                wrote = True
                pos += n
                sent += n
        if stall_at is not None and sent >= stall_at and wait(fault.stall):
            return self._abort()
        if reset_at is not None and sent >= reset_at:
            return self._abort()
        if chunked:
            write(b"0\r\n\r\n")
        if framing in ("close", "wrong"):
            self.close_connection = True

    def _hang(self) -> None:
        sock = self.connection
        while not self.mock._stopping.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return  # the client closed its end
            except (OSError, ValueError):
                return
            if readable:
                self.mock._wait(0.05)

    def send_json(self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = msgspec.json.encode(obj)
        all_headers = [("Content-Type", "application/json"), *headers]
        framing = self.start_response(status, all_headers, length=len(body))
        if self.command != "HEAD":
            self.emit([body], framing)
        elif framing == "wrong":
            self.close_connection = True

    def send_error_json(
        self,
        status: int,
        message: str,
        type: str | None = "error",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        error: dict[str, Any] = {"message": message}
        if type is not None:
            error["type"] = type
        self.send_json(status, {"error": error}, headers)

    def send_empty(self, status: int, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.start_response(status, headers, length=0)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _retry_headers(query: dict[str, str]) -> list[tuple[str, str]]:
    headers = []
    for param, header in (
        ("retry_after", "retry-after"),
        ("retry_after_ms", "retry-after-ms"),
        ("should_retry", "x-should-retry"),
    ):
        if param in query:
            headers.append((header, query[param]))
    return headers
