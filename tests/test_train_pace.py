"""The engine's pace: ``FLOOR`` submitters and pollers near the server, more (up to the caps) when its
round trip is long next to a request's CPU; the submit pool that keeps to it. Over real sockets: a
mock that answers 30 ms late gets more than the floors in flight, within 64 connections."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from tinker_sync import ServiceClient, types
from tinker_sync import _train_pace as pace_module
from tinker_sync._train_engine import STUCK
from tinker_sync._train_pace import FLOOR, Pace, SubmitPool
from tinker_sync.testing import Fault, MockTinkerServer

BASE = "Qwen/Qwen3-8B"
PARAMS = types.SamplingParams(max_tokens=3, seed=7)


# -- the estimate -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("round_trip", "cpu", "cap", "limit"),
    [
        (0.0004, 0.0003, 32, FLOOR),  # a near server: the floor
        (0.0025, 0.0001, 32, 25),  # 25 CPU times of round trip: 25 threads
        (0.020, 0.0003, 32, 32),  # a far server: the cap
        (0.020, 0.0003, 4, 4),  # a cap below the floor is the floor too
        (0.0004, 0.0003, 4, 4),
    ],
)
def test_the_limit_covers_the_round_trip_with_cpu(
    round_trip: float, cpu: float, cap: int, limit: int
) -> None:
    pace = Pace(cap)
    assert pace.limit == min(FLOOR, cap)
    for _ in range(20):
        pace.record(round_trip, cpu)
    assert pace.limit == limit
    assert pace.round_trip == pytest.approx(round_trip) and pace.cpu == pytest.approx(cpu)


def test_the_round_trip_is_the_shortest_and_forgets_after_two_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pace_module, "WINDOW", 0.05)
    pace = Pace(32)
    pace.record(0.0003, 0.0003)
    for _ in range(10):
        pace.record(0.020, 0.0003)  # slower answers (a held request, a busy GIL) do not raise it
    assert pace.round_trip == pytest.approx(0.0003) and pace.limit == FLOOR
    time.sleep(0.06)
    pace.record(0.020, 0.0003)
    assert pace.limit == FLOOR  # the last window still saw 0.3 ms
    time.sleep(0.06)
    pace.record(0.020, 0.0003)  # two windows of 20 ms: the server is far now
    assert pace.round_trip == pytest.approx(0.020) and pace.limit == 32


def test_measure_records_a_submission_and_skips_a_failed_one() -> None:
    pace = Pace(32)
    with pace.measure():
        time.sleep(0.01)
    assert 0.009 < pace.round_trip < 1.0 and 0 <= pace.cpu < 0.009  # sleeping is no CPU
    with pytest.raises(ValueError), pace.measure():
        raise ValueError("refused")
    assert 0.009 < pace.round_trip < 1.0


# -- the pool -----------------------------------------------------------------------------------------


def fixed(limit: int, cap: int) -> Pace:
    pace = Pace(cap)
    pace.floor = pace.limit = limit
    return pace


def blocking_jobs(n: int, gate: threading.Event) -> tuple[list[Callable[[], None]], list[int], list[int]]:
    """n jobs that wait for ``gate``; the order they started in; the most running at once (a list of one)."""
    started: list[int] = []
    most = [0]
    running = [0]
    lock = threading.Lock()

    def job(i: int) -> None:
        with lock:
            started.append(i)
            running[0] += 1
            most[0] = max(most[0], running[0])
        gate.wait(30)
        with lock:
            running[0] -= 1

    return [lambda i=i: job(i) for i in range(n)], started, most


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_pool_runs_jobs_in_order_at_most_the_limit_at_once() -> None:
    pace = fixed(3, 6)
    pool = SubmitPool(pace)
    gate = threading.Event()
    jobs, started, most = blocking_jobs(10, gate)
    for job in jobs:
        pool.submit(job)
    wait_until(lambda: len(started) == 3)
    time.sleep(0.05)
    assert started == [0, 1, 2] and pool.threads == 3  # the rest wait in line, no thread for them
    gate.set()
    wait_until(lambda: len(started) == 10)
    assert started == list(range(10)) and most[0] == 3 and pool.threads == 3
    pool.close()


def test_the_pool_grows_when_the_pace_rises_and_shrinks_when_it_falls() -> None:
    pace = fixed(2, 6)
    pool = SubmitPool(pace)
    first = threading.Event()
    jobs, started, _ = blocking_jobs(9, first)
    for job in jobs[:8]:
        pool.submit(job)
    wait_until(lambda: len(started) == 2)
    pace.limit = 6  # the server is farther than it looked: the next submission brings threads in
    pool.submit(jobs[8])
    wait_until(lambda: len(started) == 6)
    time.sleep(0.05)
    assert len(started) == 6 and pool.threads == 6
    first.set()
    wait_until(lambda: len(started) == 9)
    pace.limit = 1
    second = threading.Event()
    jobs, started, most = blocking_jobs(6, second)
    time.sleep(0.05)  # the first jobs' threads have gone idle
    for job in jobs:
        pool.submit(job)
    wait_until(lambda: len(started) == 1)
    time.sleep(0.05)
    assert len(started) == 1
    second.set()
    wait_until(lambda: len(started) == 6)
    assert most[0] == 1 and pool.threads == 6  # no new thread: the idle ones serve
    pool.close()


def test_a_job_that_raises_is_logged_and_the_pool_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    pool = SubmitPool(fixed(1, 1))
    ran = threading.Event()

    def broken() -> None:
        raise RuntimeError("a bug in a job")

    with caplog.at_level(logging.ERROR, logger="tinker_sync"):
        pool.submit(broken)
        pool.submit(ran.set)
        assert ran.wait(10)
    assert "a submit job failed" in caplog.text and "a bug in a job" in caplog.text
    pool.close()


def test_close_drops_what_did_not_start_and_joins_every_thread() -> None:
    pool = SubmitPool(fixed(2, 4), name="pace-test-submit")
    gate = threading.Event()
    jobs, started, _ = blocking_jobs(5, gate)
    for job in jobs:
        pool.submit(job)
    wait_until(lambda: len(started) == 2)
    threading.Timer(0.1, gate.set).start()
    pool.close()  # waits for the two running jobs
    assert started == [0, 1]
    assert not [t for t in threading.enumerate() if t.name.startswith("pace-test-submit")]
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(lambda: None)


# -- over real sockets --------------------------------------------------------------------------------


def burst(server: MockTinkerServer, n: int) -> ServiceClient:
    service = ServiceClient(api_key=server.api_key, base_url=server.url, heartbeat_interval=3600)
    sampler = service.create_sampling_client(base_model=BASE).result(30)
    prompt = types.ModelInput.from_ints([1, 2, 3])
    futures = [sampler.sample(prompt, 1, PARAMS) for _ in range(n)]
    assert all(f.result(60).sequences for f in futures)
    return service


def test_a_far_server_gets_more_than_the_floors_in_flight_within_64_connections() -> None:
    with MockTinkerServer() as server:
        server.latency = 0.03
        service = burst(server, 300)
        engine = service._engine
        try:
            assert engine.pace.round_trip >= 0.03 and engine.pace.limit > FLOOR
            assert engine.pool.threads > FLOOR and len(engine._pollers) > FLOOR
            # submitters and pollers beyond the 8 + 8 (+ the session's own requests) of a near server
            assert server.peak_in_flight > 2 * FLOOR + 2
        finally:
            service.close()
        assert server.connections <= 64
        assert not [t for t in threading.enumerate() if t.name.startswith("tinker-sync-")]


@pytest.mark.slow
@pytest.mark.parametrize("by", ["a new future", "the heartbeat"])
def test_a_ready_result_does_not_wait_out_the_holds_of_futures_that_are_not_done(by: str) -> None:
    """Eight slow forward_backwards hold all eight pollers (the server holds each poll 30 s, as the
    real one): a sample ready meanwhile gets a poller of its own, once every poller has been held
    ``STUCK`` seconds: at the next future scheduled, or at the heartbeat when none is."""
    with MockTinkerServer() as server:
        server.promises.hold = 30.0
        server.training.delays["ForwardBackward"] = 8.0
        heartbeat = 0.5 if by == "the heartbeat" else 3600
        with ServiceClient(
            api_key=server.api_key, base_url=server.url, heartbeat_interval=heartbeat
        ) as service:
            sampler = service.create_sampling_client(base_model=BASE).result(30)
            trainer = service.create_lora_training_client(BASE).result(30)
            tokens = [1, 2, 3, 4]
            data = [
                types.Datum(
                    model_input=types.ModelInput.from_ints(tokens[:-1]),
                    loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * 3},
                )
            ]
            slow = [trainer.forward_backward(data, "cross_entropy") for _ in range(FLOOR)]
            wait_until(lambda: server.peak_in_flight >= FLOOR)  # every poller is held
            if by == "a new future":
                time.sleep(STUCK + 0.2)
            prompt = types.ModelInput.from_ints([1, 2, 3])
            assert sampler.sample(prompt, 1, PARAMS).result(6).sequences  # not after the 8 s
            assert not any(future.done() for future in slow)
            assert len(service._engine._pollers) > FLOOR
            assert all(future.result(30).loss_fn_outputs for future in slow)


@pytest.mark.parametrize("workers", [{"submit_workers": 0}, {"poll_workers": 0}, {"submit_workers": 2.5}])
def test_pools_without_a_thread_are_refused_before_a_session_is_made(workers: dict[str, object]) -> None:
    with MockTinkerServer() as server:
        with pytest.raises(ValueError, match="must be an int of at least 1"):
            ServiceClient(api_key=server.api_key, base_url=server.url, **workers)  # type: ignore[arg-type]
        assert server.sessions == []


def test_many_submitting_threads_and_a_moving_pace_run_every_job_once_within_the_cap() -> None:
    pace = fixed(3, 12)
    pool = SubmitPool(pace)
    ran: list[int] = []
    running = [0]
    most = [0]
    lock = threading.Lock()

    def job(i: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.0005 if i % 7 == 0 else 0)  # some jobs wait on the network a little
        with lock:
            running[0] -= 1
            ran.append(i)

    def producer(base: int) -> None:
        for i in range(base, base + 300):
            pool.submit(lambda i=i: job(i))
            if i % 50 == 0:
                pace.limit = 1 + i % 12  # the round trip moves while jobs come in

    producers = [threading.Thread(target=producer, args=(k * 1000,)) for k in range(8)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    pace.limit = 12
    pool.submit(lambda: None)  # a last grant at the final pace
    wait_until(lambda: len(ran) == 8 * 300)
    assert sorted(ran) == sorted(k * 1000 + i for k in range(8) for i in range(300))
    assert most[0] <= 12 and pool.threads <= 12
    pool.close()


def test_close_settles_each_dropped_job_and_only_those(caplog: pytest.LogCaptureFixture) -> None:
    pool = SubmitPool(fixed(1, 1))
    gate = threading.Event()
    jobs, started, _ = blocking_jobs(4, gate)
    settled: list[int] = []

    def broken() -> None:
        raise RuntimeError("a bug in a drop")

    pool.submit(jobs[0], drop=lambda: settled.append(0))
    wait_until(lambda: started == [0])
    for i in (1, 2):
        pool.submit(jobs[i], drop=lambda i=i: settled.append(i))
    pool.submit(jobs[3], drop=broken)
    threading.Timer(0.1, gate.set).start()
    with caplog.at_level(logging.ERROR, logger="tinker_sync"):
        pool.close()
    assert started == [0] and settled == [1, 2]  # the running job settles itself
    assert "settling a dropped submit job failed" in caplog.text


def test_closing_with_samples_not_yet_sent_fails_their_futures_at_once() -> None:
    """One submitter, its sample held at the mock, four more waiting: ``close()`` fails the four
    (they would otherwise wait out their deadline), then ends once the held one is answered."""
    with MockTinkerServer() as server:
        service = ServiceClient(api_key=server.api_key, base_url=server.url, submit_workers=1, poll_workers=1)
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        gate = server.training.sample_gate = threading.Event()
        prompt = types.ModelInput.from_ints([1, 2, 3])
        futures = [sampler.sample(prompt, 1, PARAMS) for _ in range(5)]
        assert server.training.wait_samples_held(1, 30)
        closing = threading.Thread(target=service.close)
        closing.start()
        for future in futures[1:]:
            with pytest.raises(RuntimeError, match="closed before this sample was sent"):
                future.result(10)
        gate.set()
        closing.join(30)
        assert not closing.is_alive()
        assert futures[0].done()
        assert not [t for t in threading.enumerate() if t.name.startswith("tinker-sync-")]


def test_closing_with_training_calls_not_yet_sent_fails_them_and_the_client() -> None:
    """The first ``forward_backward`` held at the mock, three more calls waiting for the one
    submitter: ``close()`` fails the three, and the training client refuses what comes after."""
    with MockTinkerServer() as server:
        service = ServiceClient(api_key=server.api_key, base_url=server.url, submit_workers=1, poll_workers=1)
        trainer = service.create_lora_training_client(BASE, rank=8).result(30)
        data = [
            types.Datum(
                model_input=types.ModelInput.from_ints([1, 2, 3]),
                loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0] * 3},
            )
        ]
        server.script("/api/v1/forward_backward", Fault(delay_headers=1.0))
        first = trainer.forward_backward(data, "cross_entropy")
        waiting = [trainer.forward_backward(data, "cross_entropy") for _ in range(2)]
        waiting.append(trainer.optim_step(types.AdamParams(learning_rate=1e-4)))
        wait_until(lambda: any(r.path.endswith("/forward_backward") for r in server.requests))
        service.close()
        for future in waiting:
            with pytest.raises(RuntimeError, match="closed before this request was sent"):
                future.result(10)
        assert first.done()
        with pytest.raises(RuntimeError):
            trainer.forward_backward(data, "cross_entropy")
        assert not [t for t in threading.enumerate() if t.name.startswith("tinker-sync-")]
