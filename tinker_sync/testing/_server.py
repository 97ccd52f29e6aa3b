"""The loopback mock Tinker server object and the dispatch of each path to its route.

It is an independent oracle for the client's tests, so it uses the standard
library and msgspec only and never imports the client. The server runs a stdlib
``ThreadingHTTPServer`` (``_wire``) on a daemon thread.

Owns: ``MockTinkerServer`` (settings, recording, faults, registration helpers,
the ``ServerState`` the routes see) and ``_route``, which sends each request to
its route module. The route modules sit below it and see only
``_types.Request`` and ``_types.ServerState``.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

import msgspec

from . import _demo, _files, _promises, _sampling, _sse_routes, _training, _wire
from ._checkpoints import OWNER, Registry
from ._futures import Answer, Futures
from ._handshake import Handshake
from ._inspect import Inspect
from ._sessions import ModelRecord, SessionRecord, Sessions
from ._types import Fault, HTTPError, RecordedRequest, Request
from ._validate import method_not_allowed, violation

__all__ = ["Fault", "MockTinkerServer", "ModelRecord", "RecordedRequest", "SessionRecord", "serve"]


class MockTinkerServer:
    """A mock Tinker API server on 127.0.0.1 (ephemeral port by default).

    Use as a context manager (``with MockTinkerServer() as server: server.url``)
    or call ``start()`` / ``stop()``. docs/TESTING.md lists the routes.

    Args:
        api_key: the key ``/api/v1`` requests must send as ``X-API-Key``.
        host: the address to listen on (loopback).
        port: the port to listen on (0 picks a free one).
        demo_data: start with the deterministic demo dataset (listed in docs/TESTING.md).
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
        self.latency: float = 0.0  # seconds before every answer: a far server's round trip
        self.signed_url_ttl: float = 15 * 60
        self.signed_checksums: tuple[str, ...] = ()  # e.g. ("md5", "crc32c"): x-goog-hash on signed files
        self.supported_models: list[str] = ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B"]
        self.archive_mode: str | int = "archive"
        self.future_polls: int = 2
        self.max_page_size: int | None = None
        self.client_config: dict[str, Any] = {"pjwt_auth_enabled": False}  # flags of POST client/config
        self.client_dynamic_config: dict[str, Any] = {}
        self.jwt_lifetime: float = 3600.0
        self.trace_export_polls: int = 1
        self.trace_size: int = 256 * 1024
        self.error_format: str = "error"  # or "detail": FastAPI's {"detail": ...} error bodies
        self.violations: list[str] = []
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections = 0
        self._bytes_sent = 0
        self._answering_now = 0
        self._peak_answering = 0
        self._open: set[_wire.Socket] = set()
        self._scripts: list[tuple[str, collections.deque[Fault]]] = []
        self._versions: dict[Hashable, int] = {}
        self._memo: dict[Hashable, bytes] = {}
        self._stopping = threading.Event()
        self._httpd: _wire.HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self._registry = Registry(self)
        self._futures = Futures(self)
        self._sessions = Sessions(self, self._registry, self._futures)
        self._sampler = _sampling.Sampler(self._registry, self._futures)
        self._handshake = Handshake(self)
        self._inspect = Inspect(self._sessions, self._registry)
        self.promises = _promises.Promises(self)  # training and sampling futures (knobs: see _promises)
        self.training = _training.Training(
            self, self._registry, self._sessions, self._sampler, self.promises, self.add_sampler
        )
        if demo_data:
            _demo.populate(self._registry, self._sessions, self._futures)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> MockTinkerServer:
        """Listen and serve on a daemon thread; returns self. A no-op when already started."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _wire.HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_until_stopped,
            daemon=True,
            name=f"mock-tinker-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wakes every waiting response, closes open connections, removes temp files."""
        httpd, self._httpd = self._httpd, None
        self._stopping.set()
        self.promises.close()
        if httpd is not None:
            httpd.stop_serving()
            if self._thread is not None:
                self._thread.join(5)
            with self._lock:
                open_sockets = list(self._open)
            for sock in open_sockets:
                with contextlib.suppress(OSError, ValueError):
                    if isinstance(sock, socket.socket):
                        sock.shutdown(socket.SHUT_RDWR)
            httpd.server_close()
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

    @property
    def peak_in_flight(self) -> int:
        """The most requests being answered at the same time since the last ``clear()`` (a download
        over N connections shows N here while its responses last)."""
        with self._lock:
            return self._peak_answering

    @property
    def bytes_sent(self) -> int:
        """Body bytes handed to sockets since the last ``clear()`` (what a client made the server move,
        including what it dropped unread). Each piece counts as it is handed over, so the count is never
        below what a client has read (a write that fails counts its piece: at most one per answer)."""
        with self._lock:
            return self._bytes_sent

    def clear(self) -> None:
        """Forget recorded requests and violations, and reset the connection and in-flight counts."""
        with self._lock:
            self._requests.clear()
            self._connections = 0
            self._bytes_sent = 0
            self._peak_answering = self._answering_now
            del self.violations[:]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _answering(self, delta: int) -> None:
        with self._lock:
            self._answering_now += delta
            self._peak_answering = max(self._peak_answering, self._answering_now)

    def _sent(self, n: int) -> None:
        with self._lock:
            self._bytes_sent += n

    def _accepted(self, sock: _wire.Socket) -> None:
        with self._lock:
            self._connections += 1
            self._open.add(sock)

    def _closed(self, sock: _wire.Socket) -> None:
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

    def presign(
        self,
        name: str,
        *,
        size: int,
        seed: int = 0,
        expires_in: int,
        style: str = "s3",
        signed_ago: int = 0,
        extra: dict[str, str] | None = None,
    ) -> str:
        """A presigned URL for ``/test/bytes``'s body (``size``, ``seed``) that expires in ``expires_in``
        whole seconds, written as ``style`` writes it: "s3" (X-Amz-Date + X-Amz-Expires), "gcs"
        (X-Goog-Date + X-Goog-Expires) or "expires" (CloudFront's Expires). The expiry is checked when
        each request starts; ``extra`` adds query parameters (faults, ``checksum``)."""
        return _files.presign(
            self,
            name,
            size=size,
            seed=seed,
            expires_in=expires_in,
            style=style,
            signed_ago=signed_ago,
            extra=extra,
        )

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

    def _route(self, request: Request) -> None:
        _route(self, request)

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
        size_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Register ``tinker://RUN/KIND/NAME`` (KIND: weights, sampler_weights, external_weights)
        and its run if new; returns the checkpoint JSON. Its files are
        ``archives.checkpoint_files(seed, size, n_files)``, served as a tar (``compression``
        None, "gz", "bz2" or "xz") by ``.../archive`` and one by one by ``.../external_weights_urls``.
        ``size_bytes`` is what the listing claims (default: ``size``): a larger one makes a checkpoint
        whose content falls short of its listing."""
        return self._registry.add(
            tinker_path,
            size=size,
            seed=seed,
            n_files=n_files,
            compression=compression,
            prepare_seconds=prepare_seconds,
            prepare_status=prepare_status,
            public=public,
            size_bytes=size_bytes,
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

    def add_api_key(self, key: str) -> None:
        """Accept ``key`` as an API key too (``auth/apikey/me`` DELETE revokes a key)."""
        self._handshake.add_key(key)

    def mint_jwt(self, lifetime: float | None = None) -> str:
        """A JWT as ``auth/token`` answers it, living ``lifetime`` seconds (default ``jwt_lifetime``)."""
        return self._handshake.mint(lifetime)

    def revoke_tokens(self) -> None:
        """Refuse every JWT issued so far: the next request with one is answered 401 invalid_token."""
        self._handshake.revoke_tokens()

    def refuse_jwt(self, count: int = 1) -> None:
        """Answer the next ``count`` requests that carry a JWT 401 invalid_token, live or not (a
        server that rejects a token before its expiry: the client replaces it and replays once)."""
        with self._handshake.lock:
            self._handshake.refusals += count

    @property
    def tokens_issued(self) -> int:
        """How many JWTs ``auth/token`` has issued."""
        with self._handshake.lock:
            return self._handshake.tokens_issued

    @property
    def telemetry(self) -> list[dict[str, Any]]:
        """The telemetry batches received (accepted whatever their shape), oldest first."""
        with self._handshake.lock:
            return list(self._handshake.telemetry)

    def add_sampler(self, sampler_id: str, base_model: str, model_path: str | None = None) -> None:
        """Register a sampler for ``GET samplers/{id}``."""
        with self._inspect.lock:
            self._inspect.samplers[sampler_id] = {
                "sampler_id": sampler_id,
                "base_model": base_model,
                "model_path": model_path,
            }

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


def _resource_key(server: MockTinkerServer, exchange: Request) -> Hashable | None:
    """The version key of the resource at the request's path (for Fault.change_etag), or None."""
    if exchange.path == "/test/bytes" or exchange.path.startswith("/test/presigned/"):
        return _files.bytes_key(exchange.query)
    if exchange.path.startswith("/signed/"):
        return server._registry.signed_key(exchange.path)
    return None


