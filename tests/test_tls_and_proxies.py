"""Proxies, TLS and name resolution over real sockets.

A real forward proxy (``tinker_sync.testing.ForwardProxy``, which records every byte it reads in
clear), real TLS servers with certificates from ``trustme`` (trusted, untrusted, wrong host,
expired), and the mock Tinker server behind them.
"""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
import warnings
from pathlib import Path

import pytest
import trustme
from _downloads import file_sha

from tinker_sync import (
    TLS,
    APIConnectionError,
    APIStatusError,
    Client,
    InsecureRequestWarning,
    InvalidRequestError,
    TinkerError,
)
from tinker_sync._retry import DNS_RETRIES
from tinker_sync.testing import Fault, ForwardProxy, MockTinkerServer
from tinker_sync.testing._data import sha256_of

API_KEY = "tml-test-key"
MiB = 1 << 20


def server_context(ca: trustme.CA, *names: str, **cert_options: object) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, **cert_options).configure_cert(context)  # type: ignore[arg-type]
    return context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_server(ca):
    with MockTinkerServer(ssl_context=server_context(ca, "127.0.0.1", "localhost")) as server:
        yield server


@pytest.fixture
def http_server():
    with MockTinkerServer() as server:
        yield server


@pytest.fixture
def proxy():
    with ForwardProxy() as p:
        yield p


# -- proxies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tunnel", [False, True], ids=["default", "proxy_tunnel"])
@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("how", ["env", "env-lower", "all-proxy", "argument"])
def test_calls_streams_and_downloads_go_through_the_proxy(
    scheme, how, tunnel, request, proxy, ca_file, tmp_path, monkeypatch
):
    """https:// (and with ``proxy_tunnel``, http://) through a tunnel; plain http:// in absolute form."""
    server = request.getfixturevalue("tls_server" if scheme == "https" else "http_server")
    variable = {"env": f"{scheme.upper()}_PROXY", "env-lower": f"{scheme}_proxy", "all-proxy": "ALL_PROXY"}
    if how in variable:
        monkeypatch.setenv(variable[how], proxy.url)
    argument = {"proxy": proxy.url} if how == "argument" else {}
    size = MiB + 17
    with Client(
        api_key=API_KEY, base_url=server.url, verify=ca_file, proxy_tunnel=tunnel, **argument
    ) as client:
        assert client.get("/api/v1/healthz") == {"status": "ok"}
        events = [e.json()["index"] for e in client.stream_get("/test/sse?count=5")]
        with client.stream("GET", "/test/bytes?size=4096&seed=1") as response:
            raw = response.read()
        client.download(f"/test/bytes?size={size}&seed=2&checksum=md5", tmp_path / "file.bin")
    assert events == [0, 1, 2, 3, 4] and len(raw) == 4096
    assert file_sha(tmp_path / "file.bin") == sha256_of(2, size)
    target = f"127.0.0.1:{server.port}"
    if scheme == "http" and not tunnel:  # absolute form: the proxy reads and forwards each request
        assert proxy.tunnels == [] and len(server.requests) == 5  # the handshake's POST first
        assert [r.method for r in proxy.requests] == ["POST"] + ["GET"] * 4
        assert proxy.requests[0].target == f"http://{target}/api/v1/client/config"
        assert all(r.target.startswith(f"http://{target}/") for r in proxy.requests)
        assert b"GET http://" + target.encode() + b"/api/v1/healthz HTTP/1.1" in proxy.seen
        assert server.requests[0].headers["x-api-key"] == API_KEY  # what http:// means: documented
        return
    assert proxy.tunnels and set(proxy.tunnels) == {target}
    assert [r.method for r in proxy.requests] == ["CONNECT"] * len(proxy.tunnels)
    paths = [r.path for r in server.requests]
    assert paths.count("/api/v1/client/config") == 1  # the handshake, once, through the tunnel too
    assert len(paths) == 5 and server.connections == len(proxy.tunnels)
    # The proxy read nothing but CONNECT lines: no path, no header, no API key, even for plain http.
    assert API_KEY.encode() not in proxy.seen and b"/api/v1" not in proxy.seen and b"/test/" not in proxy.seen
    assert all(line.startswith(b"CONNECT ") for line in proxy.seen.split(b"\r\n\r\n") if line)


