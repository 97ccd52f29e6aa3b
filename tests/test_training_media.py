"""Image and audio chunks, targeted prompt logprobs and alternative prompt tokens, over real sockets.

The mock decodes every body with its own decoder (``testing._proto_wire``), so what
it records is an independent reading of what the client sent.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from tinker_sync import ServiceClient, types
from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._training import token_logprob

BASE = "Qwen/Qwen3-8B"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


@pytest.fixture
def server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as mock:
        yield mock


@pytest.fixture
def service(server: MockTinkerServer) -> Iterator[ServiceClient]:
    with ServiceClient(api_key=server.api_key, base_url=server.url) as made:
        yield made


def sent_bodies(server: MockTinkerServer, path: str) -> list[Any]:
    return [r.json() for r in server.requests if r.path == path]


@pytest.mark.parametrize(
    "chunks",
    [
        [types.ImageChunk(PNG, "png", 576), types.EncodedTextChunk([5, 6, 7])],
        [types.EncodedTextChunk([1]), types.DmelChunk(b"\x00\x01dmel"), types.EncodedTextChunk([2, 3])],
        [types.ImageChunk(b"", "jpeg"), types.DmelChunk(b""), types.EncodedTextChunk([9, 9])],
    ],
    ids=["image-then-text", "audio-between-text", "empty-media"],
)
def test_media_chunks_reach_the_server_in_forward_backward_and_sample(
    server: MockTinkerServer, service: ServiceClient, chunks: list[types.ModelInputChunk]
) -> None:
    tc = service.create_lora_training_client(BASE).result(30)
    text = [t for c in chunks if isinstance(c, types.EncodedTextChunk) for t in c.tokens]
    datum = types.Datum(
        model_input=types.ModelInput(chunks),
        loss_fn_inputs={"target_tokens": text, "weights": [1.0] * len(text)},
    )
    assert tc.forward_backward([datum], "cross_entropy").result(30).loss_fn_outputs
    (decoded,) = server.training.fwdbwd_requests[-1]["data"]
    assert decoded["tokens"] == text
    media = [c for c in chunks if not isinstance(c, types.EncodedTextChunk)]
    assert len(decoded["media"]) == len(media)
    for got, chunk in zip(decoded["media"], media, strict=True):
        if isinstance(chunk, types.ImageChunk):
            assert (got["type"], got["data"], got["format"]) == ("image", chunk.data, chunk.format)
            assert got["expected_tokens"] == chunk.expected_tokens
        else:
            assert got == {"type": "dmel", "dmel": chunk.dmel}

    sampler = service.create_sampling_client(base_model=BASE).result(30)
    assert (
        sampler.sample(types.ModelInput(chunks), 1, types.SamplingParams(max_tokens=2)).result(30).sequences
    )
    (body,) = sent_bodies(server, "/api/v1/asample")
    for sent, chunk in zip(body["prompt"]["chunks"], chunks, strict=True):
        if isinstance(chunk, types.ImageChunk):
            assert sent["type"] == "image" and base64.b64decode(sent["data"]) == chunk.data
            assert sent["format"] == chunk.format
            assert ("expected_tokens" in sent) == (chunk.expected_tokens is not None)
        elif isinstance(chunk, types.DmelChunk):
            assert sent == {"type": "dmel", "dmel": base64.b64encode(chunk.dmel).decode()}
        else:
            assert sent == {"tokens": chunk.tokens, "type": "encoded_text"}


def test_targeted_prompt_logprobs_and_alternative_tokens(
    server: MockTinkerServer, service: ServiceClient
) -> None:
    sampler = service.create_sampling_client(base_model=BASE).result(30)
    prompt = types.ModelInput.from_ints([11, 12, 13, 14])
    targets = types.TensorData([101, -1, 102, 103, -1, 7], "int64", [3, 2])
    result = sampler.sample(
        prompt, 1, types.SamplingParams(max_tokens=1), target_prompt_logprobs=targets, prompt_alt_tokens_k=4
    ).result(30)
    assert result.target_prompt_logprobs is not None and result.prompt_alt_tokens is not None
    got = result.target_prompt_logprobs
    assert (got.dtype, got.shape) == ("float32", [3, 2])
    want = [0.0 if t == -1 else token_logprob(t, 0) for t in targets.data]
    assert got.data == pytest.approx(want, rel=1e-6)
    tokens, logprobs = result.prompt_alt_tokens.tokens, result.prompt_alt_tokens.logprobs
    assert (tokens.dtype, tokens.shape, logprobs.dtype, logprobs.shape) == (
        "int64",
        [3, 4],
        "float32",
        [3, 4],
    )
    assert logprobs.data == pytest.approx([token_logprob(t, 0) for t in tokens.data], rel=1e-6)
    (body,) = sent_bodies(server, "/api/v1/asample")
    assert body["target_prompt_logprobs"] == {"data": targets.data, "dtype": "int64", "shape": [3, 2]}
    assert body["prompt_alt_tokens_k"] == 4

    plain = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=1)).result(30)
    assert plain.target_prompt_logprobs is None and plain.prompt_alt_tokens is None


@pytest.mark.parametrize(
    "options",
    [
        {"target_prompt_logprobs": types.TensorData([1.0, 2.0], "float32", [1, 2])},
        {"target_prompt_logprobs": types.TensorData([1, 2], "int64", [2])},
        {"target_prompt_logprobs": types.TensorData([1, 2], "int64")},
        {"prompt_alt_tokens_k": -1},
    ],
    ids=["float-ids", "one-dimensional", "no-shape", "negative-k"],
)
def test_bad_sampling_options_fail_before_anything_is_sent(
    server: MockTinkerServer, service: ServiceClient, options: dict[str, Any]
) -> None:
    sampler = service.create_sampling_client(base_model=BASE).result(30)
    with pytest.raises(ValueError):
        sampler.sample(types.ModelInput.from_ints([1, 2, 3]), 1, types.SamplingParams(), **options)
    assert sent_bodies(server, "/api/v1/asample") == []


@pytest.mark.parametrize(
    ("prompt", "length"),
    [
        (types.ModelInput([types.EncodedTextChunk([1, 2]), types.ImageChunk(PNG, "png", 5)]), 7),
        (types.ModelInput([types.ImageChunk(PNG, "png")]), ValueError),
        (types.ModelInput([types.DmelChunk(b"x")]), ValueError),
    ],
)
def test_prompt_length_and_to_ints_with_media(prompt: types.ModelInput, length: Any) -> None:
    if isinstance(length, int):
        assert prompt.length == length
    else:
        with pytest.raises(length):
            _ = prompt.length
    with pytest.raises(ValueError, match="EncodedTextChunks"):
        prompt.to_ints()
