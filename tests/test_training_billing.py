"""The billing pause (402) over real sockets: waited out as the official SDK does, and given up on in time.

A 402 from a submission or from a result poll pauses the session: the request is
tried again after ``BILLING_PAUSE`` seconds, for at most the server's
``billing_exception_max_pause_duration_sec`` of one incident, then it fails with
``BillingError``. The pause is patched short here; nothing is timed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tinker_sync import BillingError, ServiceClient, _train_future, types
from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._types import Fault

BASE = "Qwen/Qwen3-8B"
PROMPT = types.ModelInput.from_ints([1, 2, 3])


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockTinkerServer]:
    monkeypatch.setattr(_train_future, "BILLING_PAUSE", 0.01)
    with MockTinkerServer() as mock:
        yield mock


def paths(server: MockTinkerServer, path: str) -> int:
    return sum(r.path == path for r in server.requests)


@pytest.mark.parametrize("where", ["asample", "optim_step", "retrieve_future"])
@pytest.mark.parametrize("count", [1, 3])
def test_a_billing_pause_is_waited_out(server: MockTinkerServer, where: str, count: int) -> None:
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        if where == "optim_step":
            tc = service.create_lora_training_client(BASE).result(30)
            server.clear()
            server.script("/api/v1/optim_step", *[Fault(status=402)] * count)
            assert tc.optim_step(types.AdamParams()).result(30) is not None
            assert paths(server, "/api/v1/optim_step") == count + 1
            return
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.clear()
        if where == "asample":
            server.script("/api/v1/asample", *[Fault(status=402)] * count)
        else:
            server.promises.script_next(*[402] * count)
        assert sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=2)).result(30).sequences
        assert paths(server, f"/api/v1/{where}") == count + 1


@pytest.mark.parametrize("where", ["asample", "retrieve_future"])
def test_a_pause_longer_than_the_servers_limit_fails(server: MockTinkerServer, where: str) -> None:
    server.client_config["billing_exception_max_pause_duration_sec"] = 0
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        server.clear()
        if where == "asample":
            server.script("/api/v1/asample", *[Fault(status=402)] * 50)
        else:
            server.promises.script_next(*[402] * 50)
        with pytest.raises(BillingError):
            sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=2)).result(30)
        assert 2 <= paths(server, f"/api/v1/{where}") < 50  # tried again once at least, then gave up


def test_close_stops_a_submission_waiting_out_a_pause(
    server: MockTinkerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_train_future, "BILLING_PAUSE", 3600.0)
    service = ServiceClient(api_key=server.api_key, base_url=server.url)
    sampler = service.create_sampling_client(base_model=BASE).result(30)
    server.script("/api/v1/asample", Fault(status=402))
    future = sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=2))
    while paths(server, "/api/v1/asample") == 0:
        server.wait(0.01)
    service.close()  # joins every thread: a submitter asleep for an hour would hang it
    with pytest.raises((BillingError, RuntimeError)):
        future.result(5)
