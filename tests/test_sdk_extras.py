"""What the official SDK offers beside the wire, kept: ``get_tokenizer()`` (resolved as the SDK does,
transformers imported only then), the Console links, ``compute_logprobs(prompt_logprobs_last_n=)``,
``record_stability_info``, ``copy_weights``, ``default_headers_overrides``."""

from __future__ import annotations

import pickle
import sys
import types as pytypes
from collections.abc import Iterator
from typing import Any

import pytest

import tinker_sync
from tinker_sync import SamplingClient, ServiceClient, types
from tinker_sync._sampling_client import _check_honored
from tinker_sync._tokenizer import load_tokenizer, tokenizer_source
from tinker_sync.testing import MockTinkerServer

BASE = "Qwen/Qwen3-8B"


@pytest.mark.parametrize(
    ("model_name", "tokenizer_id", "source", "options"),
    [
        ("Qwen/Qwen3-8B", None, "Qwen/Qwen3-8B", {}),
        ("Qwen/Qwen3-8B:peft:123", None, "Qwen/Qwen3-8B", {}),  # a run's name: the base model's
        ("meta-llama/Llama-3.1-8B", None, "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer", {}),
        ("deepseek-ai/DeepSeek-V3.1/base", None, "deepseek-ai/DeepSeek-V3.1", {}),  # org/model/variant
        ("anything", "org/the-tokenizer", "org/the-tokenizer", {}),  # the server's id wins
        (
            "moonshotai/Kimi-K2.5-Text-Only",
            None,
            "moonshotai/Kimi-K2.5",
            {"trust_remote_code": True, "revision": "4d01dfe0332d63057c186e0b262165819efb6611"},
        ),
        (
            "moonshotai/Kimi-K2-Thinking",
            None,
            "moonshotai/Kimi-K2-Thinking",
            {"trust_remote_code": True, "revision": "612681931a8c906ddb349f8ad0f582cb552189cd"},
        ),
    ],
)
def test_the_tokenizer_is_the_one_the_official_sdk_loads(
    model_name: str, tokenizer_id: str | None, source: str, options: dict[str, Any]
) -> None:
    assert tokenizer_source(model_name, tokenizer_id) == (source, options)


