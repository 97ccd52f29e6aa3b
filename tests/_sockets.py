"""A raw-socket HTTP server for tests that need bytes no well-behaved server sends.

``raw_server(script, ...)`` serves one connection per script, in order: it reads
the request head, then calls ``script(conn, head, stop)`` with the socket, the
head's bytes and an Event set when the test leaves the block (for scripts that
hold a connection open). An exception in a script is raised in the test.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Script = Callable[[socket.socket, bytes, threading.Event], None]


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
                if tls is not None:
                    try:
                        conn = tls.wrap_socket(conn, server_side=True)  # type: ignore[attr-defined]
                    except OSError:
                        conn.close()
                        continue  # the client refused the certificate
                with conn:
                    head = read_head(conn)
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
        listener.close()
        thread.join(10)
        if errors:
            raise errors[0]
