"""Per-call overrides on every API method (and its raw and streaming views), ``RequestOptions``,
and ``with_options`` sharing the pools: what reaches the wire, checked on the mock server's record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import tinker_sync
from tinker_sync import APITimeoutError, Client, InternalServerError, Timeout
from tinker_sync._options import RequestOptions
from tinker_sync.testing import Fault, MockTinkerServer
from tinker_sync.types import SamplingParams

API_KEY = "tml-test-key"
PARAMS = SamplingParams(max_tokens=2)
HEADERS = {"X-Trace-Id": "trace-1", "X-Stainless-Lang": "override"}
QUERY = {"trace": "q1"}

# (id, the API path its request goes to, the call with per-call overrides, an extra_body for it:
# a field of the API's body the method does not set itself, the server checking the shape)
Call = Callable[..., Any]
METHODS: list[tuple[str, str, Callable[[Any], Call], dict[str, Any] | None]] = [
    ("health.check", "/api/v1/healthz", lambda r: r.health.check, None),
    ("server.capabilities", "/api/v1/get_server_capabilities", lambda r: r.server.capabilities, None),
    ("training_runs.list", "/api/v1/training_runs", lambda r: r.training_runs.list, None),
    (
        "training_runs.get",
        "/api/v1/training_runs/run-001",
        lambda r: lambda **o: r.training_runs.get("run-001", **o),
        None,
    ),
    ("sessions.list", "/api/v1/sessions", lambda r: r.sessions.list, None),
    (
        "sessions.get",
        "/api/v1/sessions/session-001",
        lambda r: lambda **o: r.sessions.get("session-001", **o),
        None,
    ),
    (
        "sampling.sample",
        "/api/v1/asample",
        lambda r: (
            lambda **o: r.sampling.sample([1, 2], sampling_params=PARAMS, base_model="Qwen/Qwen3-8B", **o)
        ),
        {"topk_prompt_logprobs": 2},
    ),
    (
        "sampling.stream_sample",
        "/api/v1/stream_sample",
        lambda r: lambda **o: r.sampling.stream_sample("Hi", max_tokens=2, **o),
        {"num_samples": 1},
    ),
]


@pytest.fixture
def demo():
    with MockTinkerServer(demo_data=True) as server:
        yield server


def _consume(result: Any) -> None:
    """Finish the call: a lazy stream is iterated, a raw response parsed, a streaming view entered."""
    if isinstance(result, tinker_sync.EventStream):
        list(result)
    elif isinstance(result, tinker_sync.ResponseContextManager):
        with result as response:
            response.parse()
    elif isinstance(result, tinker_sync.APIResponse):
        result.parse()


@pytest.mark.parametrize("view", ["plain", "raw", "streaming"])
@pytest.mark.parametrize(("path", "method", "body"), [m[1:] for m in METHODS], ids=[m[0] for m in METHODS])
def test_extra_headers_query_and_body_reach_the_wire(demo, view, path, method, body):
    with Client(api_key=demo.api_key, base_url=demo.url) as client:
        resources = {
            "plain": client,
            "raw": client.with_raw_response,
            "streaming": client.with_streaming_response,
        }[view]
        overrides: dict[str, Any] = {"extra_headers": HEADERS, "extra_query": QUERY}
        if body:
            overrides["extra_body"] = body
        _consume(method(resources)(**overrides))
    sent = [r for r in demo.requests if r.path == path]
    assert len(sent) == 1, [r.path for r in demo.requests]
    request = sent[0]
    assert request.headers["x-trace-id"] == "trace-1"
    assert request.headers["x-stainless-lang"] == "override"  # the caller's value wins
    assert request.headers["x-api-key"] == demo.api_key
    assert request.query["trace"] == "q1"
    if body:
        sent_body = request.json()
        assert {k: sent_body[k] for k in body} == body
        assert "prompt" in sent_body  # merged into the method's own body
    assert demo.violations == []


W = "tinker://run-002/weights/step-0100"
CK = "/api/v1/training_runs/run-002/checkpoints/weights/step-0100"
CHECKPOINT_METHODS: list[tuple[str, str, str, Callable[[Any], Call]]] = [
    ("checkpoints.list", "GET", "/api/v1/checkpoints", lambda r: r.checkpoints.list),
    (
        "checkpoints.list-run",
        "GET",
        "/api/v1/training_runs/run-002/checkpoints",
        lambda r: lambda **o: r.checkpoints.list("run-002", **o),
    ),
    (
        "checkpoints.list_for_run",
        "GET",
        "/api/v1/training_runs/run-002/checkpoints",
        lambda r: lambda **o: r.checkpoints.list_for_run("run-002", **o),
    ),
    (
        "checkpoints.get",
        "GET",
        "/api/v1/training_runs/run-002/checkpoints",
        lambda r: lambda **o: r.checkpoints.get(W, **o),
    ),
    ("checkpoints.delete", "DELETE", CK, lambda r: lambda **o: r.checkpoints.delete(W, **o)),
    ("checkpoints.publish", "POST", CK + "/publish", lambda r: lambda **o: r.checkpoints.publish(W, **o)),
    ("checkpoints.set_ttl", "PUT", CK + "/ttl", lambda r: lambda **o: r.checkpoints.set_ttl(W, 7200, **o)),
    (
        "checkpoints.archive_url",
        "GET",
        CK + "/archive",
        lambda r: lambda **o: r.checkpoints.archive_url(W, **o),
    ),
    (
        "checkpoints.external_weights_urls",
        "GET",
        "/api/v1/training_runs/run-001/checkpoints/external_weights/hf-export/external_weights_urls",
        lambda r: (
            lambda **o: r.checkpoints.external_weights_urls(
                "tinker://run-001/external_weights/hf-export", **o
            )
        ),
    ),
    ("checkpoints.archive", "GET", CK + "/archive", lambda r: lambda **o: r.checkpoints.archive(W, **o)),
]


@pytest.mark.parametrize("view", ["plain", "raw", "streaming"])
@pytest.mark.parametrize(
    ("method", "path", "call"), [m[1:] for m in CHECKPOINT_METHODS], ids=[m[0] for m in CHECKPOINT_METHODS]
)
def test_checkpoint_methods_take_the_overrides(demo, view, method, path, call):
    with Client(api_key=demo.api_key, base_url=demo.url, max_retries=0) as client:
        resources = {
            "plain": client,
            "raw": client.with_raw_response,
            "streaming": client.with_streaming_response,
        }
        _consume(call(resources[view])(extra_headers=HEADERS, extra_query=QUERY, timeout=30, max_retries=1))
    sent = [r for r in demo.requests if r.path == path and r.method == method]
    assert len(sent) == 1, [(r.method, r.path) for r in demo.requests]
    assert sent[0].headers["x-trace-id"] == "trace-1" and sent[0].query["trace"] == "q1"
    assert sent[0].headers["x-api-key"] == demo.api_key
    for other in demo.requests:  # a signed URL's fetch carries neither the key nor the caller's headers
        if "x-api-key" not in other.headers:
            assert "x-trace-id" not in other.headers
    assert demo.violations == []


def test_checkpoint_ttl_takes_extra_body(demo):
    with Client(api_key=demo.api_key, base_url=demo.url) as client:
        client.checkpoints.set_ttl(W, 7200, extra_body={"ttl_seconds": 3600})
    assert demo.requests[-1].json() == {"ttl_seconds": 3600}  # extra_body wins over the method's own


def test_extra_query_wins_over_the_methods_own_parameters(demo):
    with Client(api_key=demo.api_key, base_url=demo.url) as client:
        page = client.training_runs.list(limit=20, extra_query={"limit": "3"})
    assert demo.requests[-1].query["limit"] == "3"
    assert len(page.training_runs) == 3


def test_overrides_reach_every_poll_of_a_future(client, tinker_server):
    tinker_server.add_future("f-1", {"type": "try_again"}, {"type": "try_again"}, {"answer": 42})
    got = client.futures.retrieve("f-1", cast_to=dict, extra_headers=HEADERS, extra_query=QUERY)
    assert got == {"answer": 42}
    polls = [r for r in tinker_server.requests if r.path == "/api/v1/retrieve_future"]
    assert len(polls) == 3
    for poll in polls:
        assert poll.headers["x-trace-id"] == "trace-1" and poll.query == QUERY
        assert poll.json() == {"request_id": "f-1"}


def test_iter_passes_overrides_to_every_page(demo):
    with Client(api_key=demo.api_key, base_url=demo.url) as client:
        runs = list(client.training_runs.iter(limit=20, extra_headers=HEADERS))
    pages = [r for r in demo.requests if r.path == "/api/v1/training_runs"]
    assert len(runs) == 45 and len(pages) == 3
    assert all(page.headers["x-trace-id"] == "trace-1" for page in pages)


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_max_retries_per_call(tinker_server, max_retries):
    tinker_server.script("/api/v1/healthz", *[Fault(status=503)] * 5)
    waits: list[float] = []
    with Client(api_key=API_KEY, base_url=tinker_server.url, max_retries=10, sleep=waits.append) as client:
        with pytest.raises(InternalServerError):
            client.health.check(max_retries=max_retries)
    assert [r.path for r in tinker_server.requests].count("/api/v1/healthz") == max_retries + 1
    assert len(waits) == max_retries  # the handshake before it went at once


@pytest.mark.parametrize("timeout", [0.2, Timeout(connect=5, read=0.2)])
@pytest.mark.parametrize("view", ["plain", "raw", "streaming"])
def test_timeout_per_call_on_a_method_and_its_views(tinker_server, timeout, view):
    # The client waits a minute for a head; this call only a fraction of a second.
    tinker_server.script("/api/v1/training_runs", Fault(delay_headers=30))
    with Client(api_key=API_KEY, base_url=tinker_server.url, timeout=60, max_retries=0) as client:
        resources = {
            "plain": client,
            "raw": client.with_raw_response,
            "streaming": client.with_streaming_response,
        }
        with pytest.raises(APITimeoutError):
            _consume(resources[view].training_runs.list(timeout=timeout))


def test_unknown_override_is_a_type_error(client):
    with pytest.raises(TypeError, match="extra_heders"):
        client.health.check(extra_heders={"a": "b"})  # type: ignore[call-arg]


def test_extra_body_needs_a_json_object():
    options = RequestOptions("POST", "/x", json=[1, 2])
    with pytest.raises(TypeError, match="JSON object"):
        options.overridden({"extra_body": {"a": 1}})


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_extra_body_is_refused_without_a_body_method(client, tinker_server, method):
    with pytest.raises(TypeError, match="extra_body is for POST, PUT and PATCH"):
        RequestOptions(method, "/x").overridden({"extra_body": {"a": 1}})
    with pytest.raises(TypeError, match="extra_body"):
        client.health.check(extra_body={"a": 1})  # type: ignore[call-arg]
    assert tinker_server.requests == []


def test_request_options_are_frozen_and_fold_overrides_once():
    options = RequestOptions("post", "/x", params={"a": 1}, headers={"H": "1"}, json={"k": 1})
    assert options.method == "POST"
    with pytest.raises(AttributeError):
        options.url = "/y"  # type: ignore[misc]
    merged = options.overridden(
        {"extra_headers": {"H": "2", "I": "3"}, "extra_query": {"b": 2}, "extra_body": {"k": 2}, "timeout": 4}
    )
    assert merged.headers == {"H": "2", "I": "3"} and merged.params == {"a": 1, "b": 2}
    assert merged.json == {"k": 2} and merged.timeout == 4
    assert options.headers == {"H": "1"} and options.json == {"k": 1}  # the original is unchanged
    assert options.overridden({"timeout": None, "extra_headers": None}) is options


# -- with_options ---------------------------------------------------------------------------------


def test_with_options_default_headers_timeout_and_retries(client, tinker_server):
    other = client.with_options(
        default_headers={"X-Team": "a"}, timeout=Timeout(connect=1, read=2), max_retries=2
    )
    assert isinstance(other, Client)
    assert other.timeout == Timeout(connect=1, read=2) and other.max_retries == 2
    assert client.timeout != other.timeout and client.max_retries == 10
    other.health.check()
    client.health.check()
    mine, theirs = tinker_server.requests[-2:]
    assert mine.headers["x-team"] == "a"
    assert "x-team" not in theirs.headers


def test_with_options_headers_merge_over_the_clients(tinker_server):
    with Client(
        api_key=API_KEY, base_url=tinker_server.url, default_headers={"X-A": "1", "X-B": "1"}
    ) as client:
        other = client.with_options(default_headers={"X-B": "2"})
        other.get("/api/v1/healthz")
        assert other.default_headers["X-A"] == "1" and other.default_headers["X-B"] == "2"
        assert client.default_headers["X-B"] == "1"
    sent = tinker_server.requests[-1].headers
    assert sent["x-a"] == "1" and sent["x-b"] == "2"


def test_with_options_refuses_a_bad_header(client):
    with pytest.raises(tinker_sync.InvalidRequestError):
        client.with_options(default_headers={"X-Bad": "a\r\nInjected: 1"})


def test_copy_is_with_options(client):
    assert Client.copy is Client.with_options
    assert client.copy(max_retries=4).max_retries == 4


def test_with_options_shares_the_pools_and_their_connections(client, tinker_server):
    copies = [client.with_options(max_retries=n) for n in range(3)] + [client.copy(timeout=9)]
    assert all(c._transport is client._transport for c in copies)
    for c in (client, *copies):
        c.health.check()
    assert tinker_server.connections == 1  # one keep-alive connection served every copy
    assert client._transport.pool_stats(tinker_server.url)["idle"] == 1
    copies[0].with_raw_response.health.check()
    assert tinker_server.connections == 1
