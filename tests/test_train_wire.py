"""The engine's hot path (``_train_wire``): the same requests as the client's generic path, over real sockets.

``asample`` and ``retrieve_future`` skip the client's generic stack when nothing
observes the client; these tests hold them to what the generic path sends and
raises: the same header names and values, the hooks seeing every request when there
are hooks, and a first ``asample`` attempt that fails as the client retries handed
to the client's retries with the same idempotency key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tinker_sync
from tinker_sync import BadRequestError, ServiceClient, types
from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._types import Fault, RecordedRequest

BASE = "Qwen/Qwen3-8B"
PROMPT = types.ModelInput.from_ints([1, 2, 3])
PARAMS = types.SamplingParams(max_tokens=4, seed=1)
HOT = ("/api/v1/asample", "/api/v1/retrieve_future")


@pytest.fixture
def server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as mock:
        yield mock


def service_for(server: MockTinkerServer, **client_options: Any) -> ServiceClient:
    client = tinker_sync.Client(api_key=server.api_key, base_url=server.url, max_retries=3, **client_options)
    return ServiceClient(client=client)


def hot_requests(server: MockTinkerServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.path in HOT]


def sample_once(server: MockTinkerServer, **client_options: Any) -> list[RecordedRequest]:
    service = service_for(server, **client_options)
    try:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.clear()
        result = sampler.sample(PROMPT, 2, PARAMS).result(30)
        assert len(result.sequences) == 2 and all(s.sequence_id for s in result.sequences)
    finally:
        service.close()
        service._client.close()
    return hot_requests(server)


def test_the_hot_path_sends_the_generic_paths_headers(server: MockTinkerServer) -> None:
    seen: list[str] = []
    generic = sample_once(server, event_hooks={"request": [lambda info: seen.append(info.url)]})
    fast = sample_once(server)
    assert [r.path for r in generic] == [r.path for r in fast] == list(HOT)
    assert sum(url.endswith(HOT) for url in seen) == 2  # with hooks: every hot request went past them
    for slow_one, fast_one in zip(generic, fast, strict=True):
        assert set(slow_one.headers) == set(fast_one.headers), slow_one.path
        for name, value in slow_one.headers.items():
            if name in ("x-idempotency-key", "content-length", "host"):
                continue
            assert fast_one.headers[name] == value, (slow_one.path, name)
        assert fast_one.json().keys() == slow_one.json().keys()
    keys = {r.headers["x-idempotency-key"] for r in generic + fast}
    assert len(keys) == 4  # a fresh key for every request


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(status=500), id="500"),
        pytest.param(Fault(status=503), id="503"),
        pytest.param(Fault(status=408), id="408"),
        pytest.param(Fault(reset_after=0), id="answer-cut"),
    ],
)
def test_a_failed_first_submission_is_retried_with_the_same_idempotency_key(
    server: MockTinkerServer, fault: Fault
) -> None:
    """(A 429 is the sample's backoff, not the client's retry: test_sampling_backoff.py.)"""
    server.script("/api/v1/asample", fault)
    requests = sample_once(server)
    sent = [r for r in requests if r.path == "/api/v1/asample"]
    assert len(sent) == 2
    assert sent[0].headers["x-idempotency-key"] == sent[1].headers["x-idempotency-key"]
    assert sent[0].body == sent[1].body


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_a_first_submission_refused_for_good_fails_the_future_at_once(
    server: MockTinkerServer, status: int
) -> None:
    server.script("/api/v1/asample", Fault(status=status))
    service = service_for(server)
    try:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        future = sampler.sample(PROMPT, 1, PARAMS)
        with pytest.raises(tinker_sync.APIStatusError) as caught:
            future.result(30)
        assert caught.value.status_code == status
        assert status != 400 or isinstance(caught.value, BadRequestError)
    finally:
        service.close()
        service._client.close()
    assert [r.path for r in hot_requests(server)] == ["/api/v1/asample"]


@pytest.mark.parametrize("observed", [False, True], ids=["hot", "generic"])
def test_a_jwt_refused_before_its_expiry_is_replayed_once_on_either_path(
    server: MockTinkerServer, observed: bool
) -> None:
    server.client_config["pjwt_auth_enabled"] = True
    hooks = {"request": [lambda info: None]} if observed else {}
    service = service_for(server, event_hooks=hooks)
    try:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        assert sampler.sample(PROMPT, 1, PARAMS).result(30).sequences
        server.revoke_tokens()  # the JWT in the hot path's header template is refused from now on
        server.clear()
        assert sampler.sample(PROMPT, 2, PARAMS).result(30).sequences
    finally:
        service.close()
        service._client.close()
    sent = [r for r in server.requests if r.path == "/api/v1/asample"]
    assert len(sent) == 2  # the refused one, then one replay with a new JWT
    assert sent[0].headers["x-idempotency-key"] == sent[1].headers["x-idempotency-key"]
    assert [r.path for r in server.requests].count("/api/v1/auth/token") == 1


@pytest.mark.parametrize("observed", [False, True], ids=["hot", "generic"])
def test_a_result_over_max_response_size_is_refused_on_either_path(
    server: MockTinkerServer, observed: bool
) -> None:
    hooks = {"request": [lambda info: None]} if observed else {}
    service = service_for(server, event_hooks=hooks)
    try:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        service._client.max_response_size = 200  # a handle fits; a result of 16 sequences does not
        with pytest.raises(tinker_sync.ResponseTooLargeError, match="max_response_size"):
            sampler.sample(PROMPT, 16, types.SamplingParams(max_tokens=32, seed=1)).result(30)
    finally:
        service.close()
        service._client.close()


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([{"Accept": "application/x-protobuf"}], {"Accept": "application/x-protobuf", "X-API-Key": "k"}),
        ([{"accept": "a/b"}], {"accept": "a/b", "X-API-Key": "k"}),  # one Accept, the layer's spelling
        ([{"ACCEPT": "a/b"}, {"Accept": "c/d"}], {"Accept": "c/d", "X-API-Key": "k"}),
        ([{"X-New": "1"}, {"x-new": "2"}], {"Accept": "application/json", "X-API-Key": "k", "x-new": "2"}),
        ([], {"Accept": "application/json", "X-API-Key": "k"}),
    ],
)
def test_the_hot_paths_headers_merge_as_headers_do(layers, expected) -> None:
    """The hot path's plain dict of headers: a later name wins whatever its case, never two of one."""
    from tinker_sync._train_wire import _merged

    template = {"Accept": "application/json", "X-API-Key": "k"}
    names = {name.lower(): name for name in template}
    merged = _merged(template, names, *layers)
    assert merged == expected
    assert template == {"Accept": "application/json", "X-API-Key": "k"}  # the template is never changed