def _route(server: MockTinkerServer, exchange: Request) -> None:
    path = exchange.path
    fault = exchange.fault
    if fault.change_etag:
        key = _resource_key(server, exchange)
        if key is not None:
            server.bump_version(key)
    if fault.status is not None:
        headers = []
        if fault.retry_after is not None:
            headers.append(("Retry-After", _fmt_seconds(fault.retry_after)))
        raise HTTPError(fault.status, f"injected status {fault.status}", "fault", headers)
    if path.startswith("/api/v1/") or path == "/api/v1":
        return _api(server, exchange)
    if path.startswith("/signed/"):
        return server._registry.serve_signed(exchange)
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
    if path.startswith("/test/presigned/"):
        return _files.presigned_route(exchange)
    raise HTTPError(404, f"no route for {exchange.command} {path}", "not_found")


def _api(server: MockTinkerServer, exchange: Request) -> None:
    parts = [p for p in unquote(exchange.path[len("/api/v1") :]).split("/") if p]
    server._handshake.authenticate(exchange, parts)
    content_type = exchange.headers.get("content-type", "")
    if (
        exchange.body
        and "application/json" not in content_type
        and "application/x-protobuf" not in content_type
    ):
        raise violation(400, "a request body needs Content-Type: application/json (or x-protobuf)")
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
        if method == "POST" and server.promises.retrieve_future(exchange):
            return None
        return server._futures.route(exchange)
    if parts == ["stream_sample"]:
        return _sampling.stream_sample(exchange)
    if parts == ["asample"]:
        return server.training.asample(exchange)
    if head in Handshake.ROUTES:
        return server._handshake.route(exchange, parts)
    if Inspect.handles(parts):
        return server._inspect.route(exchange, parts)
    if head in _training.ROUTES:
        return server.training.route(exchange, parts)
    if parts == ["load_weights"] and method == "POST" and server.training.load_weights(exchange):
        return None
    if parts == ["save_weights_external"] and method == "POST":
        server.training.note_seq(exchange)
    if parts == ["checkpoints"] or head == "training_runs":
        return server._registry.route(exchange, parts)
    if head in Sessions.ROUTES:
        return server._sessions.route(exchange, parts)
    raise violation(404, "no such route", "not_found")