@pytest.fixture
def fake_transformers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """A stand-in for ``transformers`` (not installed here, and Hugging Face is out of reach):
    records what ``AutoTokenizer.from_pretrained`` is asked for."""
    loaded: list[tuple[str, dict[str, Any]]] = []

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(source: str, **options: Any) -> str:
            loaded.append((source, options))
            return f"tokenizer of {source}"

    module = pytypes.ModuleType("transformers.models.auto.tokenization_auto")
    module.AutoTokenizer = AutoTokenizer  # type: ignore[attr-defined]
    for name in ("transformers", "transformers.models", "transformers.models.auto"):
        monkeypatch.setitem(sys.modules, name, pytypes.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    load_tokenizer.cache_clear()
    yield loaded
    load_tokenizer.cache_clear()


def test_both_clients_load_their_models_tokenizer_once(fake_transformers: list[Any]) -> None:
    with MockTinkerServer() as server, ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        training = service.create_lora_training_client(BASE, rank=8).result(30)
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        assert training.get_tokenizer() == sampler.get_tokenizer() == f"tokenizer of {BASE}"
        assert training.get_tokenizer() == f"tokenizer of {BASE}"
        # once per (model, tokenizer id), as the SDK caches it: the training client's info names the id
        assert fake_transformers == [(BASE, {"fast": True})] * 2
        assert (
            service.get_console_url() == f"https://tinker.thinkingmachines.ai/sessions/{service.session_id}"
        )
        assert training.get_console_url() == (
            f"https://tinker.thinkingmachines.ai/training_runs/{training.model_id}"
        )


def test_without_transformers_get_tokenizer_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # an import of it fails, installed or not
    load_tokenizer.cache_clear()
    with pytest.raises(ImportError, match=r"pip install transformers\) to load Qwen/Qwen3-8B"):
        load_tokenizer(BASE)


def test_thinking_machines_tokenizers_need_their_own_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tml_tokenizers", None)
    load_tokenizer.cache_clear()
    with pytest.raises(RuntimeError, match="tml-tokenizers"):
        load_tokenizer("TML/some-model")


def test_compute_logprobs_scores_the_last_n_prompt_tokens() -> None:
    with MockTinkerServer() as server, ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        sampler = service.create_sampling_client(base_model=BASE).result(30)
        prompt = types.ModelInput.from_ints([1, 2, 3, 4, 5])
        whole = sampler.compute_logprobs(prompt).result(30)
        assert whole[0] is None and all(isinstance(x, float) for x in whole[1:])
        assert sampler.compute_logprobs(prompt, prompt_logprobs_last_n=2).result(30) == [None] * 3 + whole[3:]
        bodies = [r.json() for r in server.requests if r.path.endswith("/asample")]
        assert "prompt_logprobs_last_n" not in bodies[0] and bodies[1]["prompt_logprobs_last_n"] == 2
        assert all(b["prompt_logprobs"] is True and b["sampling_params"]["max_tokens"] == 1 for b in bodies)
        with pytest.raises(ValueError, match="must be 1 or greater"):
            sampler.compute_logprobs(prompt, prompt_logprobs_last_n=0)
        with pytest.raises(ValueError, match="set include_prompt_logprobs"):
            sampler.sample(prompt, 1, types.SamplingParams(max_tokens=1), prompt_logprobs_last_n=2)
        assert server.violations == []


@pytest.mark.parametrize(
    ("result", "alt_k", "last_n", "message"),
    [
        (types.SampleResponse(sequences=[], prompt_logprobs=[None, -1.0, -2.0]), 0, 1, "before that suffix"),
        (types.SampleResponse(sequences=[]), 2, None, "returned no prompt_alt_tokens"),
    ],
)
def test_an_option_the_server_ignored_fails_the_sample_as_in_the_sdk(
    result: types.SampleResponse, alt_k: int, last_n: int | None, message: str
) -> None:
    """A server older than an option answers as if it was not asked: the SDK raises, so do we."""
    with pytest.raises(RuntimeError, match=message):
        _check_honored(result, alt_k, last_n)
    _check_honored(types.SampleResponse(sequences=[], prompt_logprobs=[None, None, -2.0]), 0, 1)


def test_record_stability_info_goes_with_every_sample_and_with_the_client() -> None:
    """As the official SDK: ``record_stability_info`` on every ``asample`` (false unless asked), from
    either way of making the client, and kept by a pickled copy and a sampler handle."""
    with MockTinkerServer() as server, ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        plain = service.create_sampling_client(base_model=BASE).result(30)
        stable = service.create_sampling_client(base_model=BASE, record_stability_info=True).result(30)
        training = service.create_lora_training_client(BASE, rank=8).result(30)
        saved = training.save_weights_and_get_sampling_client(record_stability_info=True).result(30)
        prompt = types.ModelInput.from_ints([1, 2, 3])
        for sampler in (plain, stable, saved):
            sampler.sample(prompt, 1, types.SamplingParams(max_tokens=2)).result(30)
        sent = [r.json()["record_stability_info"] for r in server.requests if r.path.endswith("/asample")]
        assert sent == [False, True, True]
        copy = pickle.loads(pickle.dumps(stable))
        handle = SamplingClient.from_sampler_handle(stable.get_sampler_handle(), api_key=server.api_key)
        try:
            assert copy.record_stability_info is True and handle.record_stability_info is True
        finally:
            for shadow in {id(c.service): c.service for c in (copy, handle)}.values():
                shadow.close()  # type: ignore[attr-defined]
        assert server.violations == []


def test_copy_weights_needs_the_sessions_project_and_capabilities_are_the_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TINKER_PROJECT_ID", raising=False)
    with MockTinkerServer() as server, ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        with pytest.raises(ValueError, match="give project_id or set TINKER_PROJECT_ID"):
            service.copy_weights("tinker://run/weights/w")
        assert not [r for r in server.requests if r.path.endswith("/copy_weights")]
        models = [m.model_name for m in service.get_server_capabilities().supported_models]
        assert models == server.supported_models
    monkeypatch.setenv("TINKER_PROJECT_ID", "proj-env")
    with MockTinkerServer() as server, ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        training = service.create_lora_training_client(BASE, rank=8).result(30)
        path = training.save_state("w").result(30).path
        copied = service.copy_weights(path, weights_access_token="tok-1").result(30)
        sent = [r for r in server.requests if r.path.endswith("/copy_weights")]
        assert sent[0].json() == {"source_path": path, "destination_project_id": "proj-env"}
        assert copied.startswith("tinker://") and copied != path
        assert server.violations == []


@pytest.mark.parametrize("own_client", [False, True], ids=["made", "given"])
def test_default_headers_overrides_go_with_every_request_of_the_session(own_client: bool) -> None:
    with MockTinkerServer() as server:
        given = tinker_sync.Client(server.api_key, server.url) if own_client else None
        with ServiceClient(
            api_key=server.api_key,
            base_url=server.url,
            client=given,
            default_headers_overrides={"X-Team": "rl", "User-Agent": "my-trainer/1.0"},
        ) as service:
            sampler = service.create_sampling_client(base_model=BASE).result(30)
            sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)).result(
                30
            )
        assert server.requests and all(
            r.headers.get("x-team") == "rl" and r.headers.get("user-agent") == "my-trainer/1.0"
            for r in server.requests
        )
        if given is not None:
            assert "X-Team" not in given.default_headers  # the given client itself is left as it was
            given.close()


def test_checkpoints_link_to_their_console_and_playground_pages() -> None:
    """As the official SDK builds them (``checkpoint_console_url``, ``checkpoint_playground_url``)."""
    saved = types.SaveWeightsResponse(path="tinker://run-1:train:0/weights/step 10")
    assert saved.get_console_url() == (
        "https://tinker.thinkingmachines.ai/checkpoints/run-1%3Atrain%3A0/weights%2Fstep%2010"
    )
    sampler = types.SaveWeightsForSamplerResponse(path="tinker://r/sampler_weights/s")
    assert sampler.get_console_url() == "https://tinker.thinkingmachines.ai/checkpoints/r/sampler_weights%2Fs"
    assert sampler.get_playground_url() == (
        "https://tinker.thinkingmachines.ai/playground?mode=checkpoint&checkpoint=tinker%3A%2F%2Fr%2Fsampler_weights%2Fs"
    )
    for bad in ("r/weights/x", "tinker://r/weights", "tinker:///weights/x", "tinker://r/a/b/c"):
        with pytest.raises(ValueError, match="Not a checkpoint path"):
            types.SaveWeightsResponse(path=bad).get_console_url()
    with pytest.raises(ValueError, match="Unknown checkpoint kind"):  # as the SDK, the kinds it knows only
        types.SaveWeightsResponse(path="tinker://r/bogus/x").get_console_url()
