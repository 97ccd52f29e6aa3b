"""The transport's request checks, over real sockets: one URL parser for the origin check and the
connection (a differential corpus), and no CR, LF or NUL ever reaching the wire."""

from __future__ import annotations

import contextlib

import pytest
from _sockets import RecordingServer

from tinker_sync import (
    APIConnectionError,
    APIResponseValidationError,
    Client,
    InvalidRequestError,
    TinkerError,
)
from tinker_sync._transport import check_url, origin_of

API_KEY = "tml-test-key"

# Templates: {api} is the API's host:port (127.0.0.1), {other} another origin's (127.0.0.2).
# Each URL is either refused before anything is sent, or goes where the origin check thinks it
# goes: the API key reaches only the API's server, and only when the check says it is the API.
CORPUS = [
    "http://{api}/x",
    "http://{other}/x",
    "HTTP://{api}/x",
    "http://{api}/x#frag",
    "http://{api}//{other}/x",
    "http://{api}/x?next=http://{other}/",
    "http://{other}#@{api}/x",
    "http://{other}?@{api}/x",
    "http://{other}\\@{api}/x",
    "http://{api}\\@{other}/x",
    "http://{api}/\\..\\x",
    "http://user:pw@{api}/x",
    "http://{api}@{other}/x",
    "http://{other};@{api}/x",
    "http://{other}%40{api}/x",
    "http://%31%32%37.0.0.1:{api_port}/x",
    "http://127.0.0.1%2e:{api_port}/x",
    "http://127.0.0.1.:{api_port}/x",
    "http://localhost:{api_port}/x",
    "http://127.1:{api_port}/x",
    "http://2130706433:{api_port}/x",
    "http://0x7f.0.0.1:{api_port}/x",
    "http://127.0.0.1:0{api_port}/x",
    "http://[127.0.0.1]:{api_port}/x",
    "http://{api}:{api_port}/x",
    "http://127.0.0.1:+{api_port}/x",
    "http:{api}/x",
    "http:/{api}/x",
    "http:///{api}/x",
    "http://{api}/x y",
    "http://{api}/x\ty",
    "http://{api}/x\r\nX-Injected: 1",
    "http://{api}/x\x00",
    "http://{api}/x\x7f",
    "http://{other}\t/x",
    " http://{other}/x",
    "ftp://{other}/x",
    "file:///etc/passwd",
    "javascript:alert(1)",
]


@pytest.fixture
def servers():
    with RecordingServer("127.0.0.1") as api, RecordingServer("127.0.0.2") as other:
        yield api, other


def _fill(template: str, api: RecordingServer, other: RecordingServer) -> str:
    return template.format(
        api=api.url.removeprefix("http://"),
        other=other.url.removeprefix("http://"),
        api_port=api.url.rsplit(":", 1)[1],
    )


def _check_where_it_went(
    client: Client, url: str, api: RecordingServer, other: RecordingServer, sent: bool
) -> None:
    if not sent:
        assert api.heads == [] and other.heads == [], "a refused URL reached a server"
        return
    assert True not in other.api_keys(), f"the API key reached another origin: {url!r}"
    if any(api.api_keys()):
        assert client.is_api_url(url), (
            f"the key went with a URL the origin check does not call the API's: {url!r}"
        )


@pytest.mark.parametrize("template", CORPUS)
def test_a_request_goes_where_the_origin_check_says(servers, template):
    api, other = servers
    url = _fill(template, api, other)
    with Client(api_key=API_KEY, base_url=api.url, max_retries=0) as client:
        sent = True
        try:
            client.get(url, cast_to=bytes)
        except InvalidRequestError:
            sent = False
        except APIConnectionError:
            pass  # a name or address that does not answer: nothing to leak
        _check_where_it_went(client, url, api, other, sent)


@pytest.mark.parametrize("template", CORPUS)
def test_a_redirect_goes_where_the_origin_check_says(servers, template, tmp_path):
    """The same corpus as a redirect's Location: the download follows it (or refuses it) safely."""
    api, other = servers
    url = _fill(template, api, other)
    api.redirects["/start"] = url
    with Client(api_key=API_KEY, base_url=api.url, max_retries=0) as client:
        try:
            client.download("/start", tmp_path / "f")
        except (APIConnectionError, InvalidRequestError):
            pass
    assert api.heads and api.api_keys()[0]  # the first request was the API's, with its key
    assert True not in other.api_keys(), f"the API key followed a redirect to another origin: {url!r}"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://API.example.com/x", ("https", "api.example.com", 443)),
        ("https://api.example.com:443/x", ("https", "api.example.com", 443)),
        ("http://api.example.com./x", ("http", "api.example.com", 80)),
        ("http://bücher.example/x", ("http", "xn--bcher-kva.example", 80)),
        ("http://[::1]:8080/x", ("http", "[::1]", 8080)),
        ("HTTP://127.0.0.1:08080/x", ("http", "127.0.0.1", 8080)),
    ],
)
def test_origins_are_normalised_as_the_connection_sees_them(url, origin):
    assert origin_of(url) == origin
    assert origin_of(url) == origin  # the second answer is the kept one


