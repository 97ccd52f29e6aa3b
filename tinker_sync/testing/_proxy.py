"""A loopback HTTP forward proxy for tests: ``CONNECT`` tunnels and absolute-form forwarding.

stdlib only, like the rest of the mock server, and it reaches loopback
addresses only (127.0.0.0/8, ::1, ``localhost``): anything else is refused
with 403, so a test can never send traffic off the machine through it.

    from tinker_sync.testing import ForwardProxy

    with ForwardProxy(auth=("user", "secret")) as proxy:
        proxy.url           # "http://127.0.0.1:PORT" (no credentials)
        proxy.auth_url      # "http://user:secret@127.0.0.1:PORT" (url when there is no auth)
        proxy.requests      # every request head the proxy read in clear: ProxyRequest(method, target,
                            # headers, body); a CONNECT's target is "host:port"
        proxy.tunnels       # the "host:port" of each tunnel opened
        proxy.seen          # every byte the proxy read in clear (heads and forwarded bodies),
                            # never the bytes inside a tunnel
        proxy.connections   # client connections accepted

Why not a PyPI proxy: ``proxy.py`` (the maintained pure-Python one) works
in-process, but leaks sockets (ResourceWarning, an error under the suite's
``filterwarnings = error``), takes a second to start, and cannot tell a test
what it saw in clear without a plugin; this one is ~200 lines.

Answers: 407 with ``Proxy-Authenticate`` when ``auth`` is set and the request
lacks the right ``Proxy-Authorization: Basic``; 403 for a target off
loopback; 502 when the target refuses the connection (both marked as its own
answers with ``Proxy-Status: tinker-sync-test-proxy; error=...``); ``HTTP/1.1 200
Connection established`` and a byte-for-byte relay for a tunnel. A forwarded
(absolute-form) request is sent on with ``Connection: close`` and its
response relayed until the upstream closes.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

__all__ = ["ForwardProxy", "ProxyRequest"]

_MAX_HEAD = 65536
_RELAY_SIZE = 256 * 1024


@dataclass(frozen=True)
class ProxyRequest:
    """A request head the proxy read: ``CONNECT host:port`` or a forwarded ``GET http://...``."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""


def _own_answer(status: bytes, error: bytes) -> bytes:
    """An answer of the proxy's own, marked as such (RFC 9209's ``Proxy-Status``), as a proxy
    that cannot or will not forward a request gives it."""
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nProxy-Status: tinker-sync-test-proxy; error="
        + error
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_host_port(target: str, default_port: int) -> tuple[str, int]:
    host, _, port = target.rpartition(":") if not target.endswith("]") else (target, "", "")
    if not host or not port.isdigit():
        return target.strip("[]"), default_port
    return host.strip("[]"), int(port)


