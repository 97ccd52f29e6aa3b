"""A 429 (or 402) from asample backs the whole holder off and re-sends the same request; for a while
after, dispatch is throttled (10 sends at once, each counting 20 times its bytes). Seen by what the
mock receives and holds, never by the clock: the durations are stretched or shrunk per test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import tinker_sync
from tinker_sync import ServiceClient, types
from tinker_sync._sampling_holder import (
    BACKOFF,
    BACKOFF_STEP,
    LARGE_BACKOFF,
    LARGE_PROMPT,
    SAMPLE_SENDS,
    THROTTLE_BYTES,
    THROTTLE_FOR,
    THROTTLED_SENDS,
    SampleDispatch,
)
from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._types import Fault

BASE = "Qwen/Qwen3-8B"
PARAMS = types.SamplingParams(max_tokens=2, seed=3)


@pytest.fixture
def server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as mock:
        yield mock


def test_the_official_sdks_numbers() -> None:
    """internal_client_holder.py 306-308, 528-562 and sampling_client.py 374-420 of tinker 0.38.0."""
    assert (SAMPLE_SENDS, THROTTLED_SENDS, THROTTLE_BYTES, THROTTLE_FOR) == (400, 10, 20, 10.0)
    assert (BACKOFF, LARGE_BACKOFF, LARGE_PROMPT, BACKOFF_STEP) == (1.0, 5.0, 128 * 1024, 1.0)
    dispatch = SampleDispatch(100)
    assert not dispatch.throttled() and dispatch.backoff_until is None


def asamples(server: MockTinkerServer) -> list[dict[str, object]]:
    return [r.json() for r in server.requests if r.path == "/api/v1/asample"]


@pytest.mark.parametrize(("status", "count"), [(429, 1), (429, 3), (402, 1), (402, 2)])
def test_a_refused_sample_backs_off_and_sends_the_same_request_again(
    server: MockTinkerServer, status: int, count: int
) -> None:
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        dispatch = service._sample_dispatch
        dispatch.backoff = dispatch.step = 0.01
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        prompt = types.ModelInput.from_ints([5, 6, 7])
        expected = sampler.sample(prompt, 2, PARAMS).result(30)
        setattr(server.training, f"sample_{status}s", count)
        got = sampler.sample(prompt, 2, PARAMS).result(30)
    assert [s.tokens for s in got.sequences] == [s.tokens for s in expected.sequences]
    sent = asamples(server)
    assert len(sent) == 1 + count + 1 and dispatch.backoffs == count
    assert [body["seq_id"] for body in sent] == [0] + [1] * (count + 1)  # the same request, again
    assert all(body == {**sent[1], "seq_id": 1} for body in sent[1:])
    refused = [r for r in server.requests if r.path == "/api/v1/asample"][1:-1]
    assert all(r.headers["x-tinker-sampling-backpressure"] == "1" for r in refused)


@pytest.mark.parametrize("hooks", [False, True], ids=["hot", "generic"])
def test_a_429_on_either_path_is_the_samples_backoff_not_the_clients_retry(
    server: MockTinkerServer, hooks: bool
) -> None:
    """Moved here from test_train_wire's retried-submission table: as the official SDK (asample with
    max_retries=0, then the holder's backoff), the same body goes again as a new request (a new
    idempotency key), once the backoff ends; the client's own retries never see the 429."""
    seen: list[str] = []
    options: dict[str, Any] = (
        {"event_hooks": {"request": [lambda info: seen.append(info.url)]}} if hooks else {}
    )
    client = tinker_sync.Client(api_key=server.api_key, base_url=server.url, max_retries=3, **options)
    with client, ServiceClient(client=client) as service:
        service._sample_dispatch.backoff = service._sample_dispatch.step = 0.01
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.script("/api/v1/asample", Fault(status=429, retry_after=0))
        assert len(sampler.sample(types.ModelInput.from_ints([1, 2, 3]), 2, PARAMS).result(30).sequences) == 2
        assert service._sample_dispatch.backoffs == 1
    sent = [r for r in server.requests if r.path == "/api/v1/asample"]
    assert len(sent) == 2 and sent[0].body == sent[1].body
    assert sent[0].headers["x-idempotency-key"] != sent[1].headers["x-idempotency-key"]
    assert not hooks or sum(url.endswith("/asample") for url in seen) == 2


