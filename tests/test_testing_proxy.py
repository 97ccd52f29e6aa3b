"""tinker_sync.testing.ForwardProxy over http.client: tunnels, forwarding, auth, and what it records."""

from __future__ import annotations

import base64
import http.client
import socket

import pytest

from tinker_sync.testing import ForwardProxy, MockTinkerServer


@pytest.fixture
def server():
    with MockTinkerServer() as s:
        yield s


def connect(
    proxy: ForwardProxy, target: str, headers: dict[str, str] | None = None
) -> http.client.HTTPConnection:
    host, port = target.rsplit(":", 1)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.set_tunnel(host, int(port), headers=headers)
    return conn


def test_a_tunnel_relays_bytes_both_ways_and_records_only_the_connect(server):
    with ForwardProxy() as proxy:
        conn = connect(proxy, f"127.0.0.1:{server.port}")
        for _ in range(2):  # keep-alive inside the tunnel
            conn.request("GET", "/api/v1/healthz", headers={"X-API-Key": "tml-test-key"})
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b'{"status":"ok"}'
        conn.close()
        assert proxy.tunnels == [f"127.0.0.1:{server.port}"]
        assert [(r.method, r.target) for r in proxy.requests] == [("CONNECT", f"127.0.0.1:{server.port}")]
        assert b"tml-test-key" not in proxy.seen and proxy.connections == 1
    assert len(server.requests) == 2


def test_an_absolute_form_request_is_forwarded_and_seen_in_clear(server):
    with ForwardProxy() as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        url = f"http://127.0.0.1:{server.port}/test/echo?a=1"
        conn.request("POST", url, body=b"hello", headers={"X-API-Key": "tml-test-key"})
        response = conn.getresponse()
        echoed = response.read()
        conn.close()
        assert response.status == 200 and b'"body":"hello"' in echoed
        assert proxy.requests[0].method == "POST" and proxy.requests[0].target == url
        assert proxy.requests[0].body == b"hello"
        assert b"tml-test-key" in proxy.seen  # what a forwarding proxy sees: why the client never forwards
        assert proxy.tunnels == []
    assert server.requests[0].path == "/test/echo" and server.requests[0].query == {"a": "1"}


@pytest.mark.parametrize(
    "credentials, status",
    [(None, 407), (("user", "wrong"), 407), (("user", "p@ss:word"), 200)],
    ids=["missing", "wrong", "right"],
)
def test_basic_auth(credentials, status, server):
    with ForwardProxy(auth=("user", "p@ss:word")) as proxy:
        headers = {}
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            headers["Proxy-Authorization"] = f"Basic {token}"
        conn = connect(proxy, f"127.0.0.1:{server.port}", headers)
        try:
            conn.request("GET", "/test/echo")
            assert conn.getresponse().status == status
        except OSError as exc:
            assert status != 200 and f"{status} Proxy Authentication Required" in str(exc)
        finally:
            conn.close()
        assert proxy.auth_url == f"http://user:p%40ss%3Aword@127.0.0.1:{proxy.port}"
        assert proxy.tunnels == ([f"127.0.0.1:{server.port}"] if status == 200 else [])


@pytest.mark.parametrize(
    "target, answer", [("example.com:443", "403"), ("10.1.2.3:80", "403"), ("127.0.0.1:{dead}", "502")]
)
def test_only_loopback_targets_are_reached(target, answer):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with ForwardProxy() as proxy:
        conn = connect(proxy, target.format(dead=port))
        with pytest.raises(OSError, match=f"Tunnel connection failed: {answer}"):
            conn.request("GET", "/")
        conn.close()
        assert proxy.tunnels == []


def test_stop_closes_open_tunnels_and_clear_forgets(server):
    proxy = ForwardProxy()
    conn = connect(proxy, f"127.0.0.1:{server.port}")
    conn.request("GET", "/api/v1/healthz")
    conn.getresponse().read()
    proxy.clear()
    assert (proxy.requests, proxy.tunnels, proxy.seen, proxy.connections) == ([], [], b"", 0)
    proxy.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", "/api/v1/healthz")
        conn.getresponse()
    conn.close()
