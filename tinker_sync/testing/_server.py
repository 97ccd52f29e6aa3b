"""The loopback mock Tinker server: a stdlib ``ThreadingHTTPServer`` in a daemon thread.

It is an independent oracle for the client's tests, so it uses the standard
library and msgspec only and never imports the client. Every body is
generated on the fly and written in modest chunks; wire faults (resets,
stalls, wrong lengths, trickles, rate caps) are applied by one writer,
``_Exchange.emit``, so every route gets them for free.

Owns: the server object (settings, recording, faults, registration helpers),
the request handler, and the dispatch of each path to its route module. The
route modules sit below it and see only ``_types.Request`` and
``_types.ServerState``.
"""

from __future__ import annotations

import collections
import contextlib
import select
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

from . import _demo, _files, _sampling, _sse_routes
from ._checkpoints import OWNER, Registry
from ._futures import Answer, Futures
from ._sessions import ModelRecord, SessionRecord, Sessions
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
)
from ._validate import method_not_allowed, violation

__all__ = ["Fault", "MockTinkerServer", "ModelRecord", "RecordedRequest", "SessionRecord", "serve"]


_Socket = socket.socket | tuple[bytes, socket.socket]  # what socketserver calls a request


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], mock: MockTinkerServer) -> None:
        self.mock = mock
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        context = self.mock.ssl_context
        if context is not None:  # the handshake runs on the connection's own thread (_Handler.setup)
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: _Socket, client_address: Any) -> None:
        self.mock._accepted(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: _Socket) -> None:
        self.mock._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: _Socket, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ValueError, OSError)):
            return  # a client that went away, a failed TLS handshake, or a socket closed by stop()
        super().handle_error(request, client_address)


