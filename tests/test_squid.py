"""Through a REAL proxy with its STOCK rules: Debian's squid, from its own /etc/squid/squid.conf.

A stock squid tunnels (``CONNECT``) to port 443 only, and forwards plain ``http://`` in absolute form
to any safe port: the client must send ``http://`` URLs in absolute form (as curl, requests and httpx
do) and tunnel ``https://``; ``proxy_tunnel=True`` / ``--proxytunnel`` tunnel ``http://`` too, which
a stock squid allows to port 443 only. Servers that squid must tunnel to listen on port 443 of a
loopback address of their own (``port_443_address``). Under ``CI`` a missing squid fails these tests
(``.ci/run`` installs it); locally they skip, saying so.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from _downloads import file_sha
from _helpers import run_cli
from _squid import Squid, port_443_address

from tinker_sync import APIConnectionError, Client
from tinker_sync.testing import Fault, MockTinkerServer
from tinker_sync.testing._data import sha256_of

API_KEY = "tml-test-key"
MiB = 1 << 20


@pytest.fixture(scope="module")
def squid() -> Iterator[Squid]:
    with Squid() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def http_server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as server:
        yield server


def tls_context(ca: trustme.CA, host: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(context)
    return context


@pytest.fixture
def server_443(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[MockTinkerServer]:
    """A mock server on port 443 of a loopback address of its own; TLS when parametrized "https"."""
    host = port_443_address()
    context = tls_context(ca, host) if getattr(request, "param", "https") == "https" else None
    with MockTinkerServer(host=host, port=443, ssl_context=context) as server:
        yield server


def new_entries(squid: Squid, before: int, count: int) -> list[tuple[str, str, str]]:
    """The access log's entries after the first ``before``, once there are ``count`` of them."""
    return Squid.entries(squid.wait_for_log(before + count)[before:])


def exercise(client: Client, tmp_path: Path) -> None:
    """A JSON call, a stream of events, a streamed body, a byte range, a download."""
    assert client.get("/api/v1/healthz") == {"status": "ok"}
    assert [e.json()["index"] for e in client.stream_get("/test/sse?count=5")] == [0, 1, 2, 3, 4]
    with client.stream("GET", "/test/bytes?size=4096&seed=1") as response:
        assert len(response.read()) == 4096
    with client.stream("GET", "/test/bytes?size=4096&seed=1", headers={"Range": "bytes=100-199"}) as response:
        assert response.status_code == 206 and len(response.read()) == 100
    size = 3 * MiB + 17
    client.download(f"/test/bytes?size={size}&seed=2&checksum=md5", tmp_path / "file.bin")
    assert file_sha(tmp_path / "file.bin") == sha256_of(2, size)


# -- http:// in absolute form, https:// through CONNECT ----------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_http_goes_through_stock_squid_in_absolute_form(how, squid, http_server, tmp_path, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if how != "argument":
        monkeypatch.setenv(how, squid.url)
    before = len(squid.log())
    with Client(
        api_key=API_KEY, base_url=http_server.url, proxy=squid.url if how == "argument" else None
    ) as c:
        exercise(c, tmp_path)
    sent = len(http_server.requests)
    entries = new_entries(squid, before, sent)
    origin = f"http://127.0.0.1:{http_server.port}/"
    handshake = ("POST", origin + "api/v1/client/config")  # the client's handshake, once, first
    assert len(entries) >= sent and all(
        (method == "GET" or (method, url) == handshake) and url.startswith(origin)
        for _, method, url in entries
    )
    assert [(method, url) for _, method, url in entries if method != "GET"] == [handshake]
    # (squid may answer from its cache, or revalidate: the result code before the "/" says which)
    assert sorted(status.split("/")[1] for status, _, _ in entries)[-2:] == ["200", "206"]
    assert {status.split("/")[1] for status, _, _ in entries} == {"200", "206"}
    # Every request reached the server through squid (its Via), the API key with it: that is http://.
    assert len(http_server.requests) == sent
    assert all("squid" in r.headers.get("via", "") for r in http_server.requests)
    assert http_server.requests[0].headers["x-api-key"] == API_KEY


@pytest.mark.parametrize("proxy_tunnel", [False, True], ids=["default", "proxy_tunnel"])
def test_https_tunnels_through_stock_squid(proxy_tunnel, squid, server_443, ca_file, tmp_path):
    before = len(squid.log())
    with Client(
        api_key=API_KEY, base_url=server_443.url, verify=ca_file, proxy=squid.url, proxy_tunnel=proxy_tunnel
    ) as c:
        exercise(c, tmp_path)
        tunnels = server_443.connections
    entries = new_entries(squid, before, tunnels)
    assert entries and {(method, url) for _, method, url in entries} == {
        ("CONNECT", f"{server_443.host}:443")
    }
    # Squid saw CONNECT lines only: the requests reached the server untouched (no Via).
    assert all("via" not in r.headers for r in server_443.requests)


@pytest.mark.parametrize("server_443", ["http"], indirect=True)
def test_proxy_tunnel_tunnels_plain_http_to_port_443(squid, server_443, tmp_path):
    before = len(squid.log())
    with Client(api_key=API_KEY, base_url=server_443.url, proxy=squid.url, proxy_tunnel=True) as c:
        exercise(c, tmp_path)
        tunnels = server_443.connections
    entries = new_entries(squid, before, tunnels)
    assert entries and {(method, url) for _, method, url in entries} == {
        ("CONNECT", f"{server_443.host}:443")
    }
    assert all("via" not in r.headers for r in server_443.requests)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_stock_squid_refuses_a_tunnel_to_another_port_at_once(scheme, squid, ca, ca_file):
    """What every proxied http:// request met before: a stock squid tunnels to 443 only."""
    context = tls_context(ca, "127.0.0.1") if scheme == "https" else None
    retries: list[object] = []
    with MockTinkerServer(ssl_context=context) as server:
        with Client(
            api_key=API_KEY,
            base_url=server.url,
            verify=ca_file,
            proxy=squid.url,
            proxy_tunnel=True,
            event_hooks={"retry": [retries.append]},
        ) as c:
            with pytest.raises(APIConnectionError) as info:
                c.get("/api/v1/healthz")
        assert server.requests == []
    assert info.value.cause == "proxy" and retries == []
    assert str(info.value) == (
        f"The proxy {squid.url} refused to open a tunnel to 127.0.0.1:{server.port}: 403 Forbidden"
    )