def test_a_402_past_the_billing_pause_fails_the_sample(server: MockTinkerServer) -> None:
    server.client_config["billing_exception_max_pause_duration_sec"] = 0
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        service._sample_dispatch.backoff = service._sample_dispatch.step = 0.01
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.training.sample_402s = 5
        prompt = types.ModelInput.from_ints([5, 6, 7])
        with pytest.raises(Exception) as info:
            sampler.sample(prompt, 1, PARAMS).result(30)
    assert getattr(info.value, "status_code", None) == 402
    assert len(asamples(server)) == 2 and server.training.sample_402s == 3  # paused once, then gave up


@pytest.mark.parametrize(
    ("tokens", "large"), [(3, False), (LARGE_PROMPT // 10, False), (LARGE_PROMPT // 10 + 1, True)]
)
def test_a_prompt_over_128_kib_backs_off_longer(server: MockTinkerServer, tokens: int, large: bool) -> None:
    """The pause that applies is the one shrunk to nothing: the other is an hour, which would hang."""
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        dispatch = service._sample_dispatch
        dispatch.step = 0.01
        dispatch.backoff, dispatch.large_backoff = (3600.0, 0.0) if large else (0.0, 3600.0)
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.training.sample_429s = 1
        prompt = types.ModelInput.from_ints(list(range(tokens)))
        assert sampler.sample(prompt, 1, PARAMS).result(60).sequences
    assert dispatch.backoffs == 1 and len(asamples(server)) == 2


def held_and_waiting(server: MockTinkerServer, budget: int | None, throttled: bool) -> tuple[int, int, int]:
    """After one 429, hold 30 samples' asample at the mock: (held there, waiting in the client, most held)."""
    if budget is not None:
        server.client_config["sample_dispatch_bytes_semaphore_size"] = budget
    n = 30
    with ServiceClient(api_key=server.api_key, base_url=server.url, submit_workers=n + 2) as service:
        service._engine.pace.floor = n + 2  # every sample may be sent at once: the dispatch limits them
        dispatch = service._sample_dispatch
        dispatch.backoff = dispatch.step = 0.0
        dispatch.throttle_for = 3600.0 if throttled else 0.0
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.training.sample_429s = 1
        prompt = types.ModelInput.from_ints(list(range(10)))  # 100 bytes as the dispatch counts
        assert sampler.sample(prompt, 1, PARAMS).result(30).sequences and dispatch.backoffs == 1
        assert dispatch.throttled() is throttled
        gate = server.training.sample_gate = threading.Event()
        try:
            futures = [sampler.sample(prompt, 1, PARAMS) for _ in range(n)]
            deadline = time.monotonic() + 60
            while server.training.sample_in_flight + dispatch.waiting < n and time.monotonic() < deadline:
                server.training.wait_samples_held(n, 0.05)  # every send is at the mock or waiting its turn
            held, waiting = server.training.sample_in_flight, dispatch.waiting
        finally:
            gate.set()
        assert all(f.result(60).sequences for f in futures)
    return held, waiting, server.training.sample_most_in_flight


@pytest.mark.parametrize(
    ("budget", "throttled", "held"),
    [
        (None, True, THROTTLED_SENDS),  # 10 slots while throttled
        (None, False, 30),  # else every one at once (within 400 and 10 MiB)
        (2000, True, 2),  # 100 bytes count 2,000: one takes the budget, a second overdraws it
        (2000, False, 21),  # 100 bytes each: 20 fill the budget, a 21st overdraws it
    ],
)
def test_after_a_backoff_dispatch_is_throttled(
    server: MockTinkerServer, budget: int | None, throttled: bool, held: int
) -> None:
    assert held_and_waiting(server, budget, throttled) == (held, 30 - held, held)