class ForwardProxy:
    """A threaded HTTP proxy on 127.0.0.1 (ephemeral port), a context manager.

    Args:
        auth: ``(user, password)`` to require as ``Proxy-Authorization: Basic``; None: open.
        host: the address to listen on (loopback).
        port: the port to listen on (0 picks a free one).
    """

    def __init__(
        self, *, auth: tuple[str, str] | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.auth = auth
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._requests: list[ProxyRequest] = []
        self._tunnels: list[str] = []
        self._seen = bytearray()
        self._connections = 0
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tinker-sync-test-proxy", daemon=True)
        self._thread.start()

    # -- what the proxy saw --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, without credentials."""
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        """The URL with the credentials (``http://user:password@HOST:PORT``), or ``url`` without auth."""
        if self.auth is None:
            return self.url
        user, password = (quote(part, safe="") for part in self.auth)
        return f"http://{user}:{password}@{self.host}:{self.port}"

    @property
    def requests(self) -> list[ProxyRequest]:
        """Every request head read in clear (CONNECTs and forwarded requests), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def tunnels(self) -> list[str]:
        """The ``host:port`` of every tunnel opened, oldest first."""
        with self._lock:
            return list(self._tunnels)

    @property
    def seen(self) -> bytes:
        """Every byte read in clear from clients (never a tunnel's): what the proxy could log."""
        with self._lock:
            return bytes(self._seen)

    @property
    def connections(self) -> int:
        """TCP connections accepted."""
        with self._lock:
            return self._connections

    def clear(self) -> None:
        """Forget what was recorded."""
        with self._lock:
            self._requests.clear()
            self._tunnels.clear()
            self._seen.clear()
            self._connections = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting and close every open connection and tunnel."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    # -- serving -------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @contextlib.contextmanager
    def _tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        with self._lock:
            self._open.add(sock)
        try:
            with sock:
                yield sock
        finally:
            with self._lock:
                self._open.discard(sock)

    def _serve(self, conn: socket.socket) -> None:
        with self._tracked(conn), contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a relay: no delayed-ACK stalls
            head, rest = self._read_head(conn)
            if not head:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = b""
            if method != "CONNECT":
                length = int(headers.get("content-length", "0") or 0)
                body = rest
                while len(body) < length:
                    more = conn.recv(65536)
                    if not more:
                        break
                    body += more
                body, rest = body[:length], b""
            with self._lock:
                self._requests.append(ProxyRequest(method, target, headers, body))
                self._seen += head + b"\r\n\r\n" + body
            if not self._authorized(headers):
                conn.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
                )
                return
            if method == "CONNECT":
                self._connect(conn, target, rest)
            else:
                self._forward(conn, method, target, lines[1:], body)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.auth is None:
            return True
        expected = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return headers.get("proxy-authorization", "") == f"Basic {expected}"

    @staticmethod
    def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more or len(data) > _MAX_HEAD:
                return b"", b""
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _upstream(self, conn: socket.socket, host: str, port: int) -> socket.socket | None:
        if not _loopback(host):
            conn.sendall(_own_answer(b"403 Forbidden", b"destination_ip_prohibited"))
            return None
        try:
            upstream = socket.create_connection((host, port), timeout=10)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return upstream
        except OSError:
            conn.sendall(_own_answer(b"502 Bad Gateway", b"connection_refused"))
            return None

    def _connect(self, conn: socket.socket, target: str, early: bytes) -> None:
        host, port = _split_host_port(target, 443)
        upstream = self._upstream(conn, host, port)
        if upstream is None:
            return
        with self._tracked(upstream):
            upstream.settimeout(None)
            with self._lock:
                self._tunnels.append(target)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if early:
                upstream.sendall(early)
            back = threading.Thread(target=self._relay, args=(upstream, conn), daemon=True)
            back.start()
            self._relay(conn, upstream)
            back.join()

    def _forward(self, conn: socket.socket, method: str, target: str, lines: list[str], body: bytes) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        upstream = self._upstream(conn, parts.hostname, parts.port or 80)
        if upstream is None:
            return
        with self._tracked(upstream):
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            kept = [
                line
                for line in lines
                if line
                and line.partition(":")[0].strip().lower()
                not in ("connection", "proxy-authorization", "proxy-connection")
            ]
            head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
            upstream.sendall(head.encode("latin-1") + body)
            upstream.shutdown(socket.SHUT_WR)
            # The answer's head says that this proxy closes the connection after it (it does).
            answer, rest = self._read_head(upstream)
            if not answer:
                return
            lines = [
                line
                for line in answer.decode("latin-1").split("\r\n")
                if line.partition(":")[0].strip().lower() not in ("connection", "keep-alive")
            ]
            conn.sendall("\r\n".join([*lines, "Connection: close", "", ""]).encode("latin-1") + rest)
            self._relay(upstream, conn)

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        """Copy ``source`` to ``sink`` until ``source`` ends, then end ``sink``'s writing side."""
        buffer = bytearray(_RELAY_SIZE)
        view = memoryview(buffer)
        with contextlib.suppress(OSError):
            while n := source.recv_into(buffer):
                sink.sendall(view[:n])
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
