"""A proxy's own answer is not the API's: a forwarding proxy that cannot reach the API (or will not
go there) answers 502, 503 or 403 itself, and the error says "the proxy answered, not the API",
with the header that marks it. Its class stays its status's (a 502 is retried as any 5xx). The
marks: squid's ``X-Squid-Error``, RFC 9209's ``Proxy-Status`` with an ``error`` parameter. A
proxy's ``Via`` or a ``Proxy-Status`` without ``error`` is on forwarded answers too: the API's."""

from __future__ import annotations

import socket
import threading

import pytest

from tests._sockets import raw_server
from tests._squid import Squid
from tinker_sync import APIStatusError, Client
from tinker_sync.testing import ForwardProxy

API_KEY = "tml-test-key"
PROXY = "the proxy answered, not the API"


def _dead_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# (extra headers of a 503, is it the proxy's own answer, the mark quoted)
HEADERS = {
    "X-Squid-Error": ("X-Squid-Error: ERR_CONNECT_FAIL 111\r\n", True, "X-Squid-Error: ERR_CONNECT_FAIL 111"),
    "Proxy-Status error": (
        "Proxy-Status: edge; error=connection_timeout\r\n",
        True,
        "Proxy-Status: edge; error=connection_timeout",
    ),
    "Proxy-Status forwarded": ("Proxy-Status: cdn; fwd-status=503\r\n", False, ""),
    "Via": ("Via: 1.1 proxy (squid/5.7)\r\n", False, ""),
    "none": ("", False, ""),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_the_headers_that_mark_a_proxys_own_answer(case):
    headers, own, mark = HEADERS[case]

    def answer(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        body = b'{"detail": "unavailable"}'
        conn.sendall(
            f"HTTP/1.1 503 Service Unavailable\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    with (
        raw_server(answer) as url,
        Client(api_key=API_KEY, base_url=url, max_retries=0, handshake=False) as c,
    ):
        with pytest.raises(APIStatusError) as info:
            c.get("/api/v1/healthz")
    message = str(info.value)
    assert info.value.status_code == 503 and "unavailable" in message
    assert (f"{PROXY} ({mark})" in message) if own else (PROXY not in message), message


def _dead_target_through(proxy_url: str) -> APIStatusError:
    """The error of a call through ``proxy_url`` to an API whose port refuses connections."""
    with Client(
        api_key=API_KEY, base_url=f"http://127.0.0.1:{_dead_port()}", proxy=proxy_url, max_retries=0
    ) as c:
        with pytest.raises(APIStatusError) as info:
            c.get("/api/v1/healthz")
    return info.value


def test_the_test_proxys_502_for_a_dead_target_is_its_own():
    with ForwardProxy() as proxy:
        error = _dead_target_through(proxy.url)
    assert error.status_code == 502
    assert f"{PROXY} (Proxy-Status: tinker-sync-test-proxy; error=connection_refused)" in str(error)


def test_stock_squid_that_cannot_reach_the_api_is_named():
    """A real squid, its stock configuration: a target that refuses the connection is its own 503."""
    with Squid() as squid:
        error = _dead_target_through(squid.url)
    assert error.status_code in (502, 503), str(error)
    assert f"{PROXY} (X-Squid-Error: ERR_CONNECT_FAIL" in str(error), str(error)


def test_the_apis_own_error_through_a_proxy_is_the_apis(tmp_path):
    """Forwarded by the proxy, the API's 503 stays the API's."""

    def answer(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        body = b'{"detail": "the API is busy"}'
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    with raw_server(answer) as url, ForwardProxy() as proxy:
        with Client(api_key=API_KEY, base_url=url, proxy=proxy.url, max_retries=0, handshake=False) as c:
            with pytest.raises(APIStatusError) as info:
                c.get("/api/v1/healthz")
    assert info.value.status_code == 503 and "the API is busy" in str(info.value)
    assert PROXY not in str(info.value)