class MockTinkerServer:
    """A mock Tinker API server on 127.0.0.1 (ephemeral port by default).

    Use as a context manager (``with MockTinkerServer() as server: server.url``)
    or call ``start()`` / ``stop()``. See the package docstring for the routes.

    Args:
        api_key: the key ``/api/v1`` requests must send as ``X-API-Key``.
        host, port: where to listen (port 0 picks a free one).
        demo_data: start with the deterministic demo dataset (see the package docstring).
        ssl_context: serve HTTPS with this server-side context (a certificate loaded).
        rate_limit: cap every connection's body bytes at this many per second.
    """

    def __init__(
        self,
        api_key: str = "tml-test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        demo_data: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        rate_limit: float | None = None,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.rate_limit = rate_limit
        self.signed_url_ttl: float = 15 * 60
        self.signed_checksums: tuple[str, ...] = ()  # e.g. ("md5", "crc32c"): x-goog-hash on signed files
        self.supported_models: list[str] = ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B"]
        self.archive_mode: str | int = "archive"
        self.future_polls: int = 2
        self.violations: list[str] = []
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections = 0
        self._open: set[_Socket] = set()
        self._scripts: list[tuple[str, collections.deque[Fault]]] = []
        self._versions: dict[Hashable, int] = {}
        self._memo: dict[Hashable, bytes] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self._registry = Registry(self)
        self._futures = Futures(self)
        self._sessions = Sessions(self, self._registry, self._futures)
        self._sampler = _sampling.Sampler(self._registry, self._futures)
        if demo_data:
            _demo.populate(self._registry, self._sessions, self._futures)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> MockTinkerServer:
        """Listen and serve on a daemon thread; returns self. A no-op when already started."""
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
        """Stop serving: wakes every waiting response, closes open connections, removes temp files."""
        httpd, self._httpd = self._httpd, None
        self._stopping.set()
        if httpd is not None:
            try:
                httpd.shutdown()
            finally:
                with self._lock:
                    open_sockets = list(self._open)
                for sock in open_sockets:
                    with contextlib.suppress(OSError, ValueError):
                        if isinstance(sock, socket.socket):
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
        """The base URL, ``http://127.0.0.1:PORT`` (``https://`` with an ssl_context; no trailing
        slash; API paths start with /api/v1)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

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

    def _accepted(self, sock: _Socket) -> None:
        with self._lock:
            self._connections += 1
            self._open.add(sock)

    def _closed(self, sock: _Socket) -> None:
        with self._lock:
            self._open.discard(sock)

    @property
    def sessions(self) -> list[SessionRecord]:
        """A snapshot of every session (created by requests, ``add_session`` or the demo data)."""
        with self._sessions.lock:
            return [
                msgspec.convert(msgspec.to_builtins(s), SessionRecord)
                for s in self._sessions.sessions.values()
            ]

    @property
    def models(self) -> list[ModelRecord]:
        """A snapshot of every model created by create_model or load_weights."""
        with self._sessions.lock:
            return [
                msgspec.convert(msgspec.to_builtins(m), ModelRecord) for m in self._sessions.models.values()
            ]

    @property
    def deleted_checkpoints(self) -> list[str]:
        """The tinker paths deleted by ``DELETE .../checkpoints/KIND/NAME``, oldest first."""
        with self._registry.lock:
            return list(self._registry.deleted)

    def checkpoint(self, tinker_path: str) -> dict[str, Any] | None:
        """The Checkpoint JSON of ``tinker_path`` as the API lists it, or None if there is none."""
        checkpoint = self._registry.find(tinker_path)
        return None if checkpoint is None else checkpoint.to_json()

    # -- ServerState: what the routes use ----------------------------------------------------------

    def add_violation(self, message: str) -> None:
        """Record a client mistake (the routes call this for every violation they answer)."""
        with self._lock:
            self.violations.append(message)

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early when the server stops. True if it stopped."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    def version(self, key: Hashable) -> int:
        """The version of a byte resource (1 until bumped); part of its ETag."""
        with self._lock:
            return self._versions.get(key, 1)

    def bump_version(self, key: Hashable) -> None:
        """Change a resource's version, so its ETag and Last-Modified change."""
        with self._lock:
            self._versions[key] = self._versions.get(key, 1) + 1

    def tmpdir(self) -> str:
        """A directory for prepared archives, removed by ``stop()``."""
        with self._lock:
            if self._tmpdir is None:
                self._tmpdir = tempfile.mkdtemp(prefix="mock-tinker-")
            return self._tmpdir

    def memo(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        """``compute()`` once per key (checksums of large bodies)."""
        with self._lock:
            cached = self._memo.get(key)
        if cached is None:
            cached = compute()
            with self._lock:
                self._memo[key] = cached
        return cached

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

    # -- registration ------------------------------------------------------------------------------

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
        """Register ``tinker://RUN/KIND/NAME`` (KIND: weights, sampler_weights, external_weights)
        and its run if new; returns the checkpoint JSON. Its files are
        ``archives.checkpoint_files(seed, size, n_files)``, served as a tar (``compression``
        None, "gz", "bz2" or "xz") by ``.../archive`` and one by one by ``.../external_weights_urls``."""
        return self._registry.add(
            tinker_path,
            size=size,
            seed=seed,
            n_files=n_files,
            compression=compression,
            prepare_seconds=prepare_seconds,
            prepare_status=prepare_status,
            public=public,
        ).to_json()

    def add_hostile_archive(self, tinker_path: str, kind: str) -> dict[str, Any]:
        """Register a checkpoint whose archive is ``archives.HOSTILE_ARCHIVES[kind]()``."""
        return self._registry.add(tinker_path, size=0, hostile=kind).to_json()

    def add_run(
        self,
        run_id: str,
        *,
        base_model: str | None = None,
        owner: str = OWNER,
        is_lora: bool = True,
        lora_rank: int | None = 32,
        corrupted: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Register (or update) a training run; returns its TrainingRun JSON. A run whose ``owner``
        is not ``"mock-user"`` is listed only with ``access_scope=accessible``."""
        self._registry.add_run(
            run_id,
            base_model=base_model or self._registry.default_base_model(),
            model_owner=owner,
            is_lora=is_lora,
            lora_rank=lora_rank,
            corrupted=corrupted,
            user_metadata=user_metadata,
        )
        with self._registry.lock:
            return self._registry.run_json(run_id)

    def add_session(
        self,
        session_id: str | None = None,
        *,
        training_run_ids: Iterable[str] = (),
        sampler_ids: Iterable[str] = (),
        tags: Iterable[str] = (),
        user_metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
        owner: str = OWNER,
    ) -> SessionRecord:
        """Register a session (a new ``session-NNN`` id when None); returns a snapshot of it."""
        record = self._sessions.add_session(
            session_id,
            training_run_ids=list(training_run_ids),
            sampler_ids=list(sampler_ids),
            tags=list(tags),
            user_metadata=user_metadata,
            display_name=display_name,
            owner=owner,
        )
        return msgspec.convert(msgspec.to_builtins(record), SessionRecord)

    def add_future(self, request_id: str, *results: Answer) -> None:
        """Queue answers for ``POST /api/v1/retrieve_future`` of ``request_id``; the last one repeats.

        An answer is a dict (answered 200: a result, ``{"type": "try_again", "queue_state": ...}`` or
        ``{"error": ..., "category": ...}``) or a ``Fault(status=...)``: 408 answers a try_again body,
        any other status the JSON error (with ``Retry-After`` from ``retry_after``).
        """
        self._futures.add(request_id, *results)

    def script_future(self, kind: str, *answers: Answer) -> None:
        """Queue the answers of the next future the server creates for ``kind`` (create_model,
        load_weights, save_weights_external, unload_model or sample), given before its result and
        instead of the ``future_polls`` try_again answers; a ``{"error", "category"}`` answer ends it
        (it repeats, and the operation has no effect). Answers as in ``add_future``."""
        self._futures.script(kind, *answers)


@contextlib.contextmanager
def serve(**kwargs: Any) -> Iterator[MockTinkerServer]:
    """``with serve() as server:`` -- a started ``MockTinkerServer``, stopped on exit."""
    server = MockTinkerServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
    server: _HTTPServer
    fault: Fault = NO_FAULT
    bucket: _Bucket | None = None  # the connection's rate cap (MockTinkerServer.rate_limit)
    aborted = False

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
    def mock(self) -> MockTinkerServer:
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
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
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
        exchange: _Exchange | None = None
        try:
            split = urlsplit(self.path)
            path = split.path
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            body = self._read_body()
            headers = {name.lower(): value for name, value in self.headers.items()}
            mock._record(RecordedRequest(self.command, path, dict(query), dict(headers), body))
            exchange = _Exchange(self, path, query, body, headers)
            try:
                fault = mock._take_fault(path)
                if fault is None and (path.startswith("/test/") or path.startswith("/signed/")):
                    fault = Fault.from_query(query)
                self.fault = exchange.fault = fault or NO_FAULT
                if self.fault.delay_headers and mock.wait(self.fault.delay_headers):
                    return self.abort()
                _route(exchange)
            except HTTPError as error:
                if error.violation:
                    mock.add_violation(f"{self.command} {path}: {error.message}")
                exchange.send_error_json(error.status, error.message, error.type, error.headers)
        except (ConnectionError, TimeoutError):
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
    def state(self) -> MockTinkerServer:
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
        if framing in ("close", "wrong"):
            handler.send_header("Connection", "close")
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
        body = msgspec.json.encode(obj)
        framing = self.start_response(
            status, [("Content-Type", "application/json"), *headers], length=len(body)
        )
        self.emit([body], framing)

    def send_error_json(
        self, status: int, message: str, type: str | None = "error", headers: Headers = ()
    ) -> None:
        error: dict[str, Any] = {"message": message}
        if type is not None:
            error["type"] = type
        self.send_json(status, {"error": error}, headers)

    def send_empty(self, status: int, headers: Headers = ()) -> None:
        self.start_response(status, headers, length=0)


# -- dispatch ---------------------------------------------------------------------------------------


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


def _resource_key(exchange: _Exchange) -> Hashable | None:
    """The version key of the resource at the request's path (for Fault.change_etag), or None."""
    if exchange.path == "/test/bytes":
        return _files.bytes_key(exchange.query)
    if exchange.path.startswith("/signed/"):
        return exchange.state._registry.signed_key(exchange.path)
    return None


def _route(exchange: _Exchange) -> None:
    path = exchange.path
    fault = exchange.fault
    if fault.change_etag:
        key = _resource_key(exchange)
        if key is not None:
            exchange.state.bump_version(key)
    if fault.status is not None:
        headers = []
        if fault.retry_after is not None:
            headers.append(("Retry-After", _fmt_seconds(fault.retry_after)))
        raise HTTPError(fault.status, f"injected status {fault.status}", "fault", headers)
    if path.startswith("/api/v1/") or path == "/api/v1":
        return _api(exchange)
    if path.startswith("/signed/"):
        return exchange.state._registry.serve_signed(exchange)
    if path == "/test/sse":
        return _sse_routes.sse(exchange)
    if path == "/test/sse-raw":
        return _sse_routes.sse_raw(exchange)
    if path == "/test/echo":
        return exchange.send_json(
            200,
            {
                "method": exchange.command,
                "path": path,
                "query": exchange.query,
                "headers": exchange.headers,
                "body": exchange.body.decode("latin-1"),
            },
            _retry_headers(exchange.query),
        )
    if path.startswith("/test/status/"):
        code = int(path.rsplit("/", 1)[1])
        return exchange.send_error_json(code, f"status {code}", None, _retry_headers(exchange.query))
    if path == "/test/bytes":
        return _files.bytes_route(exchange)
    raise HTTPError(404, f"no route for {exchange.command} {path}", "not_found")


def _api(exchange: _Exchange) -> None:
    server = exchange.state
    key = exchange.headers.get("x-api-key")
    if key is None:
        raise HTTPError(401, "missing X-API-Key", "authentication_error", violation=True)
    if key != server.api_key:
        raise HTTPError(401, "invalid X-API-Key", "authentication_error")
    if exchange.body and "application/json" not in exchange.headers.get("content-type", ""):
        raise violation(400, "a request body needs Content-Type: application/json")
    parts = [p for p in unquote(exchange.path[len("/api/v1") :]).split("/") if p]
    method = exchange.command
    head = parts[0] if parts else ""
    if parts == ["healthz"]:
        if method not in ("GET", "HEAD"):
            raise method_not_allowed(exchange, ["GET", "HEAD"])
        return exchange.send_json(200, {"status": "ok"})
    if parts == ["get_server_capabilities"]:
        if method != "GET":
            raise method_not_allowed(exchange, ["GET"])
        models = [
            {"model_name": name, "max_context_length": 32768, "trainable": True, "sampleable": True}
            for name in server.supported_models
        ]
        return exchange.send_json(200, {"supported_models": models})
    if parts == ["retrieve_future"]:
        return server._futures.route(exchange)
    if parts == ["stream_sample"]:
        return _sampling.stream_sample(exchange)
    if parts == ["asample"]:
        return server._sampler.route(exchange)
    if parts == ["checkpoints"] or head == "training_runs":
        return server._registry.route(exchange, parts)
    if head in Sessions.ROUTES:
        return server._sessions.route(exchange, parts)
    raise violation(404, "no such route", "not_found")
