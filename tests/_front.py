"""A hostile front for the mock server: a real loopback HTTP server that answers some routes itself
(a crafted listing, a page that ignores its offset) and relays every other request to the mock.

    with Front(tinker_server.url, {"/api/v1/training_runs/run-7/checkpoints": answer}) as front:
        Client(base_url=front.url, ...)

``answer(query, upstream)`` returns ``(status, body bytes)``; ``upstream(path)`` GETs the mock's
own answer (bytes) for a route, so a test can alter a real listing.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

Answer = Callable[[dict[str, str], Callable[[str], bytes]], tuple[int, bytes]]
CLIENT_CONFIG = "/api/v1/client/config"


def older_server(query: dict[str, str], upstream: Callable[[str], bytes]) -> tuple[int, bytes]:
    """``client/config`` on a server older than the route: 404, so a client takes the default flags.
    For a front with no upstream (``routes={CLIENT_CONFIG: older_server, ...}``)."""
    return 404, b'{"detail": "Not Found"}'


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class Front:
    """A loopback server answering ``routes`` itself (exact paths) and relaying the rest."""

    def __init__(self, upstream: str, routes: dict[str, Answer], api_key: str = "tml-test-key") -> None:
        self.upstream = urlsplit(upstream)
        self.routes = routes
        self.hits: list[str] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # head and body are separate writes: no delayed-ACK stalls

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                parts = urlsplit(self.path)
                answer = front.routes.get(parts.path)
                if answer is not None:
                    front.hits.append(self.path)
                    status, data = answer(dict(parse_qsl(parts.query)), front.get)
                    self.send_response(status)
                    if status >= 500:
                        self.send_header("Retry-After", "0")  # tests of retries need not wait
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                status, headers, data = front.relay(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # shutdown() waits for serve_forever's next poll: a short one keeps each teardown short
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.headers = {"X-API-Key": api_key}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def relay(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def get(self, path: str) -> bytes:
        """The mock's own answer to ``GET path``."""
        _, _, data = self.relay("GET", path, self.headers, None)
        return data

    def __enter__(self) -> Front:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