# -- streams, downloads, redirects ---------------------------------------------------------------------------


def test_events_arrive_through_squid_while_the_stream_is_open(squid, http_server):
    """Squid relays a stream as it comes: the events arrive while the server holds the response open."""
    with Client(api_key=API_KEY, base_url=http_server.url, proxy=squid.url, timeout=30) as c:
        with c.stream_get("/test/sse?count=3&hang=1") as events:
            got = [next(events).json()["index"] for _ in range(3)]
    assert got == [0, 1, 2]


def test_a_broken_body_through_squid_resumes(squid, http_server, tmp_path, waits):
    http_server.script("/test/bytes", Fault(reset_after=300_000))
    size = 2 * MiB
    with Client(api_key=API_KEY, base_url=http_server.url, proxy=squid.url, sleep=waits.append) as c:
        c.download(f"/test/bytes?size={size}&seed=9", tmp_path / "f", connections=1)
    assert file_sha(tmp_path / "f") == sha256_of(9, size)
    ranges = [r.headers.get("range") for r in http_server.requests]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    assert all("squid" in r.headers.get("via", "") for r in http_server.requests)


def test_a_checkpoint_through_squid_keeps_the_api_key_home(squid, http_server, tmp_path):
    """API on localhost, signed URLs on 127.0.0.1: two origins through one proxy; the key stays home."""
    http_server.add_checkpoint("tinker://run-1/weights/final", size=MiB, seed=3)
    base = f"http://localhost:{http_server.port}"
    with Client(api_key=API_KEY, base_url=base, proxy=squid.url) as c:
        target = c.checkpoints.download("tinker://run-1/weights/final", output_dir=tmp_path)
    assert any(target.rglob("*")) and http_server.violations == []
    api = [r for r in http_server.requests if not r.path.startswith("/signed/")]
    signed = [r for r in http_server.requests if r.path.startswith("/signed/")]
    assert api and signed
    assert all(r.headers.get("x-api-key") == API_KEY for r in api)
    assert all("x-api-key" not in r.headers and "authorization" not in r.headers for r in signed)
    assert all("squid" in r.headers.get("via", "") for r in http_server.requests)


# -- the environment -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "no_proxy, bypassed",
    [
        ("", False),
        ("127.0.0.1", True),
        ("127.0.0.0/8", True),
        ("*", True),
        ("localhost", False),
        ("10.0.0.1", False),
    ],
)
def test_environment_proxies_and_no_proxy(no_proxy, bypassed, squid, http_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", squid.url)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # never used: the server is http://
    monkeypatch.setenv("NO_PROXY", no_proxy)
    with Client(api_key=API_KEY, base_url=http_server.url, max_retries=0) as c:
        assert c.get("/api/v1/healthz") == {"status": "ok"}
        assert [e.json()["index"] for e in c.stream_get("/test/sse?count=2")] == [0, 1]
    vias = ["squid" in r.headers.get("via", "") for r in http_server.requests]
    assert vias == [not bypassed] * 3  # the handshake (client/config), healthz, the stream


# -- the command line -----------------------------------------------------------------------------------------


def test_the_cli_goes_through_stock_squid_and_proxytunnel_tunnels(squid, http_server):
    """``tinker-sync`` in a subprocess with HTTP_PROXY: absolute form by default; ``--proxytunnel``
    (curl's ``-p``) asks for a tunnel, which a stock squid refuses to a port other than 443."""
    http_server.add_checkpoint("tinker://run-1/weights/final", size=1000)
    env = {"HTTP_PROXY": squid.url, "NO_PROXY": ""}
    plain = run_cli(http_server, "run", "list", "-f", "json", "--max-retries", "0", **env)
    assert plain.returncode == 0, plain.stderr
    assert '"run-1"' in plain.stdout
    assert http_server.requests and all("squid" in r.headers.get("via", "") for r in http_server.requests)
    count = len(http_server.requests)
    for flag in ("--proxytunnel", "-p"):
        tunnelled = run_cli(http_server, "run", "list", flag, "--max-retries", "0", **env)
        assert tunnelled.returncode == 1
        assert f"refused to open a tunnel to 127.0.0.1:{http_server.port}: 403 Forbidden" in tunnelled.stderr
        assert "Traceback" not in tunnelled.stderr
    assert len(http_server.requests) == count


@pytest.mark.parametrize("server_443", ["http"], indirect=True)
def test_the_cli_proxytunnel_reaches_port_443(squid, server_443):
    server_443.add_checkpoint("tinker://run-1/weights/final", size=1000)
    before = len(squid.log())
    done = run_cli(server_443, "run", "list", "-p", "-f", "json", HTTP_PROXY=squid.url, NO_PROXY="")
    assert done.returncode == 0, done.stderr
    assert '"run-1"' in done.stdout
    entries = new_entries(squid, before, 1)
    assert {(method, url) for _, method, url in entries} == {("CONNECT", f"{server_443.host}:443")}
    assert all("via" not in r.headers for r in server_443.requests)
