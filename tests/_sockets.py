"""A raw-socket HTTP server for tests that need bytes no well-behaved server sends.

``raw_server(script, ...)`` serves one connection per script, in order: it reads
the request head, then calls ``script(conn, head, stop)`` with the socket, the
head's bytes and an Event set when the test leaves the block (for scripts that
hold a connection open). An exception in a script is raised in the test. It
never answers a handshake (``POST client/config``): it fails the test, which must
build its client with ``handshake=False``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Script = Callable[[socket.socket, bytes, threading.Event], None]
HANDSHAKE = b"POST /api/v1/client/config "
# Its scripts answer the calls a test makes, nothing else: a client's handshake would take one.
NO_HANDSHAKE = "raw_server does not speak client/config: build the client with handshake=False"


def read_head(conn: socket.socket) -> bytes:
    """The request head (through the blank line); b"" if the client left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return b""
        data += more
    return data


@contextmanager
def raw_server(*scripts: Script, tls: object = None) -> Iterator[str]:
    """Serve one connection per script; yields the base URL (``http://127.0.0.1:PORT``).

    With ``tls`` (an ``ssl.SSLContext`` with a server certificate) the URL is https.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for script in scripts:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stalls
                if tls is not None:
                    try:
                        conn = tls.wrap_socket(conn, server_side=True)  # type: ignore[attr-defined]
                    except OSError:
                        conn.close()
                        continue  # the client refused the certificate
                with conn:
                    head = read_head(conn)
                    if head.startswith(HANDSHAKE):
                        errors.append(AssertionError(NO_HANDSHAKE))
                        listener.close()  # the client's next try is refused at once, no wait
                        return
                    if head:
                        try:
                            script(conn, head, stop)
                        except OSError:
                            pass  # the client went away
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            if not stop.is_set():
                errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() waiting for a script left unused
        listener.close()
        thread.join(10)
        if errors:
            raise errors[0]


class RecordingServer:
    """A keep-alive HTTP server on ``host`` that records every request head and answers 200 ``ok``,
    or 302 to ``redirects[path]``. For tests of where requests (and their headers) go."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((host, 0))
        self.url = f"http://{host}:{self.listener.getsockname()[1]}"
        self.heads: list[bytes] = []
        self.redirects: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            try:
                while head := read_head(conn):
                    self.heads.append(head)
                    path = head.split(b" ", 2)[1].decode("latin-1")
                    if path in self.redirects:
                        location = self.redirects[path].encode("utf-8", "surrogateescape")
                        conn.sendall(
                            b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
                        )
                    else:
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
                        )
            except OSError:
                pass

    def api_keys(self) -> list[bool]:
        """For each recorded request: whether it carried an X-API-Key."""
        return [b"\r\nx-api-key:" in head.lower() for head in self.heads]
