"""Settings from the environment: proxy selection with the NO_PROXY rules, CA locations, TINKER_MAX_RETRIES.

Pure functions of the environment (no sockets); the requests that go through proxies and TLS are in
test_transport.py.
"""

from __future__ import annotations

import ssl

import pytest

from tinker_sync import TinkerError
from tinker_sync._config import ProxyRules, bypasses_proxy, ca_locations, max_retries_from_env, proxy_rules

# (NO_PROXY, host, port, bypassed)
NO_PROXY_CASES = [
    # empty and star
    ("", "example.com", 443, False),
    ("*", "example.com", 443, True),
    ("*", "127.0.0.1", 80, True),
    (" * ", "anything.test", 1, True),
    # a domain matches itself and its subdomains, never a longer name that ends the same
    ("example.com", "example.com", 443, True),
    ("example.com", "api.example.com", 443, True),
    ("example.com", "a.b.example.com", 443, True),
    ("example.com", "badexample.com", 443, False),
    ("example.com", "example.com.evil.test", 443, False),
    ("example.com", "example.org", 443, False),
    (".example.com", "example.com", 443, True),
    (".example.com", "api.example.com", 443, True),
    (".example.com", "badexample.com", 443, False),
    ("*.example.com", "api.example.com", 443, True),
    ("*.example.com", "example.com", 443, True),
    ("*.example.com", "badexample.com", 443, False),
    # case, trailing dots, spaces and empty entries
    ("EXAMPLE.com", "Api.Example.COM", 443, True),
    ("example.com.", "api.example.com", 443, True),
    ("example.com", "api.example.com.", 443, True),
    ("other.test, example.com", "api.example.com", 443, True),
    ("other.test,,example.com,", "example.com", 443, True),
    ("other.test example.com", "example.com", 443, True),
    ("other.test", "example.com", 443, False),
    # ports
    ("example.com:8443", "example.com", 8443, True),
    ("example.com:8443", "example.com", 443, False),
    ("example.com:8443", "api.example.com", 8443, True),
    ("example.com:x", "example.com", 443, False),
    ("127.0.0.1:8080", "127.0.0.1", 8080, True),
    ("127.0.0.1:8080", "127.0.0.1", 80, False),
    ("[::1]:8080", "::1", 8080, True),
    ("[::1]:8080", "::1", 80, False),
    # IP addresses and CIDR blocks; names are never resolved
    ("127.0.0.1", "127.0.0.1", 80, True),
    ("127.0.0.1", "127.0.0.2", 80, False),
    ("127.0.0.0/8", "127.1.2.3", 80, True),
    ("10.0.0.0/8", "11.0.0.1", 80, False),
    ("192.168.0.0/16", "192.168.44.1", 443, True),
    ("::1", "::1", 443, True),
    ("[::1]", "::1", 443, True),
    ("::1", "[::1]", 443, True),
    ("fd00::/8", "fd12::1", 443, True),
    ("fd00::/8", "fe80::1", 443, False),
    ("127.0.0.0/8", "localhost", 80, False),
    ("localhost", "127.0.0.1", 80, False),
    ("localhost", "localhost", 80, True),
    ("::1", "127.0.0.1", 80, False),
    ("10.0.0.0/8", "10.example.com", 80, False),
    ("http://example.com", "example.com", 80, True),  # httpx's form: a scheme before the host
    ("https://example.com:443", "api.example.com", 443, True),
    ("http://127.0.0.1/", "127.0.0.1", 80, True),
]


@pytest.mark.parametrize("no_proxy, host, port, bypassed", NO_PROXY_CASES)
def test_no_proxy_rules(no_proxy, host, port, bypassed):
    assert bypasses_proxy(host, port, no_proxy) is bypassed


@pytest.mark.parametrize(
    "no_proxy, scheme, bypassed",
    [
        ("http://example.com", "http", True),
        ("http://example.com", "https", False),
        ("HTTPS://example.com", "https", True),
        ("https://example.com", "http", False),
        ("example.com", "https", True),
    ],
)
def test_no_proxy_entries_with_a_scheme_match_that_scheme_only(no_proxy, scheme, bypassed):
    assert bypasses_proxy("example.com", 443, no_proxy, scheme) is bypassed


PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def rules(monkeypatch, env: dict[str, str], proxy: str | None = None, trust_env: bool = True) -> ProxyRules:
    for name in (*PROXY_VARS, *(n.upper() for n in PROXY_VARS), "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return proxy_rules(proxy, trust_env)


# (environment, expected http proxy, expected https proxy, expected sources)
ENV_CASES = [
    ({}, None, None, ()),
    ({"HTTPS_PROXY": "http://p:3128"}, None, "http://p:3128", (("https", "HTTPS_PROXY"),)),
    ({"https_proxy": "http://p:3128"}, None, "http://p:3128", (("https", "https_proxy"),)),
    ({"HTTP_PROXY": "http://h:1"}, "http://h:1", None, (("http", "HTTP_PROXY"),)),
    (
        {"ALL_PROXY": "http://a:1"},
        "http://a:1",
        "http://a:1",
        (("http", "ALL_PROXY"), ("https", "ALL_PROXY")),
    ),
    (
        {"all_proxy": "http://a:1", "HTTPS_PROXY": "http://s:2"},
        "http://a:1",
        "http://s:2",
        (("http", "all_proxy"), ("https", "HTTPS_PROXY")),
    ),
    # lower case wins; a set but empty lower-case variable hides the upper-case one
    (
        {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"},
        None,
        "http://lower:1",
        (("https", "https_proxy"),),
    ),
    ({"https_proxy": "", "HTTPS_PROXY": "http://upper:2"}, None, None, ()),
    ({"HTTPS_PROXY": "   "}, None, None, ()),
    # a bare host:port is an http:// proxy, as curl and requests read it
    ({"HTTPS_PROXY": "proxy.corp:3128"}, None, "http://proxy.corp:3128", (("https", "HTTPS_PROXY"),)),
    # httpoxy: in a CGI request HTTP_PROXY may come from the client's Proxy: header
    ({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}, None, None, ()),
    (
        {"http_proxy": "http://fine:1", "REQUEST_METHOD": "GET"},
        "http://fine:1",
        None,
        (("http", "http_proxy"),),
    ),
]


@pytest.mark.parametrize("env, http, https, sources", ENV_CASES)
def test_proxies_from_the_environment(monkeypatch, env, http, https, sources):
    got = rules(monkeypatch, env)
    assert (got.http, got.https, got.sources) == (http, https, sources)


def test_trust_env_false_reads_no_proxy_variable(monkeypatch):
    env = {
        "HTTPS_PROXY": "http://p:1",
        "HTTP_PROXY": "http://p:1",
        "ALL_PROXY": "http://p:1",
        "NO_PROXY": "*",
    }
    assert rules(monkeypatch, env, trust_env=False) == ProxyRules()


def test_an_explicit_proxy_replaces_the_environment_but_no_proxy_still_applies(monkeypatch):
    got = rules(monkeypatch, {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "internal.test"}, proxy="mine:3128")
    assert (got.http, got.https) == ("http://mine:3128", "http://mine:3128")
    assert got.select("https", "api.test", 443) == "http://mine:3128"
    assert got.select("https", "x.internal.test", 443) is None
    assert got.source("https") == "proxy="
    assert rules(monkeypatch, {"NO_PROXY": "*"}, proxy="mine:3128", trust_env=False).select("https", "a", 1)


@pytest.mark.parametrize(
    "scheme, host, port, expected",
    [
        ("https", "api.test", 443, "http://s:2"),
        ("http", "api.test", 80, "http://h:1"),
        ("https", "skip.test", 443, None),
        ("http", "10.1.2.3", 80, None),
        ("https", "10.1.2.3", 8443, None),
        ("https", "11.1.2.3", 443, "http://s:2"),
    ],
)
def test_select_per_scheme_with_no_proxy(monkeypatch, scheme, host, port, expected):
    env = {"HTTP_PROXY": "http://h:1", "HTTPS_PROXY": "http://s:2", "no_proxy": "skip.test,10.0.0.0/8"}
    assert rules(monkeypatch, env).select(scheme, host, port) == expected


def test_ca_locations(monkeypatch, tmp_path):
    defaults = ssl.get_default_verify_paths()
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(name, str(tmp_path / name))
    got = ca_locations(True)
    assert (got.cafile, got.capath, got.extra) == (
        str(tmp_path / "SSL_CERT_FILE"),
        str(tmp_path / "SSL_CERT_DIR"),
        str(tmp_path / "REQUESTS_CA_BUNDLE"),
    )
    assert (got.cafile_from, got.capath_from) == ("SSL_CERT_FILE", "SSL_CERT_DIR")
    ignored = ca_locations(False)
    assert (ignored.cafile, ignored.capath, ignored.extra) == (
        defaults.openssl_cafile,
        defaults.openssl_capath,
        None,
    )
    assert (ignored.cafile_from, ignored.capath_from) == (None, None)


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("0", 0), ("3", 3), (" 12 ", 12)])
def test_max_retries_from_env(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("TINKER_MAX_RETRIES", raising=False)
    else:
        monkeypatch.setenv("TINKER_MAX_RETRIES", value)
    assert max_retries_from_env() == expected


@pytest.mark.parametrize("value", ["-1", "ten", "1.5"])
def test_max_retries_from_env_refuses_other_values(monkeypatch, value):
    monkeypatch.setenv("TINKER_MAX_RETRIES", value)
    with pytest.raises(TinkerError, match="TINKER_MAX_RETRIES must be a non-negative integer"):
        max_retries_from_env()
