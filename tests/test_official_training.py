"""The official SDK (tinker 0.38, in its own venv: ``_official``) runs its training loop against the mock.

Unmodified. Besides the loop's own results, the ``forward`` body the SDK sent is compared byte
for byte with tinker_sync's encoding of the same request, and the tinker_sync clients are checked
to get the same losses and samples from the same mock.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _official import run_json_driver

from tinker_sync import ServiceClient, types
from tinker_sync._proto import encode_forward_backward_request
from tinker_sync.testing import MockTinkerServer

pytestmark = pytest.mark.slow  # seconds each: started first under xdist (conftest)

DRIVER = Path(__file__).with_name("_official_training_driver.py")


@pytest.mark.parametrize("retrieve_futures", [False, True], ids=["retrieve_future", "retrieve_futures"])
def test_the_official_training_loop_runs_on_the_mock_and_matches_ours(
    retrieve_futures: bool, tmp_path: Path
) -> None:
    with MockTinkerServer() as server:
        server.client_config["sample_use_retrieve_futures"] = retrieve_futures
        server.promises.futures_hold = 1.0
        official, result = run_json_driver(server, tmp_path, DRIVER)
        if official["close"] == "hung":  # 0.38.0's own teardown hang (the driver's docstring): only that
            tasks = [line for line in result.stderr.splitlines() if line.startswith("official task:")]
            assert retrieve_futures, result.stderr[-4000:]
            poller = (
                "cancelling=1 <Task cancelling name='tinker_session_futures_poller' "
                "coro=<SessionFuturesPoller._poll_loop() running at"
            )
            idle = "session_futures_poller.py:156>"  # its ``await self._has_work.wait()``
            assert any(poller in line and idle in line for line in tasks), tasks
            assert all("tinker_session_futures_poller" in line or "_close_async" in line for line in tasks), (
                tasks
            )
        else:
            assert official["close"] == "closed"
        assert server.violations == []
        assert official["losses"][0] > official["losses"][1] > official["losses"][2]
        assert server.sessions[-1].finished == "success"
        long_polls = [r for r in server.requests if r.path.endswith("/retrieve_futures")]
        assert bool(long_polls) == retrieve_futures  # the sample found through the mock's long poll
        model_id = official["path"].split("/")[2]
        sent = [r for r in server.requests if r.path.endswith("/forward_backward")][-1]
        assert sent.headers["content-type"] == "application/x-protobuf"
        single = types.Datum(
            model_input=types.ModelInput.from_ints([5, 6]), loss_fn_inputs={"target_tokens": [6, 7]}
        )
        ours = encode_forward_backward_request(
            model_id, 7, [single], "ppo", {"clip": 0.25}, forward_only=True
        )
        assert sent.body == ours

        with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
            training = service.create_lora_training_client("Qwen/Qwen3-8B", rank=8).result(60)
            datum = types.Datum(
                model_input=types.ModelInput.from_ints([1, 2, 3]),
                loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
            )
            losses = []
            for _ in range(3):
                fwd_bwd = training.forward_backward([datum], "cross_entropy")
                training.optim_step(types.AdamParams(learning_rate=1e-4))
                losses.append(fwd_bwd.result(60).metrics["loss:sum"])
            sampler = training.save_weights_and_get_sampling_client().result(60)
            sampled = sampler.sample(
                types.ModelInput.from_ints([1, 2]), 2, types.SamplingParams(max_tokens=4, seed=3)
            )
            assert losses == official["losses"]
            assert [s.tokens for s in sampled.result(60).sequences] == official["tokens"]


BODIES_DRIVER = Path(__file__).with_name("_official_bodies_driver.py")
COMPARED = (
    "create_session",
    "create_model",
    "optim_step",
    "load_weights",
    "copy_weights",
    "create_sampling_session",
    "asample",
)


def json_bodies(server: MockTinkerServer) -> list[tuple[str, dict[str, object]]]:
    """The compared calls' JSON bodies the mock recorded, in order (each client on a fresh mock:
    the same session, model and sampling session ids)."""
    bodies = [(r.path.rsplit("/", 1)[1], r.json()) for r in server.requests if r.path.endswith(COMPARED)]
    for name, body in bodies:
        if name == "create_session":
            assert isinstance(body.pop("sdk_version"), str)  # each client names itself
    return bodies


def test_the_json_bodies_are_the_official_sdks(tmp_path: Path) -> None:
    """The same calls from each client: optimizer families (a Dimuon model, a Dimuon step, its
    checkpoint loaded with a fresh Dimuon optimizer and with its state), ``copy_weights`` into the
    session's project, and samples with every option the JSON carries. The same bodies, key for key."""
    with MockTinkerServer() as server:
        official, _ = run_json_driver(server, tmp_path, BODIES_DRIVER)
        assert server.violations == []
        theirs = json_bodies(server)
    with MockTinkerServer() as server:
        with ServiceClient(api_key=server.api_key, base_url=server.url, project_id="proj-a") as service:
            training = service.create_lora_training_client(
                "Qwen/Qwen3-8B", rank=8, optimizer=types.DimuonOptimizerConfig()
            ).result(60)
            training.optim_step(types.DimuonParams(learning_rate=1, beta1=0.8)).result(60)
            path = training.save_state("dimuon").result(60).path
            fresh = service.create_training_client_from_state(
                path, optimizer=types.DimuonOptimizerConfig()
            ).result(60)
            service.create_training_client_from_state_with_optimizer(path).result(60)
            copied = service.copy_weights(path, ttl_seconds=7200).result(60)
            prompt = types.ModelInput.from_ints([1, 2, 3, 4, 5])
            plain = service.create_sampling_client(base_model="Qwen/Qwen3-8B").result(60)
            params = types.SamplingParams(max_tokens=3, seed=5, stop=["\n"], temperature=0.5)
            plain.sample(prompt, 2, params).result(60)
            one = types.SamplingParams(max_tokens=1)
            plain.sample(prompt, 1, one, include_prompt_logprobs=True, topk_prompt_logprobs=2).result(60)
            stable = service.create_sampling_client(base_model="Qwen/Qwen3-8B", record_stability_info=True)
            logprobs = stable.result(60).compute_logprobs(prompt, prompt_logprobs_last_n=2).result(60)
            assert (
                fresh.get_info().optimizer_config == official["optimizer"] == {"type": "dimuon", "version": 1}
            )
        assert server.violations == []
        ours = json_bodies(server)
    assert path == official["path"] and logprobs == official["logprobs"] and copied == official["copied"]
    assert [name for name, _ in ours] == [name for name, _ in theirs]
    assert [name for name, _ in theirs].count("asample") == 3
    for (name, mine), (_, sdk) in zip(ours, theirs, strict=True):
        assert mine == sdk, name
    assert dict(theirs)["optim_step"]["optimizer_params"] == {
        "type": "dimuon",
        "learning_rate": 1.0,
        "grad_clip_norm": 0.0,
        "beta1": 0.8,
    }