@pytest.mark.parametrize(
    "scheme, tunnel",
    [("http", True), ("https", False), ("https", True)],
    ids=["http-tunnel", "https", "https-tunnel"],
)
def test_signed_urls_never_reach_the_proxy_in_clear(scheme, tunnel, request, proxy, ca_file, tmp_path):
    """Through a tunnel (https://, or http:// with ``proxy_tunnel``); a plain http:// URL is the
    proxy's to read (``test_plain_http_through_a_forwarding_proxy_is_the_proxys_to_read``)."""
    server = request.getfixturevalue("tls_server" if scheme == "https" else "http_server")
    server.add_checkpoint("tinker://run-1/weights/final", size=MiB, seed=3)
    with Client(
        api_key=API_KEY, base_url=server.url, verify=ca_file, proxy=proxy.url, proxy_tunnel=tunnel
    ) as client:
        target = client.checkpoints.download("tinker://run-1/weights/final", output_dir=tmp_path)
    assert any(target.rglob("*"))
    signed = [r for r in server.requests if r.path.startswith("/signed/")]
    assert signed and "sig" in signed[0].query
    assert b"/signed/" not in proxy.seen and b"sig=" not in proxy.seen and API_KEY.encode() not in proxy.seen
    assert server.violations == []


def test_connections_through_the_proxy_are_kept_alive(proxy, http_server):
    """Through a tunnel (the test proxy closes its connection after each request it forwards)."""
    with Client(api_key=API_KEY, base_url=http_server.url, proxy=proxy.url, proxy_tunnel=True) as client:
        for _ in range(3):
            client.get("/api/v1/healthz")
        assert client._transport.pool_stats(http_server.url) == {"num_connections": 1, "idle": 1}
    assert len(proxy.tunnels) == 1 and proxy.connections == 1


@pytest.mark.parametrize(
    "no_proxy, bypassed",
    [
        ("127.0.0.1", True),
        ("127.0.0.0/8", True),
        ("*", True),
        ("127.0.0.1:{port}", True),
        ("example.com, 127.0.0.1", True),
        ("127.0.0.1:{other}", False),
        ("http://127.0.0.1", True),  # httpx's form, with a scheme: the server is http
        ("https://127.0.0.1", False),
        ("localhost", False),  # names are never resolved: 127.0.0.1 is not localhost
        ("127.0.0.2", False),
        ("", False),
    ],
)
@pytest.mark.parametrize("tunnel", [False, True], ids=["forwarded", "proxy_tunnel"])
def test_no_proxy_bypasses_the_proxy(no_proxy, bypassed, tunnel, proxy, http_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=http_server.port, other=http_server.port + 1))
    with Client(api_key=API_KEY, base_url=http_server.url, proxy_tunnel=tunnel) as client:
        assert client.get("/api/v1/healthz") == {"status": "ok"}
        assert [e.json()["index"] for e in client.stream_get("/test/sse?count=2")] == [0, 1]
        client.download("/test/bytes?size=1000&seed=1", tmp_path / "f")
    assert (proxy.connections == 0) is bypassed
    if tunnel:
        assert proxy.tunnels == ([] if bypassed else [f"127.0.0.1:{http_server.port}"])
    else:
        assert proxy.tunnels == [] and len(proxy.requests) == (0 if bypassed else 4)  # with the handshake


