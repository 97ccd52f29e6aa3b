"""ServiceClient, TrainingClient and SamplingClient over real sockets against the mock's training backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tinker_sync
from tinker_sync import APITimeoutError, BadRequestError, RequestFailedError, ServiceClient, types
from tinker_sync._training_client import merge_outputs
from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._types import Fault

BASE = "Qwen/Qwen3-8B"
MakeService = Callable[..., ServiceClient]


def datum(tokens: list[int]) -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tinker-sync")]


@pytest.fixture
def server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as mock:
        yield mock


@pytest.fixture
def make_service(server: MockTinkerServer) -> Iterator[MakeService]:
    made: list[ServiceClient] = []

    def make(**options: Any) -> ServiceClient:
        service = ServiceClient(api_key=server.api_key, base_url=server.url, **options)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


def finished(server: MockTinkerServer) -> list[str | None]:
    return [record.finished for record in server.sessions]


def test_a_training_loop_keeps_seq_order_and_the_loss_falls(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    service = make_service()
    tc = service.create_lora_training_client(BASE, rank=8, seed=3).result(30)
    assert tc.model_id == f"{service.session_id}:train:0" and tc.get_info().lora_rank == 8
    batch = [datum([1, 2, 3, 4]), datum([5, 6, 7])]
    pending = []
    for _ in range(3):  # submit, submit, then wait: the cookbook's shape
        pending.append(
            (tc.forward_backward(batch, "cross_entropy"), tc.optim_step(types.AdamParams(learning_rate=1e-4)))
        )
    losses = [fb.result(30).metrics["loss:sum"] for fb, op in pending if op.result(30) is not None]
    assert losses[0] > losses[1] > losses[2] > 0
    assert server.training.models[tc.model_id].arrivals == [1, 2, 3, 4, 5, 6]
    assert all("adam_params" in body and body["seq_id"] for body in server.training.optim_requests)
    out = pending[0][0].result()
    assert [len(o["logprobs"].data) for o in out.loss_fn_outputs] == [3, 2]
    assert out.loss_fn_outputs[0]["logprobs"].dtype == "float32" and out.loss_fn_output_type == "ArrayRecord"


def test_loss_fn_config_is_dual_written_and_forward_is_forward_only(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    tc = make_service().create_lora_training_client(BASE).result(30)
    tc.forward([datum([1, 2, 3])], "ppo", {"clip_low": 0.8, "mode": "x"}).result(30)
    sent = server.training.fwdbwd_requests[-1]
    assert sent["forward_only"] and sent["loss_fn"] == "ppo"
    assert sent["loss_fn_config"] == {"clip_low": 0.8, "mode": "x"} and sent["legacy_config"] == {
        "clip_low": 0.8
    }
    assert any(r.headers.get("x-tinker-request-type") == "Forward" for r in server.requests)


@pytest.mark.parametrize("hold_out_of_order", [False, True], ids=["lenient", "server-holds-later-seqs"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zstd"])
def test_chunks_go_in_parallel_first_chunk_last_and_merge(
    server: MockTinkerServer, make_service: MakeService, hold_out_of_order: bool, compress: bool
) -> None:
    server.client_config.update(fwdbwd_max_chunk_len=2, proto_compress_fwdbwd=compress)
    server.training.hold_out_of_order = hold_out_of_order
    tc = make_service().create_lora_training_client(BASE).result(30)
    data = [datum([i, i + 1, i + 2]) for i in range(5)]
    whole = tc.forward_backward(data, "cross_entropy")
    after = tc.optim_step(types.AdamParams())
    result = whole.result(30)
    after.result(30)
    arrivals = server.training.models[tc.model_id].arrivals
    assert sorted(arrivals[:2]) == [2, 3] and arrivals[2:] == [
        1,
        4,
    ]  # the first chunk last, then the next call
    assert len(result.loss_fn_outputs) == 5
    expected = sum(-types_lp for d in data for types_lp in _logprobs(d))
    assert result.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
    encodings = {
        r.headers.get("content-encoding") for r in server.requests if r.path.endswith("/forward_backward")
    }
    assert encodings == ({"zstd"} if compress else {None})


def _logprobs(d: types.Datum) -> list[float]:
    from tinker_sync.testing._training import token_logprob

    return [token_logprob(int(t), 0) for t in d.loss_fn_inputs["target_tokens"].data]


@pytest.mark.parametrize(
    ("metrics", "weights", "expected"),
    [
        ({"loss:sum": [1.0, 2.5]}, [1, 3], {"loss:sum": 3.5}),
        ({"acc:mean": [1.0, 0.0]}, [1, 3], {"acc:mean": 0.25}),
        ({"x:min": [3.0, -1.0], "x:max": [3.0, -1.0]}, [1, 1], {"x:min": -1.0, "x:max": 3.0}),
        ({"t:slack": [4.0, 0.0]}, [1, 3], {"t:slack": 3.0}),
        ({"h:hash2": [2.0**64 - 1, 2.0]}, [1, 1], {"h:hash2": (2**64 + 2) % 2**64}),
        (
            {"id:unique": [7.0, 8.0, 9.0]},
            [1, 1, 1],
            {"id:unique": 7.0, "id:unique_2": 8.0, "id:unique_3": 9.0},
        ),
        ({"odd:median": [1.0, 2.0], "nokind": [1.0, 2.0]}, [1, 1], {}),
    ],
    ids=["sum", "mean-weighted", "min-max", "slack", "hash2", "unique", "unknown-dropped"],
)
def test_metric_reductions(
    metrics: dict[str, list[float]], weights: list[int], expected: dict[str, float]
) -> None:
    results = [
        types.ForwardBackwardOutput("ArrayRecord", [{}] * w, {k: v[i] for k, v in metrics.items()})
        for i, w in enumerate(weights)
    ]
    merged = merge_outputs(results)
    assert merged.metrics == pytest.approx(expected)
    assert len(merged.loss_fn_outputs) == sum(weights)


def test_a_key_missing_from_one_chunk_is_dropped() -> None:
    merged = merge_outputs(
        [
            types.ForwardBackwardOutput("A", [{}], {"a:sum": 1.0, "b:sum": 1.0}),
            types.ForwardBackwardOutput("A", [{}], {"a:sum": 2.0}),
        ]
    )
    assert merged.metrics == {"a:sum": 3.0}


def test_many_threads_on_one_training_client_keep_strict_order(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    tc = make_service().create_lora_training_client(BASE).result(30)
    futures: list[tinker_sync.Future[Any]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for _ in range(5):
            f = tc.forward_backward([datum([i, i + 1])], "cross_entropy")
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        f.result(30)
    assert server.training.models[tc.model_id].arrivals == list(range(1, 31))


def test_a_request_that_cannot_be_sent_poisons_the_client(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    tc = make_service().create_lora_training_client(BASE).result(30)
    server.script("/api/v1/optim_step", Fault(status=400))
    failed = tc.optim_step(types.AdamParams())
    with pytest.raises(BadRequestError):
        failed.result(30)
    with pytest.raises(RuntimeError, match="poisoned") as info:
        tc.forward_backward([datum([1, 2])], "cross_entropy")
    assert isinstance(info.value.__cause__, BadRequestError)
    with pytest.raises(RuntimeError, match="poisoned"):
        tc.save_state("later")


@pytest.mark.parametrize(
    ("raise_", "status"),
    [(None, "success"), (ValueError("boom"), "errored"), (KeyboardInterrupt(), "interrupted")],
    ids=["success", "errored", "interrupted"],
)
def test_finish_status_is_sent_once_and_no_thread_is_left(
    server: MockTinkerServer, raise_: BaseException | None, status: str
) -> None:
    before = engine_threads()
    try:
        with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
            service.create_lora_training_client(BASE).result(30).forward(
                [datum([1, 2])], "cross_entropy"
            ).result(30)
            assert len(engine_threads()) > len(before)
            if raise_ is not None:
                raise raise_
    except (ValueError, KeyboardInterrupt):
        pass
    service.close()  # a second close sends nothing
    assert finished(server) == [status]
    assert len([r for r in server.requests if r.path.endswith("/finish")]) == 1
    assert engine_threads() == before


def test_heartbeats_are_sent_and_stop_on_410(server: MockTinkerServer, make_service: MakeService) -> None:
    service = make_service(heartbeat_interval=0.05)
    deadline = time.monotonic() + 10
    while server.sessions[0].heartbeats < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.sessions[0].heartbeats >= 2
    server.script("/api/v1/session_heartbeat", Fault(status=410))
    service._heartbeat.join(10)
    assert not service._heartbeat.is_alive()


def test_a_result_past_its_deadline_names_what_was_waited_for(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    server.training.delays["Sample"] = 30.0
    server.promises.hold = 0.2
    server.promises.queue_state = "paused_capacity"
    seen: list[tuple[str, str, str | None]] = []
    service = make_service(result_timeout=1.0, on_queue_state=lambda *args: seen.append(args))
    sampler = service.create_sampling_client(base_model=BASE).result(30)
    future = sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2))
    with pytest.raises(
        TimeoutError, match=r"request req-sample-\d+: no result after .* polls, last queue state"
    ):
        future.result(timeout=0.5)
    with pytest.raises(
        APITimeoutError,
        match=r"req-sample-\d+.*no result after 1\.\d s, \d+ polls, last queue state paused_capacity",
    ):
        future.result()
    assert future.queue_state == "paused_capacity"
    assert seen and seen[0][0] == future.request_id and seen[0][1] == "paused_capacity"


@pytest.mark.parametrize(
    "script",
    [
        [("stall", 1.0)],
        [("stall", 1.0), 404, 404],
        [408, 500, 503],
        [429],
    ],
    ids=["late-result-after-our-poll-timeout", "late-then-404s", "408-and-5xx", "429"],
)
def test_every_transient_retrieve_answer_still_gets_the_result(
    server: MockTinkerServer, make_service: MakeService, script: list[Any]
) -> None:
    service = make_service(poll_timeout=0.3)
    sampler = service.create_sampling_client(base_model=BASE).result(30)
    server.promises.script_next(*script)
    result = sampler.sample(
        types.ModelInput.from_ints([4, 5]), 2, types.SamplingParams(max_tokens=3, seed=9)
    ).result(60)
    assert [len(s.tokens) for s in result.sequences] == [3, 3]
    polls = [r for r in server.requests if r.path.endswith("/retrieve_future")]
    assert len(polls) == len(script) + 1


def test_410_resends_the_sample_and_metadata_first_is_followed(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    sampler = make_service().create_sampling_client(base_model=BASE).result(30)
    server.promises.script_next(410)
    server.promises.metadata_first = True
    future = sampler.sample(types.ModelInput.from_ints([7]), 1, types.SamplingParams(max_tokens=2, seed=1))
    result = future.result(30)
    asamples = [r for r in server.requests if r.path.endswith("/asample")]
    assert len(asamples) == 2 and [r.json()["seq_id"] for r in asamples] == [0, 1]
    assert future.request_id is not None and future.request_id.endswith("2")
    assert result.sequences[0].sequence_id == f"{sampler.sampling_session_id}:1:0"
    polls = [r.json()["allow_metadata_only"] for r in server.requests if r.path.endswith("/retrieve_future")]
    assert polls[-2:] == [True, False]


def test_a_failed_request_raises_request_failed_error(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    tc = make_service().create_lora_training_client(BASE).result(30)
    server.promises.script_next(("error", "user"))
    with pytest.raises(RequestFailedError) as info:
        tc.forward_backward([datum([1, 2])], "cross_entropy").result(30)
    assert info.value.category == "user" and info.value.request_id.startswith("req-forwardbackward")
    assert tc.forward([datum([1, 2])], "cross_entropy").result(30).metrics  # a failed result does not poison


def test_sampling_backpressure_sequence_ids_and_logprobs(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    sampler = make_service().create_sampling_client(base_model=BASE).result(30)
    assert sampler.get_base_model() == BASE
    server.training.sample_429s = 2
    prompt = types.ModelInput.from_ints([10, 11, 12])
    result = sampler.sample(prompt, 3, types.SamplingParams(max_tokens=4, seed=5)).result(30)
    asamples = [r for r in server.requests if r.path.endswith("/asample")]
    assert len(asamples) == 3 and all(r.headers["x-tinker-sampling-backpressure"] == "1" for r in asamples)
    body = asamples[0].json()
    assert body["sampling_params"] == {
        "max_tokens": 4,
        "seed": 5,
        "temperature": 1.0,
        "top_k": -1,
        "top_p": 1.0,
    }
    assert [s.sequence_id for s in result.sequences] == [
        f"{sampler.sampling_session_id}:0:{i}" for i in range(3)
    ]
    again = sampler.sample(prompt, 3, types.SamplingParams(max_tokens=4, seed=5)).result(30)
    assert [s.tokens for s in again.sequences] == [
        s.tokens for s in result.sequences
    ]  # prompt and seed decide
    logprobs = sampler.compute_logprobs(prompt).result(30)
    assert logprobs[0] is None and len(logprobs) == 3 and all(isinstance(x, float) for x in logprobs[1:])


def test_sample_many_yields_in_order_with_a_bounded_window(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    sampler = make_service().create_sampling_client(base_model=BASE).result(30)
    params = types.SamplingParams(max_tokens=2, seed=0)
    prompts = (types.ModelInput.from_ints([i]) for i in range(40))
    results = []
    for i, result in enumerate(sampler.sample_many(prompts, 1, params, window=4)):
        sent = len([r for r in server.requests if r.path.endswith("/asample")])
        assert sent <= i + 1 + 4  # never more than the window ahead of the loop
        results.append(result)
    assert len(results) == 40
    for i, result in enumerate(results):
        expected = sampler.sample(types.ModelInput.from_ints([i]), 1, params).result(30)
        assert result.sequences[0].tokens == expected.sequences[0].tokens
    left_early = sampler.sample_many(
        (types.ModelInput.from_ints([i]) for i in range(10**9)), 1, params, window=3
    )
    assert next(left_early).sequences and left_early.close() is None  # a generator over endless prompts, left


def test_checkpoints_and_clients_from_state(server: MockTinkerServer, make_service: MakeService) -> None:
    service = make_service()
    tc = service.create_lora_training_client(BASE).result(30)
    tc.forward_backward([datum([1, 2, 3])], "cross_entropy")
    tc.optim_step(types.AdamParams())
    saved = tc.save_state("step1").result(30)
    sampler_path = tc.save_weights_for_sampler("s1").result(30).path
    assert saved.path == f"tinker://{tc.model_id}/weights/step1" and sampler_path.endswith(
        "/sampler_weights/s1"
    )
    loss_after_step = tc.forward([datum([1, 2, 3])], "cross_entropy").result(30).metrics["loss:sum"]
    resumed = service.create_training_client_from_state(saved.path).result(30)
    assert resumed.model_id != tc.model_id
    assert (
        resumed.forward([datum([1, 2, 3])], "cross_entropy").result(30).metrics["loss:sum"] == loss_after_step
    )
    assert tc.load_state(saved.path).result(30).path == saved.path
    sampler = tc.create_sampling_client(sampler_path).result(30)
    assert sampler.get_base_model() == BASE
    ephemeral = tc.save_weights_and_get_sampling_client().result(30)
    assert (
        ephemeral.sample(types.ModelInput.from_ints([1]), 1, types.SamplingParams(max_tokens=1))
        .result(30)
        .sequences
    )


def test_futures_work_with_concurrent_futures_and_inside_an_event_loop(make_service: MakeService) -> None:
    sampler = make_service().create_sampling_client(base_model=BASE).result(30)
    futures = [
        sampler.sample(types.ModelInput.from_ints([i]), 1, types.SamplingParams(max_tokens=1))
        for i in range(5)
    ]
    done, not_done = concurrent.futures.wait(futures, timeout=30)
    assert len(done) == 5 and not not_done
    assert len(list(concurrent.futures.as_completed(futures, timeout=30))) == 5
    assert all(isinstance(f, concurrent.futures.Future) and f.request_id for f in futures)

    async def in_a_notebook() -> int:
        return len(
            sampler.sample(types.ModelInput.from_ints([1]), 2, types.SamplingParams(max_tokens=1))
            .result(30)
            .sequences
        )

    assert asyncio.run(in_a_notebook()) == 2  # no warning (warnings are errors in this suite)


ASYNCIO_FREE = """
import sys
from tinker_sync import ServiceClient, types
from tinker_sync.testing import MockTinkerServer