@pytest.mark.parametrize("url", ["http://u:p@b/", "gopher://b/", "http:///x", "http://b/x y"])
def test_a_refused_url_is_refused_every_time(url):
    for _ in range(3):  # a refusal is never kept as an answer
        with pytest.raises(InvalidRequestError):
            origin_of(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://a\\@b/", "backslash"),
        ("http://u:p@b/", "credentials"),
        ("http://a@b/", "credentials"),
        ("http://%62/", "percent-encoding"),
        ("http:///x", "no host"),
        ("http://b/x y", "whitespace"),
        ("gopher://b/", "only http and https"),
        ("http://b:99999/", "Invalid URL"),
    ],
)
def test_refusals_say_why(url, reason):
    with pytest.raises(InvalidRequestError, match=reason):
        check_url(url)


def test_a_signed_url_refused_is_not_shown_whole():
    with pytest.raises(InvalidRequestError) as info:
        check_url("http://u:p@b/x?X-Amz-Signature=secretsig")
    assert "secretsig" not in str(info.value)


# -- CR, LF and NUL never reach the wire ----------------------------------------------------------

BAD_TEXT = ["a\rb", "a\nb", "a\r\nX-Injected: 1", "a\x00b", "\n", "\r\n\r\nGET / HTTP/1.1"]


@pytest.mark.parametrize("bad", BAD_TEXT)
@pytest.mark.parametrize(
    "where",
    ["header value", "header name", "path", "query value", "query name", "method", "default header"],
)
def test_cr_lf_nul_raise_before_anything_is_sent(servers, where, bad):
    api, _ = servers
    default_headers = {"X-Team": bad} if where == "default header" else None
    with pytest.raises(InvalidRequestError) as info:
        with Client(api_key=API_KEY, base_url=api.url, default_headers=default_headers) as client:
            if where == "header value":
                client.get("/x", headers={"X-Trace": bad})
            elif where == "header name":
                client.get("/x", headers={bad: "v"})
            elif where == "path":
                client.get(f"/x{bad}")
            elif where == "query value":
                client.get("/x", params={"q": bad})
            elif where == "query name":
                client.get("/x", params={bad: "v"})
            elif where == "method":
                client.request(f"GET{bad}", "/x")
    assert api.heads == []  # nothing was sent
    assert "X-Injected" not in str(info.value) or where in ("path", "header name", "query name", "method")


def test_header_values_are_never_echoed_in_the_error(servers):
    api, _ = servers
    with Client(api_key=API_KEY, base_url=api.url) as client:
        with pytest.raises(InvalidRequestError) as info:
            client.get("/x", headers={"Authorization": "Bearer s3cret\r\nX: y"})
    assert "s3cret" not in str(info.value) and "Authorization" in str(info.value)


# Header values no HTTP/1.1 header can carry: every one is an InvalidRequestError before sending
# (not a UnicodeEncodeError from inside http.client), and a tab or Latin-1 letter still goes.
UNSENDABLE_VALUES = ["€", "a\u2028b", "日本", "tok\U0001f600", "a\x0bb", "a\x1bb", "a\x7fb", "a\x01"]
SENDABLE_VALUES = ["a\tb", "café", "plain"]


@pytest.mark.parametrize("value", UNSENDABLE_VALUES + SENDABLE_VALUES)
@pytest.mark.parametrize("where", ["header", "default header", "stream header", "event stream header"])
def test_header_values_that_cannot_be_sent_raise_before_sending(servers, where, value):
    api, _ = servers
    default_headers = {"X-Team": value} if where == "default header" else None
    headers = None if where == "default header" else {"X-Trace": value}
    try:
        with Client(api_key=API_KEY, base_url=api.url, default_headers=default_headers) as client:
            if where == "stream header":
                with client.stream("GET", "/x", headers=headers) as response:
                    response.read()
            elif where == "event stream header":
                with contextlib.suppress(APIResponseValidationError):  # "ok" is no event stream
                    list(client.stream_get("/x", headers=headers, max_retries=0))
            else:
                client.get("/x", headers=headers, cast_to=bytes)
    except InvalidRequestError as exc:
        assert value in UNSENDABLE_VALUES, f"{value!r} was refused: {exc}"
        assert value not in str(exc)
        assert api.heads == []
    else:
        assert value in SENDABLE_VALUES, f"{value!r} was sent"
        assert api.heads


@pytest.mark.parametrize("key", ["tml-é", "tml-€uro", "tml-key\u00a0", "tml-“quoted”", "eyJ…"])
def test_an_api_key_no_header_can_carry_is_refused_when_the_client_is_built(key):
    with pytest.raises(TinkerError, match="Invalid API key"):
        Client(api_key=key, base_url="http://127.0.0.1:9")


def test_a_direct_pool_closed_since_is_looked_up_again():
    """The transport keeps each direct URL's pool: one its manager closed since (a cleared client,
    an evicted pool) is never used, the next request gets a live one."""
    with RecordingServer() as server:
        client = Client(api_key="tml-test-key", base_url=server.url, handshake=False, max_retries=0)
        try:
            url = f"{server.url}/x"
            for _ in range(2):
                assert client.get(url, cast_to=str) == "ok"
                client._transport.close()  # every pool closed: the kept one is dead
                assert client.get(url, cast_to=str) == "ok"
        finally:
            client.close()
    assert len(server.heads) == 4