def test_trust_env_false_ignores_the_proxy_variables(proxy, http_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # a dead proxy: going through it would fail
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")
    with Client(api_key=API_KEY, base_url=http_server.url, trust_env=False, max_retries=0) as client:
        assert client.get("/api/v1/healthz") == {"status": "ok"}
        with Client(api_key=API_KEY, base_url=http_server.url, max_retries=0) as trusting:
            with pytest.raises(APIConnectionError, match="Could not connect to the proxy http://127.0.0.1:1"):
                trusting.get("/api/v1/healthz")


@pytest.mark.parametrize("tunnel", [False, True], ids=["forwarded", "proxy_tunnel"])
def test_proxy_credentials_go_to_the_proxy_only_and_are_masked(tunnel, http_server, caplog):
    password = "p@ss:w/rd"
    with ForwardProxy(auth=("user", password)) as proxy:
        with caplog.at_level(logging.DEBUG, logger="tinker_sync"):
            with Client(
                api_key=API_KEY,
                base_url=http_server.url,
                proxy=proxy.auth_url,
                proxy_tunnel=tunnel,
                dump_headers=True,
            ) as c:
                assert c.get("/api/v1/healthz") == {"status": "ok"}
                assert [e.json()["index"] for e in c.stream_get("/test/sse?count=2")] == [0, 1]
        assert proxy.requests[0].headers["proxy-authorization"].startswith("Basic ")
        assert all("proxy-authorization" in r.headers for r in proxy.requests)
        assert [r.method for r in proxy.requests] == (["CONNECT"] if tunnel else ["POST", "GET", "GET"])
    assert all("proxy-authorization" not in r.headers for r in http_server.requests)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"via proxy http://user:***@127.0.0.1:{proxy.port}" in logged
    assert "p@ss" not in logged and "p%40ss" not in logged


def test_a_refused_tunnel_raises_at_once_naming_the_proxy_masked(http_server):
    retries: list = []
    with ForwardProxy(auth=("user", "right")) as proxy:
        wrong = proxy.auth_url.replace("right", "wrong-secret")
        with Client(
            api_key=API_KEY,
            base_url=http_server.url,
            proxy=wrong,
            proxy_tunnel=True,
            event_hooks={"retry": [retries.append]},
        ) as client:
            with pytest.raises(APIConnectionError) as info:
                client.get("/api/v1/healthz")
    message = str(info.value)
    assert info.value.cause == "proxy" and retries == []
    assert message == (
        f"The proxy http://user:***@127.0.0.1:{proxy.port} refused to open a tunnel to "
        f"127.0.0.1:{http_server.port}: 407 Proxy Authentication Required (check the proxy's user and password)"
    )
    assert http_server.requests == []


def test_a_forwarding_proxy_refusing_the_credentials_raises_at_once_naming_it_masked(http_server):
    """The 407 of a proxy forwarding a plain http:// request is the proxy's refusal, never the API's status."""
    retries: list = []
    with ForwardProxy(auth=("user", "right")) as proxy:
        for url in (proxy.url, proxy.auth_url.replace("right", "wrong-secret")):
            with Client(
                api_key=API_KEY, base_url=http_server.url, proxy=url, event_hooks={"retry": [retries.append]}
            ) as client:
                with pytest.raises(APIConnectionError) as info:
                    client.get("/api/v1/healthz")
            shown = url.replace("wrong-secret", "***")
            assert str(info.value) == (
                f"The proxy {shown} refused to forward the request to 127.0.0.1:{http_server.port}: "
                "407 Proxy Authentication Required (check the proxy's user and password)"
            )
            assert info.value.cause == "proxy" and "wrong-secret" not in repr(info.value)
    assert retries == [] and http_server.requests == []


def test_plain_http_through_a_forwarding_proxy_is_the_proxys_to_read(proxy, http_server, tmp_path):
    """In absolute form the proxy reads each request, the API key included (that is what http://
    means, as with curl); a redirect to another origin still carries no key, through the proxy too."""
    http_server.add_checkpoint("tinker://run-1/weights/final", size=MiB, seed=3)
    base = f"http://localhost:{http_server.port}"  # signed URLs on 127.0.0.1: another origin
    with Client(api_key=API_KEY, base_url=base, proxy=proxy.url) as client:
        target = client.checkpoints.download("tinker://run-1/weights/final", output_dir=tmp_path)
    assert any(target.rglob("*")) and http_server.violations == []
    handshake = [r for r in proxy.requests if r.method == "POST"]  # client/config, once
    assert [r.target for r in handshake] == [base + "/api/v1/client/config"]
    assert proxy.tunnels == [] and {r.method for r in proxy.requests} == {"GET", "POST"}
    api = [r for r in proxy.requests if r.target.startswith(base + "/")]
    signed = [r for r in proxy.requests if "/signed/" in r.target]
    assert api and signed and len(api) + len(signed) == len(proxy.requests)
    assert all(r.headers["x-api-key"] == API_KEY for r in api)
    assert all("x-api-key" not in r.headers and "authorization" not in r.headers for r in signed)
    assert all(r.target.startswith(f"http://127.0.0.1:{http_server.port}/signed/") for r in signed)


def test_a_forwarding_proxy_that_cannot_reach_the_target_is_a_retried_status(proxy, waits):
    """Its 502 is an answer (the proxy's, as curl shows it): retried as any 5xx, then raised with its status."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with Client(
        api_key=API_KEY,
        base_url=f"http://127.0.0.1:{port}",
        proxy=proxy.url,
        max_retries=2,
        sleep=waits.append,
    ) as c:
        with pytest.raises(APIStatusError) as info:
            c.get("/api/v1/healthz")
    assert info.value.status_code == 502 and len(waits) == 2
    # the handshake met the 502 first, retried as any call's within its budget, then raised
    assert [r.target for r in proxy.requests] == [f"http://127.0.0.1:{port}/api/v1/client/config"] * 3


def test_a_target_the_proxy_forbids_is_not_retried(proxy):
    retries: list = []
    with Client(
        api_key=API_KEY,
        base_url="http://example.com",
        proxy=proxy.url,
        proxy_tunnel=True,
        event_hooks={"retry": [retries.append]},
    ) as client:
        with pytest.raises(
            APIConnectionError, match="refused to open a tunnel to example.com:80: 403"
        ) as info:
            client.get("/api/v1/healthz")
    assert info.value.cause == "proxy" and retries == []
    assert proxy.tunnels == []  # the test proxy reaches loopback only


def test_a_dead_proxy_and_an_unreachable_target_are_retried(proxy, waits):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with Client(
        api_key=API_KEY,
        base_url="http://127.0.0.1:9",
        proxy=f"http://127.0.0.1:{port}",
        max_retries=2,
        sleep=waits.append,
    ) as c:
        with pytest.raises(
            APIConnectionError, match=f"Could not connect to the proxy http://127.0.0.1:{port}"
        ) as info:
            c.get("/api/v1/healthz")
    assert info.value.cause == "connect" and len(waits) == 2
    waits.clear()
    with Client(
        api_key=API_KEY,
        base_url=f"http://127.0.0.1:{port}",
        proxy=proxy.url,
        proxy_tunnel=True,
        max_retries=2,
        sleep=waits.append,
    ) as c:
        with pytest.raises(
            APIConnectionError, match=f"could not open a tunnel to 127.0.0.1:{port}: 502"
        ) as info:
            c.get("/api/v1/healthz")
    assert info.value.cause == "connect" and len(waits) == 2


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "socks5://127.0.0.1:1080",
            r"Unsupported proxy HTTPS_PROXY=socks5://127.0.0.1:1080: only http:// and https://",
        ),
        ("http://", r"Invalid proxy URL HTTPS_PROXY=http://"),
        ("http://u:secret@[::1:3128", r"Invalid proxy URL HTTPS_PROXY=http://u:\*\*\*@"),
    ],
)
def test_an_unusable_proxy_is_refused_when_the_client_is_built(value, message, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", value)
    with pytest.raises(InvalidRequestError, match=message) as info:
        Client(api_key=API_KEY, base_url="https://api.test")
    assert "secret" not in str(info.value)


def test_an_https_proxy_cannot_carry_plain_http(http_server):
    with Client(api_key=API_KEY, base_url=http_server.url, proxy="https://127.0.0.1:3128") as client:
        with pytest.raises(InvalidRequestError, match="an https:// proxy carries https:// URLs only"):
            client.get("/api/v1/healthz")
    assert http_server.requests == []


def test_a_broken_body_through_the_proxy_resumes(proxy, tls_server, ca_file, tmp_path, waits):
    tls_server.script("/test/bytes", Fault(reset_after=300_000))
    size = 2 * MiB
    with Client(
        api_key=API_KEY, base_url=tls_server.url, verify=ca_file, proxy=proxy.url, sleep=waits.append
    ) as c:
        c.download(f"/test/bytes?size={size}&seed=9", tmp_path / "f")
    assert file_sha(tmp_path / "f") == sha256_of(9, size)
    assert [r.headers.get("range") for r in tls_server.requests] == [None, "bytes=300000-"]
    assert len(proxy.tunnels) == 2  # the reset connection was dropped, a new tunnel resumed


# -- TLS -----------------------------------------------------------------------------------------


def get(url: str, **options: object) -> object:
    with Client(api_key=API_KEY, base_url=url, max_retries=0, **options) as client:  # type: ignore[arg-type]
        return client.get("/api/v1/healthz")


def test_verify_with_a_ca_file_a_directory_or_a_context(tls_server, ca, ca_file, tmp_path):
    assert get(tls_server.url, verify=ca_file) == {"status": "ok"}
    assert get(tls_server.url, verify=Path(ca_file)) == {"status": "ok"}
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / f"{_subject_hash(ca_file)}.0").write_text(Path(ca_file).read_text())
    assert get(tls_server.url, verify=str(directory)) == {"status": "ok"}
    context = ssl.create_default_context(cafile=ca_file)
    assert get(tls_server.url, verify=context) == {"status": "ok"}


def _subject_hash(ca_file: str) -> str:
    """OpenSSL's subject hash of the CA (the file name a CA directory looks up), via the openssl CLI."""
    import subprocess

    done = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", ca_file], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_the_environment_names_cas_under_trust_env_only(variable, tls_server, ca_file, monkeypatch):
    monkeypatch.setenv(variable, ca_file)
    assert get(tls_server.url) == {"status": "ok"}
    with pytest.raises(APIConnectionError, match="is not trusted") as info:
        get(tls_server.url, trust_env=False)
    assert info.value.cause == "tls"


def test_ssl_cert_dir_names_a_ca_directory(tls_server, ca_file, tmp_path, monkeypatch):
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / f"{_subject_hash(ca_file)}.0").write_text(Path(ca_file).read_text())
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    assert get(tls_server.url) == {"status": "ok"}


