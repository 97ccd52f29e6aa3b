"""A pickled SamplingClient samples in worker processes (spawn and fork) on the same sampling session,
through a shadow holder: no new session, no heartbeat, the same flags; seq ids of its own
(``join_sampling_session`` when the server's flag says so, else a random clone id). ServiceClient and
TrainingClient refuse to pickle."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

import tinker_sync
from tinker_sync import SamplingClient, ServiceClient, types
from tinker_sync._config import Timeout
from tinker_sync._sampling_client import CLONE_BLOCK, SamplingClientState
from tinker_sync._sampling_holder import ShadowConfig
from tinker_sync.testing import MockTinkerServer

BASE = "Qwen/Qwen3-8B"
PARAMS = types.SamplingParams(max_tokens=3, seed=7)
PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]


@pytest.fixture
def server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as mock:
        yield mock


def sample_in_worker(sampler: SamplingClient, prompts: list[list[int]]) -> tuple[int, list[Any]]:
    """In a worker: sample each prompt twice (2 samples each), return (pid, [(sequence id, tokens)])."""
    out = []
    for prompt in prompts:
        result = sampler.sample(types.ModelInput.from_ints(prompt), 2, PARAMS).result(60)
        out.append([(s.sequence_id, list(s.tokens)) for s in result.sequences])
    return os.getpid(), out


def seq_ids(results: list[Any]) -> list[int]:
    """The seq_id of each sample request (the mock's sequence ids are ``session:seq_id:i``)."""
    return [int(str(sequences[0][0]).split(":")[-2]) for sequences in results]


@pytest.mark.parametrize("context", ["spawn", "fork"])
@pytest.mark.parametrize("join", [True, False], ids=["join_sampling_session", "random_clone_id"])
def test_a_pickled_sampling_client_samples_in_worker_processes(
    server: MockTinkerServer, context: str, join: bool
) -> None:
    server.client_config["sample_join_sampling_session"] = join
    with ServiceClient(api_key=server.api_key, base_url=server.url, heartbeat_interval=3600) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        sid = sampler.sampling_session_id
        _, mine = sample_in_worker(sampler, PROMPTS)
        tasks = 4
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(context)) as pool:
            done = [
                f.result(120) for f in [pool.submit(sample_in_worker, sampler, PROMPTS) for _ in range(tasks)]
            ]
        _, again = sample_in_worker(sampler, PROMPTS)  # the parent goes on after its workers
    assert all(pid != os.getpid() for pid, _ in done)
    # The same sampler (prompt and seed decide the tokens): every worker got what the parent got.
    tokens = [[t for _, t in sequences] for sequences in mine]
    assert all([[t for _, t in sequences] for sequences in got] == tokens for _, got in done)
    # Seq ids never collide: the parent's from 0 (as the SDK's), each copy's in a block of its own, 1e9 * k + n.
    assert seq_ids(mine) + seq_ids(again) == [0, 1, 2, 3, 4, 5]
    blocks = [seq_ids(got) for _, got in done]
    clones = [block[0] // CLONE_BLOCK for block in blocks]
    assert all(
        block == [CLONE_BLOCK * k + n for n in range(len(PROMPTS))]
        for block, k in zip(blocks, clones, strict=True)
    )
    assert len(set(clones)) == tasks and 0 not in clones
    joins = [r for r in server.requests if r.path == "/api/v1/join_sampling_session"]
    if join:  # each unpickled copy joined once, before its first sample; the server counted them
        assert sorted(clones) == list(range(1, tasks + 1))
        assert [r.json() for r in joins] == [
            {"sampling_session_id": sid, "type": "join_sampling_session"}
        ] * tasks
        assert server.training.samplers[sid].joined == tasks
    else:
        assert joins == []
    # No copy made a session, fetched the flags again or sent a heartbeat; every one sent the key.
    paths = [r.path for r in server.requests]
    assert paths.count("/api/v1/create_session") == 1 and paths.count("/api/v1/client/config") == 1
    assert "/api/v1/session_heartbeat" not in paths and len(server.sessions) == 1
    asamples = [r for r in server.requests if r.path == "/api/v1/asample"]
    assert len(asamples) == len(PROMPTS) * (tasks + 2)
    assert {r.headers["x-api-key"] for r in asamples} == {server.api_key}
    assert {r.json()["sampling_session_id"] for r in asamples} == {sid}


@pytest.mark.parametrize("join", [True, False], ids=["join_sampling_session", "random_clone_id"])
def test_a_pickled_sampling_client_keeps_the_flags_and_long_polls_its_own_clone(
    server: MockTinkerServer, join: bool
) -> None:
    """With retrieve_futures, each clone long-polls its own completions (``cloned_sampler_id``): the
    mock keeps the clones' queues apart as the server does, so a copy polling clone 0 would never
    see its samples complete."""
    server.client_config.update(sample_use_retrieve_futures=True, sample_join_sampling_session=join)
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        copy = pickle.loads(pickle.dumps(sampler))  # in this process too: a shadow holder of its own
        try:
            assert copy.service is not service and copy.service._engine is not service._engine
            assert copy.service._config == service._config and copy.service.session_id == service.session_id
            _, got = sample_in_worker(copy, PROMPTS)
            clone = seq_ids(got)[0] // CLONE_BLOCK
            assert seq_ids(got) == [CLONE_BLOCK * clone + n for n in range(len(PROMPTS))]
            assert clone == 1 or not join
            again = pickle.loads(pickle.dumps(copy))  # a copy of a copy: the same holder, a new clone
            other = seq_ids(sample_in_worker(again, PROMPTS[:1])[1])[0] // CLONE_BLOCK
            assert again.service is copy.service and other not in (0, clone) and (other == 2 or not join)
            assert seq_ids(sample_in_worker(sampler, PROMPTS[:1])[1]) == [0]  # the original: clone 0
        finally:
            copy.service.close()
    polls = [r.json()["target"] for r in server.requests if r.path == "/api/v1/retrieve_futures"]
    assert {(t["sampling_session_id"], t["cloned_sampler_id"]) for t in polls} == {
        (sampler.sampling_session_id, k) for k in (0, clone, other)
    }
    assert [r.path for r in server.requests].count("/api/v1/client/config") == 1


@pytest.mark.parametrize("kind", ["service", "training"])
def test_service_and_training_clients_refuse_to_be_pickled(server: MockTinkerServer, kind: str) -> None:
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        target: Any = service
        if kind == "training":
            target = service.create_lora_training_client(BASE).result(30)
        with pytest.raises(TypeError, match="cannot be pickled.*main process.*SamplingClient"):
            pickle.dumps(target)


def test_the_pickle_carries_the_key_but_no_repr_shows_it(server: MockTinkerServer) -> None:
    secret = "tml-pickled-secret-key"
    server.add_api_key(secret)
    with ServiceClient(api_key=secret, base_url=server.url) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        reducer, (state,) = sampler.__reduce__()
        assert isinstance(state, SamplingClientState) and state.holder.api_key == secret
        assert secret.encode() in pickle.dumps(sampler)  # a worker may have no credentials of its own
        copy = pickle.loads(pickle.dumps(sampler))
        try:
            for shown in (repr(state), repr(state.holder), repr(copy), repr(copy.service), str(state)):
                assert secret not in shown
            assert copy.sample(types.ModelInput.from_ints([1, 2]), 1, PARAMS).result(30).sequences
        finally:
            copy.service.close()
        fresh = pickle.loads(pickle.dumps(sampler))
        fresh.service.close()
        assert fresh.service is not copy.service  # closed: forgotten


@pytest.mark.parametrize(
    "base_url",
    [
        "http://user:pa/ss@127.0.0.1:9/",
        "http://user:p@ss#w?rd@127.0.0.1:9/",
        "https://tok:en:x@host.example/",
    ],
)
def test_a_shadow_config_repr_masks_the_key_and_the_url_credentials(base_url: str) -> None:
    config = ShadowConfig(
        session_id="s",
        base_url=base_url,
        api_key="tml-secret-1",
        default_headers={"X-Custom": "visible-name-only"},
        flags={},
        handshake=True,
        cancel_enabled=False,
        timeout=Timeout(),
        max_retries=2,
        result_timeout=1.0,
        poll_timeout=1.0,
        submit_workers=1,
        poll_workers=1,
    )
    shown = repr(config)
    password = base_url.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
    assert "tml-secret-1" not in shown and password not in shown and "***" in shown
    assert "visible-name-only" not in shown and "X-Custom" in shown


CHILD = """
import json, sys
from tinker_sync import SamplingClient, types
sampler = SamplingClient.from_sampler_handle(sys.argv[1])
result = sampler.sample(types.ModelInput.from_ints([1, 2, 3]), 2, types.SamplingParams(max_tokens=3, seed=7))
print(json.dumps([list(s.tokens) for s in result.result(60).sequences]))
sampler.service.close()
"""


def test_a_sampler_handle_carries_no_credentials_and_rebuilds_the_sampler_elsewhere(
    server: MockTinkerServer,
) -> None:
    server.client_config["sample_join_sampling_session"] = True
    headers = {"X-Team-Tag": "blue", "Authorization": "Bearer tok-handle-secret"}
    client = tinker_sync.Client(api_key=server.api_key, base_url=server.url, default_headers=headers)
    with client, ServiceClient(client=client) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        handle = sampler.get_sampler_handle()
        assert b"tok-handle-secret" in pickle.dumps(sampler)  # the pickle carries what the handle drops
        payload = base64.urlsafe_b64decode(handle).decode()
        assert server.api_key not in payload and "tok-handle-secret" not in payload
        assert json.loads(payload)["holder"]["default_headers"] == {"X-Team-Tag": "blue"}
        mine = [
            list(s.tokens)
            for s in sampler.sample(types.ModelInput.from_ints([1, 2, 3]), 2, PARAMS).result(30).sequences
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TINKER_")}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, handle],
            env={**env, "TINKER_API_KEY": server.api_key},  # the worker's own credentials
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout) == mine
        given = SamplingClient.from_sampler_handle(handle, api_key=server.api_key)
        try:
            again = given.sample(types.ModelInput.from_ints([1, 2, 3]), 2, PARAMS).result(30)
            assert [list(s.tokens) for s in again.sequences] == mine
        finally:
            given.service.close()
    asamples = [r for r in server.requests if r.path == "/api/v1/asample"]
    assert [r.json()["seq_id"] // CLONE_BLOCK for r in asamples] == [0, 1, 2]  # each rebuilt client joined
    assert [r.headers.get("x-team-tag") for r in asamples] == ["blue"] * 3
    assert [r.headers.get("authorization") is not None for r in asamples] == [True, False, False]


@pytest.mark.parametrize(
    "handle",
    [
        "",
        "not a handle at all",
        base64.urlsafe_b64encode(b"{}").decode(),
        base64.urlsafe_b64encode(b'{"holder": 1, "sampling_session_id": "s"}').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_bad_sampler_handle_is_a_clear_value_error(handle: str) -> None:
    with pytest.raises(ValueError, match="not a sampler handle"):
        SamplingClient.from_sampler_handle(handle)


@pytest.mark.parametrize("handshake", [True, False], ids=["handshake", "no-handshake"])
@pytest.mark.parametrize("jwt", [False, True], ids=["key", "jwt"])
def test_a_worker_authenticates_as_its_parent_without_asking_for_the_flags_again(
    server: MockTinkerServer, handshake: bool, jwt: bool
) -> None:
    """The copy keeps the parent client's handshake setting and the flags it got: with the server's
    JWTs it exchanges the key for one of its own (the parent's is not carried); never client/config."""
    server.client_config["pjwt_auth_enabled"] = jwt and handshake
    client = tinker_sync.Client(api_key=server.api_key, base_url=server.url, handshake=handshake)
    with client, ServiceClient(client=client) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        tokens_before = [r.path for r in server.requests].count("/api/v1/auth/token")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            _, got = pool.submit(sample_in_worker, sampler, PROMPTS[:1]).result(120)
        assert got and seq_ids(got)[0] >= CLONE_BLOCK
    paths = [r.path for r in server.requests]
    assert paths.count("/api/v1/client/config") == 1
    assert paths.count("/api/v1/auth/token") - tokens_before == (1 if jwt and handshake else 0)
    worker = [r for r in server.requests if r.path == "/api/v1/asample"][-1]
    assert (
        worker.headers["x-api-key"] != server.api_key
        if jwt and handshake
        else worker.headers["x-api-key"] == server.api_key
    )


def test_a_sampler_on_trained_weights_samples_them_in_a_worker(server: MockTinkerServer) -> None:
    """``save_weights_and_get_sampling_client``'s sampler pickles too: the worker's logprobs are the
    trained model's, as the parent's."""
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        training = service.create_lora_training_client(BASE, rank=8).result(30)
        datum = types.Datum(
            model_input=types.ModelInput.from_ints([1, 2, 3]),
            loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
        )
        for _ in range(2):
            training.forward_backward([datum], "cross_entropy")
            training.optim_step(types.AdamParams(learning_rate=1e-4))
        trained = training.save_weights_and_get_sampling_client().result(60)
        base = service.create_sampling_client(base_model=BASE).result(30)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            in_worker = pool.submit(logprobs_in_worker, trained).result(120)
            base_in_worker = pool.submit(logprobs_in_worker, base).result(120)
        assert in_worker == logprobs_in_worker(trained) != base_in_worker == logprobs_in_worker(base)


def logprobs_in_worker(sampler: SamplingClient) -> list[float | None]:
    return sampler.compute_logprobs(types.ModelInput.from_ints([1, 2, 3, 4])).result(60)


def test_a_pickled_sampling_client_connects_as_its_client_does(
    server: MockTinkerServer, tmp_path: Any
) -> None:
    """The copy goes through the client's own ``proxy=`` (credentials included), with its TLS trust
    setting, tunnel choice and body limits; a handle carries none of the proxy's credentials."""
    import trustme

    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with tinker_sync.testing.ForwardProxy(auth=("user", "pa/ss@word")) as proxy:
        client = tinker_sync.Client(
            server.api_key,
            server.url,
            proxy=proxy.auth_url,
            trust_env=False,
            verify=tinker_sync.TLS(extra_ca=tmp_path / "ca.pem"),  # unused on http://, carried as given
            max_response_size=1 << 20,
        )
        with ServiceClient(client=client, heartbeat_interval=3600) as service:
            sampler = service.create_sampling_client(base_model=BASE).result(30)
            holder = sampler.__reduce__()[1][0].holder
            assert "pa/ss@word" not in repr(holder)
            through_parent = len(proxy.requests)
            copy = pickle.loads(pickle.dumps(sampler))
            try:
                settings = copy.service._client
                assert settings._transport.proxies.https == proxy.auth_url
                assert settings._transport.verify == tinker_sync.TLS(extra_ca=str(tmp_path / "ca.pem"))
                assert (settings.trust_env, settings.max_response_size) == (False, 1 << 20)
                assert copy.sample(types.ModelInput.from_ints([1, 2]), 1, PARAMS).result(30).sequences
                sent = [r.target for r in proxy.requests[through_parent:]]
                assert any(target.endswith("/api/v1/asample") for target in sent), sent
            finally:
                copy.service.close()
            handle = json.loads(base64.urlsafe_b64decode(sampler.get_sampler_handle()))
            assert handle["holder"]["proxy"] is None and "pa/ss@word" not in json.dumps(handle)


def test_a_client_verifying_with_an_ssl_context_refuses_to_pickle_its_samplers(
    server: MockTinkerServer,
) -> None:
    import ssl

    client = tinker_sync.Client(server.api_key, server.url, verify=ssl.create_default_context())
    with ServiceClient(client=client, heartbeat_interval=3600) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        with pytest.raises(TypeError, match="ssl.SSLContext cannot be pickled"):
            pickle.dumps(sampler)
