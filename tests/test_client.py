"""Client: configuration, headers, plain calls, lazy event streams and the origin rule."""

from __future__ import annotations

import gc
import uuid

import msgspec
import pytest

import tinker_sync
from tinker_sync import (
    APIResponseValidationError,
    Client,
    EventStream,
    ServerSentEvent,
    StreamAlreadyConsumed,
    TinkerError,
)
from tinker_sync._config import DEFAULT_BASE_URL
from tinker_sync.testing import Fault, MockTinkerServer

# Tests that reach the SSE decoder run once per twin (py, cython): they ask for ``sse_implementation``.

API_KEY = "tml-test-key"
ENV = ("TINKER_API_KEY", "TINKER_BASE_URL", "CLOUDFLARE_ACCESS_CLIENT_ID", "CLOUDFLARE_ACCESS_CLIENT_SECRET")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


class Item(msgspec.Struct):
    index: int
    payload: str


class Health(msgspec.Struct):
    status: str


# -- configuration -------------------------------------------------------------------------------


def test_api_key_argument_and_env(monkeypatch):
    assert Client(api_key="tml-abc", base_url="http://x").api_key == "tml-abc"
    monkeypatch.setenv("TINKER_API_KEY", "tml-from-env")
    assert Client(base_url="http://x").api_key == "tml-from-env"
    assert Client(api_key="eyJhbGciOi", base_url="http://x").api_key == "eyJhbGciOi"  # a JWT
    assert Client(api_key="tml-arg", base_url="http://x").api_key == "tml-arg"  # argument wins


@pytest.mark.parametrize("env_value", [None, ""])
def test_missing_api_key_is_a_clear_error(monkeypatch, env_value):
    if env_value is not None:
        monkeypatch.setenv("TINKER_API_KEY", env_value)
    with pytest.raises(TinkerError, match="TINKER_API_KEY"):
        Client(base_url="http://x")


@pytest.mark.parametrize("key", ["sk-123", "abc", "TML-upper", "bearer tml-x"])
def test_bad_api_key_format_raises_before_any_request(tinker_server, key):
    with pytest.raises(TinkerError, match="tml-"):
        Client(api_key=key, base_url=tinker_server.url)
    assert tinker_server.requests == []
    assert tinker_server.connections == 0


@pytest.mark.parametrize("key", ["tml-abc\n", "tml-a b", "tml-abc\r\nX-Evil: 1", "tml-\x1b[0m"])
def test_api_key_with_whitespace_or_control_chars_rejected(tinker_server, monkeypatch, key):
    with pytest.raises(TinkerError, match="whitespace or control") as info:
        Client(api_key=key, base_url=tinker_server.url)
    assert key not in str(info.value)
    monkeypatch.setenv("TINKER_API_KEY", key)
    with pytest.raises(TinkerError, match="whitespace or control"):
        Client(base_url=tinker_server.url)
    assert tinker_server.connections == 0


def test_bad_key_message_does_not_leak_the_key():
    with pytest.raises(TinkerError) as info:
        Client(api_key="sk-secret-value-123", base_url="http://x")
    assert "secret-value" not in str(info.value)


def test_base_url_argument_env_default(monkeypatch):
    assert Client(api_key=API_KEY).base_url == DEFAULT_BASE_URL
    monkeypatch.setenv("TINKER_BASE_URL", "http://env.example:81/base/")
    assert Client(api_key=API_KEY).base_url == "http://env.example:81/base"
    assert Client(api_key=API_KEY, base_url="http://arg.example/").base_url == "http://arg.example"
    monkeypatch.setenv("TINKER_BASE_URL", "")
    assert Client(api_key=API_KEY).base_url == DEFAULT_BASE_URL


def test_base_url_with_path_and_trailing_slash(tinker_server):
    with Client(api_key=API_KEY, base_url=tinker_server.url + "/api/v1/") as c:
        assert c.get("healthz") == {"status": "ok"}
        assert c.get("/healthz") == {"status": "ok"}
    assert [r.path for r in tinker_server.requests] == ["/api/v1/healthz", "/api/v1/healthz"]


# -- headers -------------------------------------------------------------------------------------


def test_default_headers_on_get(client, tinker_server):
    echo = client.get("/test/echo")
    headers = echo["headers"]
    assert headers["x-api-key"] == API_KEY
    assert headers["user-agent"].startswith("tinker-sync/")
    assert headers["accept"] == "application/json"
    assert "content-type" not in headers
    assert "x-idempotency-key" not in headers  # GET carries none
    assert headers["x-stainless-retry-count"] == "0"
    assert "cf-access-client-id" not in headers