def test_an_extra_ca_adds_to_the_default_trust_a_ca_path_replaces_it(ca, ca_file, tmp_path, monkeypatch):
    public = trustme.CA()  # stands for the default trust: SSL_CERT_FILE names it
    public_file = tmp_path / "public.pem"
    public.cert_pem.write_to_path(str(public_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(public_file))
    with (
        MockTinkerServer(ssl_context=server_context(ca, "127.0.0.1")) as private_server,
        MockTinkerServer(ssl_context=server_context(public, "127.0.0.1")) as public_server,
    ):
        assert get(public_server.url) == {"status": "ok"}
        with pytest.raises(APIConnectionError, match="not trusted"):
            get(private_server.url)
        for url in (private_server.url, public_server.url):  # both: the default trust, and more
            assert get(url, verify=TLS(extra_ca=ca_file)) == {"status": "ok"}
        assert get(private_server.url, verify=ca_file) == {"status": "ok"}
        with pytest.raises(APIConnectionError, match="not trusted"):  # only the CAs of the path
            get(public_server.url, verify=ca_file)


NOW = datetime.datetime.now(datetime.UTC)
# name -> (issuer: the trusted CA or another, certificate names, certificate options, the line expected)
CERTIFICATE_ERRORS = {
    "untrusted": (
        "other-ca",
        ("127.0.0.1",),
        {},
        "TLS certificate of {host} is not trusted (unable to get local issuer certificate); trust its CA "
        "with Client(verify=tinker_sync.TLS(extra_ca=...)) or SSL_CERT_FILE",
    ),
    "wrong-host": ("same-ca", ("example.com",), {}, "TLS certificate does not match the host {host} ("),
    "expired": (
        "same-ca",
        ("127.0.0.1",),
        {"not_after": NOW - datetime.timedelta(days=1)},
        "TLS certificate of {host} has expired (certificate has expired)",
    ),
    "not-yet-valid": (
        "same-ca",
        ("127.0.0.1",),
        {"not_before": NOW + datetime.timedelta(days=1)},
        "TLS certificate of {host} is not valid yet (certificate is not yet valid)",
    ),
}


@pytest.mark.parametrize("case", sorted(CERTIFICATE_ERRORS))
@pytest.mark.parametrize("path", ["direct", "proxy"])
def test_certificate_errors_raise_at_once_in_one_line_naming_the_host(case, path, ca, ca_file, proxy):
    which, names, options, expected = CERTIFICATE_ERRORS[case]
    issuer = ca if which == "same-ca" else trustme.CA()
    retries: list = []
    via = {"proxy": proxy.url} if path == "proxy" else {}
    with MockTinkerServer(ssl_context=server_context(issuer, *names, **options)) as server:
        with Client(
            api_key=API_KEY,
            base_url=server.url,
            verify=ca_file,
            event_hooks={"retry": [retries.append]},
            **via,
        ) as client:
            with pytest.raises(APIConnectionError) as info:
                client.get("/api/v1/healthz")
    message = str(info.value)
    assert message.startswith(expected.format(host=f"127.0.0.1:{server.port}")), message
    assert "\n" not in message and info.value.cause == "tls" and retries == []
    assert server.requests == []
    assert proxy.tunnels == ([f"127.0.0.1:{server.port}"] if path == "proxy" else [])


def test_verify_false_warns_once_per_client_and_connects(tls_server):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Client(api_key=API_KEY, base_url=tls_server.url, verify=False) as client:
            for _ in range(3):
                assert client.get("/api/v1/healthz") == {"status": "ok"}
            with client.stream("GET", "/test/bytes?size=100000") as response:
                assert len(response.read()) == 100000
    assert [(w.category, Path(w.filename).name) for w in caught] == [
        (InsecureRequestWarning, "test_tls_and_proxies.py")
    ]
    assert "verify=False" in str(caught[0].message)


def test_an_unverifying_context_warns_too(tls_server):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.warns(InsecureRequestWarning, match="not verified"):
        client = Client(api_key=API_KEY, base_url=tls_server.url, verify=context)
    with client:
        assert client.get("/api/v1/healthz") == {"status": "ok"}


def test_a_verify_path_that_does_not_exist_is_refused(tmp_path, monkeypatch, tls_server):
    with pytest.raises(TinkerError, match="verify: .*nope.pem' does not exist"):
        Client(api_key=API_KEY, base_url="https://api.test", verify=str(tmp_path / "nope.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))
    with pytest.raises(TinkerError, match="SSL_CERT_FILE: .*gone.pem' does not exist"):
        get(tls_server.url)


def test_the_operating_system_trust_store_through_truststore(tls_server, ca_file, monkeypatch):
    import truststore

    with Client(api_key=API_KEY, base_url=tls_server.url, verify=TLS(system=True), max_retries=0) as client:
        assert isinstance(client._transport._ssl_context(), truststore.SSLContext)
        with pytest.raises(APIConnectionError, match="not trusted"):  # the system knows no test CA
            client.get("/api/v1/healthz")
    assert get(tls_server.url, verify=TLS(system=True, extra_ca=ca_file)) == {"status": "ok"}


# -- name resolution -----------------------------------------------------------------------------


@pytest.fixture
def unresolvable(monkeypatch):
    """Names ending in .invalid fail to resolve, as a resolver answers (without asking one)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_name_that_does_not_resolve_is_retried_briefly_and_named(unresolvable, waits, caplog):
    with caplog.at_level(logging.INFO, logger="tinker_sync"):
        with Client(api_key=API_KEY, base_url="https://api.nohost.invalid", sleep=waits.append) as client:
            with pytest.raises(APIConnectionError) as info:
                client.get("/api/v1/healthz")
    assert info.value.cause == "dns"
    assert (
        str(info.value)
        == "Could not resolve host 'api.nohost.invalid' while connecting: [Errno -2] Name or service not known"
    )
    assert len(waits) == DNS_RETRIES and sum(waits) < 2  # never a silent minute
    retried = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert len(retried) == DNS_RETRIES and all("api.nohost.invalid" in line for line in retried)


def test_a_proxy_name_that_does_not_resolve_is_named(unresolvable, waits):
    with Client(
        api_key=API_KEY,
        base_url="https://api.test",
        proxy="http://user:pw@proxy.invalid:3128",
        sleep=waits.append,
    ) as client:
        with pytest.raises(
            APIConnectionError, match=r"Could not resolve the proxy http://user:\*\*\*@proxy.invalid:3128"
        ) as info:
            client.get("/api/v1/healthz")
    assert info.value.cause == "dns" and len(waits) == DNS_RETRIES
