"""An error names the phase the request was in: connecting, the TLS handshake, waiting for the
response head once the request was sent, or reading the body. A read timeout before the head
arrived said "while connecting" (urllib3 reports a slow handshake and a silent server alike as a
read timeout). Over plain HTTP and TLS, raw sockets on loopback, no retries."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from tests._sockets import raw_server
from tinker_sync import APIConnectionError, APITimeoutError, Client, Timeout


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _silent(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
    stop.wait(60)  # the request was read: no answer while the test runs


def _closes(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
    """The request was read; the connection is closed without a byte of answer."""


def _head_then_silent(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{")
    stop.wait(60)


# (server script, timeout, the error, what its message says)
CASES: dict[str, tuple[Callable[..., None], Timeout, type[Exception], str]] = {
    "no answer": (
        _silent,
        Timeout(5, 0.3),
        APITimeoutError,
        "Request timed out while waiting for the response head",
    ),
    "closed before the head": (
        _closes,
        Timeout(5, 5),
        APIConnectionError,
        "Connection broken while waiting for the response head",
    ),
    "deadline before the head": (
        _silent,
        Timeout(5, 5, total=0.3),
        APITimeoutError,
        "Request timed out while waiting for the response head: the total deadline passed",
    ),
    "no body": (
        _head_then_silent,
        Timeout(5, 0.3),
        APITimeoutError,
        "Request timed out while reading the body",
    ),
}


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_an_error_names_the_phase_it_stopped_in(case, scheme, ca, tmp_path):
    script, timeout, error, message = CASES[case]
    tls: Any = None
    options: dict[str, Any] = {}
    if scheme == "https":
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        options["verify"] = str(ca_file)
    with raw_server(script, tls=tls) as url:
        with Client(
            api_key="tml-test-key", base_url=url, max_retries=0, handshake=False, timeout=timeout, **options
        ) as client:
            with pytest.raises(error) as caught:
                client.get("/api/v1/healthz", cast_to=dict)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "while connecting" not in str(caught.value)


@pytest.mark.parametrize(
    "timeout", [Timeout(0.3, 30), Timeout(0.3, 30, total=20)], ids=["connect", "with a deadline"]
)
def test_a_server_that_never_answers_the_handshake_is_a_handshake_timeout(timeout, ca, tmp_path):
    """TCP accepted, the ClientHello never answered: the connect timeout, named as the handshake."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with raw_server(_silent) as url:  # speaks no TLS: it waits for an HTTP head that never comes
        https = url.replace("http://", "https://")
        with Client(
            api_key="tml-test-key",
            base_url=https,
            max_retries=0,
            handshake=False,
            timeout=timeout,
            verify=str(ca_file),
        ) as client:
            with pytest.raises(APITimeoutError) as caught:
                client.get("/api/v1/healthz", cast_to=dict)
    assert str(caught.value).startswith("Request timed out during the TLS handshake"), str(caught.value)


def test_a_refused_connection_still_says_connecting():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now: refused at once
    with Client(
        api_key="tml-test-key", base_url=f"http://127.0.0.1:{port}", max_retries=0, handshake=False
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            client.get("/api/v1/healthz", cast_to=dict)
    assert "while connecting" in str(caught.value), str(caught.value)