with MockTinkerServer() as server, ServiceClient(api_key=server.api_key, base_url=server.url) as service:
    tc = service.create_lora_training_client("Qwen/Qwen3-8B").result(30)
    d = types.Datum(model_input=types.ModelInput.from_ints([1, 2]), loss_fn_inputs={"target_tokens": [2, 3]})
    fb, op = tc.forward_backward([d], "cross_entropy"), tc.optim_step(types.AdamParams())
    fb.result(30), op.result(30)
    sampler = tc.save_weights_and_get_sampling_client().result(30)
    assert sampler.sample(types.ModelInput.from_ints([1]), 2, types.SamplingParams(max_tokens=2)).result(30)
    assert list(sampler.sample_many([types.ModelInput.from_ints([i]) for i in range(10)], 1, types.SamplingParams(max_tokens=1)))
print("asyncio" in sys.modules)
"""


def test_the_package_never_imports_asyncio() -> None:
    result = subprocess.run([sys.executable, "-c", ASYNCIO_FREE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("sessions", [1, 2], ids=["one-session", "two-sessions"])
def test_retrieve_futures_long_poll_when_the_server_enables_it(
    server: MockTinkerServer, make_service: MakeService, sessions: int
) -> None:
    server.client_config["sample_use_retrieve_futures"] = True
    server.promises.futures_hold = 1.0
    server.training.delays["Sample"] = 0.3
    service = make_service()
    samplers = [service.create_sampling_client(base_model=BASE).result(30) for _ in range(sessions)]
    futures = [
        sampler.sample(types.ModelInput.from_ints([i]), 1, types.SamplingParams(max_tokens=2, seed=i))
        for i in range(12)
        for sampler in samplers
    ]
    results = [f.result(30) for f in futures]
    assert all(len(r.sequences[0].tokens) == 2 for r in results)
    long_polls = [r.json() for r in server.requests if r.path.endswith("/retrieve_futures")]
    assert {p["target"]["sampling_session_id"] for p in long_polls} == {
        s.sampling_session_id for s in samplers
    }
    fetches = [r for r in server.requests if r.path.endswith("/retrieve_future")]
    assert len(fetches) == len(futures)  # one fetch per sample: no blind polling
    # every fetched result is acknowledged on the session's next long poll (the server may drop it)
    extra = (
        samplers[0].sample(types.ModelInput.from_ints([99]), 1, types.SamplingParams(max_tokens=1)).result(30)
    )
    assert extra.sequences
    acked = {rid for p in long_polls_now(server) for rid in p["retrieved_request_ids"]}
    assert {f.request_id for f in futures[::sessions]} <= acked
    assert set(server.promises.acked) == acked


@pytest.mark.parametrize("first", [1, 3], ids=["one-expires-first", "three-expire-first"])
def test_parked_samples_expire_at_their_deadlines_while_the_long_poll_answers(
    server: MockTinkerServer, make_service: MakeService, first: int
) -> None:
    """With retrieve_futures on, a parked sample fails at its deadline however often the long poll
    answers (it answers empty every 0.2 s here); the parked are looked over only once the soonest
    deadline among them passed, so a sample parked after that scan still expires at its own, and a
    sample that completes meanwhile is a result (its deadline far: no race with the clock)."""
    server.client_config["sample_use_retrieve_futures"] = True
    server.promises.futures_hold = 0.2
    server.training.delays["Sample"] = 30.0
    service = make_service(result_timeout=0.5)
    engine = service._engine
    sampler = service.create_sampling_client(base_model=BASE).result(30)

    def sample(i: int) -> tinker_sync.Future[types.SampleResponse]:
        return sampler.sample(types.ModelInput.from_ints([i]), 1, types.SamplingParams(max_tokens=1, seed=i))

    expired = r"req-sample-\d+: no result after \d+\.\d s, \d+ polls"
    for future in [sample(i) for i in range(first)]:
        with pytest.raises(APITimeoutError, match=expired):
            future.result(30)
    later = sample(100)
    deadline = time.monotonic() + 30
    while not later.done() and time.monotonic() < deadline:
        with engine._park:
            if any(later.request_id in parked for parked in engine._parked.values()):
                break
        time.sleep(0.01)
    engine.result_timeout = 3600.0  # what is sent from now on has an hour
    server.training.delays["Sample"] = 0.1
    assert sample(200).result(30).sequences
    with pytest.raises(APITimeoutError, match=expired):
        later.result(30)


def long_polls_now(server: MockTinkerServer) -> list[dict[str, Any]]:
    return [r.json() for r in server.requests if r.path.endswith("/retrieve_futures")]


def test_abandoned_samples_are_cancelled_when_the_server_enables_it(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    server.client_dynamic_config["sample_cancel_enabled"] = True
    server.training.delays["Sample"] = 30.0
    server.promises.hold = 0.1
    sampler = make_service().create_sampling_client(base_model=BASE).result(30)
    futures = [
        sampler.sample(types.ModelInput.from_ints([i]), 1, types.SamplingParams(max_tokens=1))
        for i in range(3)
    ]
    deadline = time.monotonic() + 30
    while not all(f.request_id for f in futures) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(f.cancel() for f in futures)
    while len(server.promises.cancelled) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(server.promises.cancelled) == sorted(str(f.request_id) for f in futures)


def test_a_session_that_cannot_start_leaves_nothing_behind(server: MockTinkerServer) -> None:
    before = engine_threads()
    server.script("/api/v1/create_session", Fault(status=400))
    with pytest.raises(BadRequestError):
        ServiceClient(api_key=server.api_key, base_url=server.url)
    assert engine_threads() == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"learning_rate": -0.1}, "learning_rate must be >= 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"learning_rate": 0.1, "grad_clip_norm": float("inf")}, "grad_clip_norm must be a finite number"),
        ({"learning_rate": 0.1, "beta1": 1.0}, r"beta1 must be in \[0, 1\)"),
        ({"learning_rate": 0.1, "beta1": -0.5}, r"beta1 must be in \[0, 1\)"),
        ({"learning_rate": "0.1"}, "learning_rate must be a finite number"),
    ],
)
def test_dimuon_params_are_checked_as_the_sdk_checks_them(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        types.DimuonParams(**fields)


def test_an_optimizer_that_is_no_family_is_refused_before_anything_is_sent(
    server: MockTinkerServer, make_service: MakeService
) -> None:
    service = make_service()
    with pytest.raises(TypeError, match="DimuonOptimizerConfig"):
        service.create_lora_training_client(BASE, optimizer="dimuon")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a mapping with a 'type'"):
        service.create_training_client_from_state("tinker://r/weights/w", optimizer={"version": 1})
    assert not [r for r in server.requests if r.path.endswith(("/create_model", "/load_weights"))]
    # a family this version does not know goes as given, and its steps too
    training = service.create_lora_training_client(BASE, optimizer={"type": "lion", "beta": 0.5}).result(30)
    assert training.get_info().optimizer_config == {"type": "lion", "beta": 0.5}
    training.optim_step({"type": "lion", "learning_rate": 0.1}).result(30)
    sent = [r.json() for r in server.requests if r.path.endswith("/optim_step")]
    assert sent[-1]["optimizer_params"] == {"type": "lion", "learning_rate": 0.1}
    assert server.violations == []


def test_the_from_state_methods_show_the_sdks_signatures() -> None:
    fresh = inspect.signature(ServiceClient.create_training_client_from_state)
    resumed = inspect.signature(ServiceClient.create_training_client_from_state_with_optimizer)
    common = ["self", "path", "base_model", "user_metadata", "weights_access_token"]
    assert list(fresh.parameters) == [*common, "optimizer"]
    assert list(resumed.parameters) == common
    lora = inspect.signature(ServiceClient.create_lora_training_client)
    assert list(lora.parameters)[-1] == "optimizer"
