"""The official SDK (tinker 0.38, its own venv) and tinker_sync, side by side on two mocks with the same
flags: a 429 from asample, then a SamplingClient pickled into spawned workers that join the sampling
session. What each mock receives and what each client returns must agree."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _official import run_json_driver

from tinker_sync import SamplingClient, ServiceClient, types
from tinker_sync.testing import MockTinkerServer

pytestmark = pytest.mark.slow  # seconds each: started first under xdist (conftest)

DRIVER = Path(__file__).with_name("_official_sampling_driver.py")
PARAMS = types.SamplingParams(max_tokens=3, seed=7)
STARTS = [1, 1, 4]


def sample_in_worker(sampler: SamplingClient, start: int) -> list[list[Any]]:
    """tinker_sync's twin of the driver's worker function."""
    prompt = types.ModelInput.from_ints([start, start + 1, start + 2])
    result = sampler.sample(prompt, 2, PARAMS).result(60)
    return [[s.sequence_id, list(s.tokens)] for s in result.sequences]


def ours(server: MockTinkerServer) -> dict[str, Any]:
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        sampler = service.create_sampling_client(base_model="Qwen/Qwen3-8B").result(60)
        main = sample_in_worker(sampler, 1)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            workers = list(pool.map(sample_in_worker, [sampler] * len(STARTS), STARTS))
    return {"workers": workers, "main": main}


def seen(server: MockTinkerServer) -> dict[str, Any]:
    """What a mock received: join bodies (their session id left out), asample seq ids, sessions."""
    joins = [r.json() for r in server.requests if r.path == "/api/v1/join_sampling_session"]
    seqs = [r.json()["seq_id"] for r in server.requests if r.path == "/api/v1/asample"]
    paths = [r.path for r in server.requests]
    return {
        "joins": [{**body, "sampling_session_id": "-"} for body in joins],
        "main_seqs": seqs[:2],  # the refused sample and the same request again
        "worker_seqs": sorted(seqs[2:]),
        "create_session": paths.count("/api/v1/create_session"),
    }


def tokens(result: dict[str, Any]) -> Any:
    return [[t for _, t in sample] for sample in [result["main"], *result["workers"]]]


def test_a_pickled_sampler_and_a_429_behave_as_the_official_sdks(tmp_path: Path) -> None:
    flags = {"sample_join_sampling_session": True}
    with MockTinkerServer() as theirs_server, MockTinkerServer() as ours_server:
        for server in (theirs_server, ours_server):
            server.client_config.update(flags)
            server.training.sample_429s = 1  # the first sample is refused
        theirs, _ = run_json_driver(theirs_server, tmp_path, DRIVER)
        mine = ours(ours_server)
        assert theirs_server.violations == [] and ours_server.violations == []
        theirs_seen, ours_seen = seen(theirs_server), seen(ours_server)
    assert tokens(theirs) == tokens(mine)
    assert (
        theirs_seen["joins"]
        == ours_seen["joins"]
        == [{"sampling_session_id": "-", "type": "join_sampling_session"}] * len(STARTS)
    )
    # Each copy's seq ids start its block, 1e9 * k; the server handed out k = 1, 2, 3.
    assert theirs_seen["worker_seqs"] == ours_seen["worker_seqs"] == [k * 1_000_000_000 for k in (1, 2, 3)]
    for side in (theirs_seen, ours_seen):  # the refused request went again, the same seq_id
        assert side["main_seqs"][0] == side["main_seqs"][1] and side["create_session"] == 1
    assert theirs_server.training.sample_429s == ours_server.training.sample_429s == 0
    # The sequence ids, stamped from the promise, name the same seq ids on both sides (which task
    # joined first is up to the pool: compared as sets).
    assert sorted([i.split(":")[-2:] for i, _ in sample] for sample in theirs["workers"]) == sorted(
        [i.split(":")[-2:] for i, _ in sample] for sample in mine["workers"]
    )
