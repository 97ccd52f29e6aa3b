"""The sampling dispatch budget (``sample_dispatch_bytes_semaphore_size``) over real sockets, and its rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import tinker_sync
from tinker_sync import ServiceClient, types
from tinker_sync._sampling_client import DispatchBytes, dispatch_size
from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._types import Fault

BASE = "Qwen/Qwen3-8B"


@pytest.fixture
def server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as mock:
        yield mock


def asamples_in_flight_at_most(server: MockTinkerServer, budget: int, n: int) -> int:
    """Sample ``n`` prompts at once, each ``asample`` answered slowly: the most sent at the same time."""
    server.client_config["sample_dispatch_bytes_semaphore_size"] = budget
    lock, live, peak = threading.Lock(), [0], [0]

    def sent(info: Any) -> None:
        if info.url.endswith("/asample"):
            with lock:
                live[0] += 1
                peak[0] = max(peak[0], live[0])

    def answered(info: Any) -> None:
        if info.url.endswith("/asample"):
            with lock:
                live[0] -= 1

    hooks = {"request": [sent], "response": [answered]}
    client = tinker_sync.Client(api_key=server.api_key, base_url=server.url, event_hooks=hooks)
    with client, ServiceClient(client=client) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.script("/api/v1/asample", *[Fault(delay_headers=0.05)] * n)
        prompts = [types.ModelInput.from_ints([i, i + 1]) for i in range(n)]
        futures = [sampler.sample(p, 1, types.SamplingParams(max_tokens=1)) for p in prompts]
        assert all(f.result(30).sequences for f in futures)
    return peak[0]


def test_a_budget_smaller_than_any_prompt_sends_one_sample_at_a_time(server: MockTinkerServer) -> None:
    assert asamples_in_flight_at_most(server, 1, 6) == 1


@pytest.mark.parametrize(
    ("chunks", "size"),
    [
        ([types.EncodedTextChunk([1, 2, 3])], 30),
        ([types.EncodedTextChunk([1]), types.ImageChunk(b"12345", "png")], 15),
        ([types.DmelChunk(b"abc"), types.EncodedTextChunk([])], 3),
        ([], 0),
    ],
)
def test_a_prompts_size_is_counted_as_the_sdk_counts_it(chunks: list[Any], size: int) -> None:
    assert dispatch_size(types.ModelInput(chunks)) == size


def test_one_send_larger_than_the_budget_goes_and_the_next_waits_for_it() -> None:
    budget = DispatchBytes(3)
    entered = threading.Event()

    def second() -> None:
        budget.take(1)
        entered.set()
        budget.give(1)

    budget.take(5)  # larger than the whole budget: goes, overdrawn
    assert budget.left == -2
    waiter = threading.Thread(target=second)
    waiter.start()
    assert not entered.wait(0.05)  # overdrawn: the next one waits
    budget.give(5)
    assert entered.wait(10)
    waiter.join(10)
    assert budget.left == 3