def test_idempotency_keys_are_uuid4s_unique_and_fresh_in_a_forked_child(server: MockTinkerServer) -> None:
    """``new_key`` (two a sample) is a uuid4: 20,000 keys all parse as version 4, RFC 4122 variant,
    written as ``str(UUID)`` writes them, none repeated; a forked child
    draws keys its parent never does (os.urandom, no state copied at the fork); and the keys that
    went out on the wire for samples are such keys, one per request."""
    import os
    import uuid

    from tinker_sync._train_wire import new_key

    keys = [new_key() for _ in range(20_000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        parsed = uuid.UUID(key)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, key)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its keys to the pipe, then out without running the parent's teardown
        try:
            os.write(write, "\n".join(new_key() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split("\n")
    os.waitpid(pid, 0)
    parent = [new_key() for _ in range(100)]
    assert len(child) == 100 and not set(child) & set(parent) and not set(child) & set(keys)
    with service_for(server) as service:
        sampler = service.create_sampling_client(base_model=BASE).result()
        for future in [sampler.sample(PROMPT, 1, PARAMS) for _ in range(5)]:
            future.result()
    sent = [r.headers["x-idempotency-key"] for r in hot_requests(server)]
    assert len(sent) >= 10 and len(set(sent)) == len(sent)
    assert all(uuid.UUID(key).version == 4 for key in sent)
