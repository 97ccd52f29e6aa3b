"""The mock server's transport options: HTTPS (certificates from trustme) and per-connection rate caps.

Checked with the standard library only (http.client, urllib.request, socket).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
import trustme

from tinker_sync.testing import Fault, MockTinkerServer, _data

API_KEY = "tml-test-key"
MiB = 1 << 20


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with MockTinkerServer(api_key=API_KEY, ssl_context=context) as server:
        yield server


@pytest.fixture
def client_context(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def https(server: MockTinkerServer, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=context)


# -- TLS ----------------------------------------------------------------------------------------------


def test_https_api_and_signed_urls(tls_server, client_context):
    assert tls_server.url == f"https://127.0.0.1:{tls_server.port}"
    request = urllib.request.Request(tls_server.url + "/api/v1/healthz", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, context=client_context, timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    tls_server.add_checkpoint("tinker://r/external_weights/e", size=100_000, seed=3, n_files=2)
    conn = https(tls_server, client_context)
    conn.request(
        "GET",
        "/api/v1/training_runs/r/checkpoints/external_weights/e/external_weights_urls",
        headers={"X-API-Key": API_KEY},
    )
    urls = json.loads(conn.getresponse().read())["urls"]
    conn.close()
    for url in urls.values():
        assert url.startswith(tls_server.url + "/signed/")
        with urllib.request.urlopen(url, context=client_context, timeout=5) as response:
            assert response.status == 200 and len(response.read()) == int(response.headers["Content-Length"])
    assert tls_server.violations == []


@pytest.mark.parametrize(
    "range_header,start,end",
    [
        (None, 0, 9 * MiB + 7),
        ("bytes=5000000-", 5_000_000, 9 * MiB + 7),
        ("bytes=-1000", 9 * MiB - 993, 9 * MiB + 7),
    ],
)
def test_https_large_download_with_range(tls_server, client_context, range_header, start, end):
    size = 9 * MiB + 7
    conn = https(tls_server, client_context)
    conn.request(
        "GET", f"/test/bytes?size={size}&seed=4", headers={"Range": range_header} if range_header else {}
    )
    response = conn.getresponse()
    digest = hashlib.sha256()
    while chunk := response.read(256 * 1024):
        digest.update(chunk)
    conn.close()
    assert response.status == (206 if range_header else 200)
    expected = hashlib.sha256(b"".join(_data.generate(4, size, start, end))).hexdigest()
    assert digest.hexdigest() == expected


def test_https_faults_and_keep_alive(tls_server, client_context):
    conn = https(tls_server, client_context)
    for _ in range(3):
        conn.request("GET", "/test/bytes?size=1000")
        assert len(conn.getresponse().read()) == 1000
    conn.request("GET", "/test/bytes?size=100000&reset_after=5000")
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()
    assert tls_server.connections == 1


def test_plain_http_to_the_tls_port_fails_and_the_server_goes_on(tls_server, client_context):
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP/1.1 200")
    conn = https(tls_server, client_context)
    conn.request("GET", "/api/v1/healthz", headers={"X-API-Key": API_KEY})
    assert conn.getresponse().status == 200
    conn.close()


def test_tls_hang_ends_when_the_server_stops(ca, client_context):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = MockTinkerServer(ssl_context=context).start()
    conn = https(server, client_context)
    conn.request("GET", "/test/sse?count=1&hang=1")
    response = conn.getresponse()
    assert response.read(5) == b"data:"
    threading.Timer(0.1, server.stop).start()
    started = time.monotonic()
    with pytest.raises((http.client.IncompleteRead, OSError, ssl.SSLError)):
        response.read()
    conn.close()
    assert time.monotonic() - started < 5


# -- rate caps --------------------------------------------------------------------------------------------


def timed_download(server: MockTinkerServer, path: str) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    started = time.monotonic()
    conn.request("GET", path)
    n = len(conn.getresponse().read())
    conn.close()
    return time.monotonic() - started, n


@pytest.mark.parametrize("how", ["query", "script"])
def test_fault_rate_caps_one_response(how):
    with MockTinkerServer() as server:
        path = "/test/bytes?size=200000"
        if how == "query":
            path += "&rate=1000000"
        else:
            server.script("/test/bytes", Fault(rate=1_000_000))
        elapsed, n = timed_download(server, path)
        assert n == 200_000
        assert 0.13 < elapsed < 1.0  # 0.2 s at 1 MB/s, less the first 50 ms burst
        # the next response is not capped: 1 MB that would take 1 s at that rate
        elapsed, _ = timed_download(server, "/test/bytes?size=1000000")
        assert elapsed < 0.5


def test_server_rate_limit_applies_per_connection():
    """Every connection is capped on its own bucket: one alone, and each of several at once, takes at
    least its bytes over the rate (less the ~50 ms burst). Only lower bounds, which load cannot break
    (it only makes downloads slower); how N capped connections add up to about N times one, a matter
    of elapsed time that a loaded machine distorts, is measured by ``bench/rate_caps.py``."""
    rate, size, parallel = 2 * MiB, 512 * 1024, 4
    with MockTinkerServer(rate_limit=rate) as server:
        one, n = timed_download(server, f"/test/bytes?size={size}")
        results: list[tuple[float, int]] = []

        def worker() -> None:
            results.append(timed_download(server, f"/test/bytes?size={size}"))

        threads = [threading.Thread(target=worker) for _ in range(parallel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.connections == 1 + parallel
    assert n == size and one > 0.15  # 0.25 s at 2 MiB/s, less the burst
    assert [count for _, count in results] == [size] * parallel
    assert min(elapsed for elapsed, _ in results) > 0.15  # each connection capped, none sped past it


def test_rate_limit_lasts_across_keep_alive_requests():
    with MockTinkerServer(rate_limit=1_000_000) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        started = time.monotonic()
        for _ in range(4):
            conn.request("GET", "/test/bytes?size=50000")
            assert len(conn.getresponse().read()) == 50_000
        elapsed = time.monotonic() - started
        conn.close()
        assert server.connections == 1
    assert 0.13 < elapsed < 1.0  # 200 kB at 1 MB/s on one bucket


def test_a_rate_capped_response_ends_when_the_server_stops():
    server = MockTinkerServer(rate_limit=1000).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/test/bytes?size=1000000")
    response = conn.getresponse()
    threading.Timer(0.1, server.stop).start()
    started = time.monotonic()
    with pytest.raises((http.client.IncompleteRead, OSError)):
        response.read()
    conn.close()
    assert time.monotonic() - started < 2


def test_signed_downloads_take_rate_from_the_query():
    with MockTinkerServer() as server:
        server.add_checkpoint("tinker://r/weights/w", size=150_000)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request(
            "GET", "/api/v1/training_runs/r/checkpoints/weights/w/archive", headers={"X-API-Key": API_KEY}
        )
        location = urlsplit(conn.getresponse().getheader("Location"))
        conn.close()
        elapsed, n = timed_download(server, f"{location.path}?{location.query}&rate=1000000")
        assert n > 150_000 and 0.1 < elapsed < 1.0
        assert server.violations == []