def test_json_body_headers_and_cloudflare(tinker_server, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-id")
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cf-secret")
    with Client(api_key=API_KEY, base_url=tinker_server.url, default_headers={"X-Extra": "1"}) as c:
        echo = c.post("/test/echo", json={"a": 1})
    headers = echo["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["cf-access-client-id"] == "cf-id"
    assert headers["cf-access-client-secret"] == "cf-secret"
    assert headers["x-extra"] == "1"
    assert msgspec.json.decode(echo["body"]) == {"a": 1}
    uuid.UUID(headers["x-idempotency-key"])  # a uuid


def test_idempotency_key_same_across_retries(client, tinker_server, waits):
    tinker_server.script("/test/echo", Fault(status=503), Fault(status=503))
    client.post("/test/echo", json={})
    keys = [r.headers["x-idempotency-key"] for r in tinker_server.requests]
    counts = [r.headers["x-stainless-retry-count"] for r in tinker_server.requests]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert counts == ["0", "1", "2"]
    assert len(waits) == 2


def test_idempotency_key_fresh_per_request_and_callers_kept(client, tinker_server):
    client.post("/test/echo", json={})
    client.delete("/test/echo")
    client.put("/test/echo", json={}, headers={"x-idempotency-key": "mine"})
    keys = [r.headers.get("x-idempotency-key") for r in tinker_server.requests]
    assert keys[0] != keys[1] and None not in keys
    assert keys[2] == "mine"


def test_caller_headers_win(client):
    echo = client.get("/test/echo", headers={"Accept": "text/plain", "X-Trace": "t1"})
    assert echo["headers"]["accept"] == "text/plain"
    assert echo["headers"]["x-trace"] == "t1"


# -- plain calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_plain_methods(client, tinker_server, method):
    kwargs = {"params": {"a": "1", "b": ["x", "y"], "skip": None}}
    if method != "get":
        kwargs["json"] = {"m": method}
    echo = getattr(client, method)("/test/echo", **kwargs)
    assert echo["method"] == method.upper()
    recorded = tinker_server.requests[-1]
    assert recorded.method == method.upper()
    assert recorded.query == {"a": "1", "b": "y"}  # last value kept by the recorder
    assert "skip" not in recorded.query
    if method != "get":
        assert recorded.json() == {"m": method}
    else:
        assert recorded.body == b""


def test_cast_to_struct_and_dict(client):
    assert client.get("/api/v1/healthz", cast_to=Health) == Health(status="ok")
    assert client.get("/api/v1/healthz", cast_to=dict) == {"status": "ok"}
    assert client.get("/api/v1/healthz", cast_to=bytes) == b'{"status":"ok"}'


def test_cast_to_mismatch_keeps_msgspec_path(client):
    class Wrong(msgspec.Struct):
        status: int

    with pytest.raises(APIResponseValidationError) as info:
        client.get("/api/v1/healthz", cast_to=Wrong)
    assert "$.status" in str(info.value)
    assert info.value.status_code == 200
    assert isinstance(info.value.__cause__, msgspec.ValidationError)


def test_invalid_json_body_is_validation_error(client):
    # /test/sse-raw answers text/event-stream: content type not JSON -> text
    assert client.request("POST", "/test/sse-raw", content=b"not json") == "not json"
    with pytest.raises(APIResponseValidationError, match="not valid JSON"):
        client.request("POST", "/test/sse-raw?content_type=application/json", content=b"{bad")


# -- lazy event streams --------------------------------------------------------------------------


def test_event_stream_is_lazy(client, tinker_server, sse_implementation):
    stream = client.stream_get("/test/sse?count=3")
    assert isinstance(stream, EventStream)
    assert stream.response is None
    assert tinker_server.requests == [] and tinker_server.connections == 0
    first = next(stream)
    assert isinstance(first, ServerSentEvent)
    assert first.json()["index"] == 0
    assert len(tinker_server.requests) == 1
    assert stream.response is not None and stream.response.status_code == 200
    assert [e.json()["index"] for e in stream] == [1, 2]
    assert stream.response.is_closed


def test_event_stream_with_entry_sends(client, tinker_server, sse_implementation):
    stream = client.stream_post("/test/sse?count=2", json={"x": 1})
    assert tinker_server.requests == []
    with stream as s:
        assert len(tinker_server.requests) == 1
        assert s.response.headers["content-type"] == "text/event-stream"
        assert [e.json()["index"] for e in s] == [0, 1]
    assert len(tinker_server.requests) == 1
    assert stream.response.is_closed


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_stream_every_method(client, tinker_server, method, sse_implementation):
    kwargs = {"params": {"count": "4", "tag": "t"}}
    if method != "get":
        kwargs["json"] = {"m": method}
    stream = getattr(client, f"stream_{method}")("/test/sse", cast_to=Item, **kwargs)
    items = list(stream)
    assert [i.index for i in items] == [0, 1, 2, 3]
    assert all(isinstance(i, Item) for i in items)
    recorded = tinker_server.requests[-1]
    assert recorded.method == method.upper()
    assert recorded.query == {"count": "4", "tag": "t"}
    assert recorded.headers["accept"] == "text/event-stream"
    if method != "get":
        assert recorded.json() == {"m": method}
        assert recorded.headers["content-type"] == "application/json"
        uuid.UUID(recorded.headers["x-idempotency-key"])


def test_stream_second_iteration_raises(client, sse_implementation):
    stream = client.stream_get("/test/sse?count=2")
    assert len(list(stream)) == 2
    assert list(stream) == []  # the same exhausted iterator
    with pytest.raises(StreamAlreadyConsumed):
        stream.response.read()


def test_closed_stream_cannot_be_iterated(client, tinker_server, sse_implementation):
    stream = client.stream_get("/test/sse?count=2")
    stream.close()
    with pytest.raises(StreamAlreadyConsumed):
        next(stream)
    assert tinker_server.requests == []


def test_close_mid_stream_discards(client, tinker_server, sse_implementation):
    stream = client.stream_get("/test/sse?count=1000&delay=0.001")
    next(stream)
    response = stream.response
    stream.close()
    assert response.is_closed
    with pytest.raises(StopIteration):
        next(stream)
    # the next request works (on a new connection)
    assert client.get("/api/v1/healthz") == {"status": "ok"}
    assert tinker_server.connections == 2


def test_break_releases(client, tinker_server, sse_implementation):
    stream = client.stream_get("/test/sse?count=1000&delay=0.001")
    for _event in stream:
        break
    response = stream.response
    stream.close()
    assert response.is_closed


def test_exception_in_loop_closes(client, sse_implementation):
    stream = client.stream_get("/test/sse?count=1000&delay=0.001")
    with pytest.raises(RuntimeError):
        with stream:
            for _event in stream:
                raise RuntimeError("boom")
    assert stream.response.is_closed


def test_del_mid_way_closes_connection(client, tinker_server, sse_implementation):
    stream = client.stream_get("/test/sse?count=100000&delay=0.001")
    next(stream)
    raw = stream.response._body.raw
    response = stream.response
    del stream
    gc.collect()
    assert response.is_closed
    assert raw.closed


def test_exhaustion_releases_to_pool(client, tinker_server, sse_implementation):
    list(client.stream_get("/test/sse?count=5"))
    list(client.stream_get("/test/sse?count=5"))
    assert tinker_server.connections == 1


# -- origin --------------------------------------------------------------------------------------


def test_api_key_never_sent_to_another_origin(client, tinker_server, monkeypatch, sse_implementation):
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-id")
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cf-secret")
    with MockTinkerServer(api_key=API_KEY) as other:
        assert other.port != tinker_server.port
        echo = client.get(other.url + "/test/echo")
        post = client.post(other.url + "/test/echo", json={"a": 1})
        with client.stream("GET", other.url + "/test/bytes?size=10") as response:
            assert response.read()
        list(client.stream_get(other.url + "/test/sse?count=1"))
        for recorded in other.requests:
            assert "x-api-key" not in recorded.headers
            assert "cf-access-client-id" not in recorded.headers
            assert "cf-access-client-secret" not in recorded.headers
            assert "x-idempotency-key" not in recorded.headers
        assert len(other.requests) == 4
    assert "x-api-key" not in echo["headers"]
    assert post["headers"]["content-type"] == "application/json"
    # same host, same port: the API's origin, key sent
    assert client.get(tinker_server.url + "/test/echo")["headers"]["x-api-key"] == API_KEY


def test_with_options_shares_pool(client, tinker_server):
    other = client.with_options(max_retries=0, timeout=3)
    assert other.max_retries == 0 and client.max_retries == 10
    assert other.timeout.read == 3
    assert other._transport is client._transport
    client.get("/api/v1/healthz")
    other.get("/api/v1/healthz")
    assert tinker_server.connections == 1


def test_repr_has_no_key(client):
    assert API_KEY not in repr(client)
    assert tinker_sync.Client.__doc__
