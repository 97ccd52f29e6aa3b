"""Sampling: ``POST /api/v1/stream_sample`` (an event stream) and ``POST /api/v1/asample`` (a future).

Rules: tokens are deterministic. ``stream_sample`` sends ``tok<i>`` / token id ``i``
/ logprob -0.5 for each index ``i``, then a ``done`` event; ``asample`` draws
token ids from a generator seeded by ``sampling_params.seed`` (else by the
prompt), so the same request always gets the same sequences.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Iterator
from typing import Any, Literal

import msgspec

from ._checkpoints import Registry
from ._futures import Futures
from ._sse_routes import serve_events
from ._types import ABORT, Chunk, Request
from ._validate import decode, method_not_allowed, violation

__all__ = ["Sampler", "draw", "stream_sample", "token_ids"]


def draw(seed: int, count: int) -> tuple[int, ...]:
    """``count`` 32-bit words decided by ``seed`` alone, the first ``k`` the same for any count:
    one SHAKE-128 output (a ``random.Random`` per sequence and a ``randrange`` per token were a
    tenth of the mock's CPU per request)."""
    count = max(count, 0)
    return struct.unpack(f"<{count}I", hashlib.shake_128(b"%d" % seed).digest(4 * count))


def token_ids(words: tuple[int, ...]) -> list[int]:
    """Token ids in [100, 32000), one per word."""
    return [100 + word % 31_900 for word in words]


class SamplingParams(msgspec.Struct, forbid_unknown_fields=True):
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str | int] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


class ModelInputChunk(msgspec.Struct):
    """One chunk of a ModelInput; only ``encoded_text`` chunks carry tokens."""

    type: str = "encoded_text"
    tokens: list[int] = []


class ModelInput(msgspec.Struct, forbid_unknown_fields=True):
    chunks: list[ModelInputChunk]


class StreamSampleRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /stream_sample``: a text or ModelInput prompt, and test knobs
    ``error_at`` (an error event at that index) and ``delay`` (seconds between tokens)."""

    prompt: str | ModelInput = ""
    max_tokens: int | None = None
    sampling_params: SamplingParams | None = None
    num_samples: int = 1
    base_model: str | None = None
    model_path: str | None = None
    error_at: int | None = None
    delay: float = 0.0
    type: str | None = None


class SampleRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /asample`` (the SDK's SampleRequest)."""

    prompt: ModelInput
    sampling_params: SamplingParams
    num_samples: int = 1
    base_model: str | None = None
    model_path: str | None = None
    sampling_session_id: str | None = None
    seq_id: int | None = None
    prompt_logprobs: bool | None = None
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: dict[str, Any] | None = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None
    record_stability_info: bool | None = None
    type: Literal["sample"] = "sample"


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if accept is not None and "text/event-stream" not in accept and "*/*" not in accept:
        raise violation(
            400, f"stream_sample answers text/event-stream, but the request accepts only {accept!r}"
        )


def stream_sample(request: Request) -> None:
    """``POST /stream_sample``: token events (``id: i``), then a done event; ``error_at=k`` sends
    ``event: error`` after k tokens."""
    if request.command != "POST":
        raise method_not_allowed(request, ["POST"])
    _check_accept(request)
    body = decode(request, StreamSampleRequest)
    params = body.sampling_params
    max_tokens = body.max_tokens
    if max_tokens is None:
        max_tokens = params.max_tokens if params is not None and params.max_tokens is not None else 8
    error_at = body.error_at
    delay = body.delay
    wait = request.state.wait
    encode = msgspec.json.encode

    def events(with_delay: bool) -> Iterator[Chunk]:
        for i in range(max_tokens):
            if error_at is not None and i == error_at:
                yield b'event: error\ndata: {"event_type":"error","message":"boom"}\n\n'
                return
            if with_delay and delay and wait(delay):
                yield ABORT
                return
            data = encode(
                {"event_type": "token", "token": f"tok{i}", "token_id": i, "index": i, "logprob": -0.5}
            )
            yield b"id: %d\ndata: %s\n\n" % (i, data)
        if error_at is not None and error_at >= max_tokens:
            yield b'event: error\ndata: {"event_type":"error","message":"boom"}\n\n'
            return
        data = encode({"event_type": "done", "finish_reason": "length", "total_tokens": max_tokens})
        yield b"data: %s\n\n" % data

    serve_events(
        request,
        events,
        status=200,
        content_type="text/event-stream",
        framing="chunked",
        chunk=None,
        delay=delay,
    )


class Sampler:
    """``POST /asample``: a SampleRequest answered by a future whose result is a SampleResponse."""

    def __init__(self, registry: Registry, futures: Futures) -> None:
        self.registry = registry
        self.futures = futures

    def route(self, request: Request) -> None:
        if request.command != "POST":
            raise method_not_allowed(request, ["POST"])
        body = decode(request, SampleRequest)
        if body.base_model is None and body.model_path is None and body.sampling_session_id is None:
            raise violation(
                422, "asample needs base_model, model_path or sampling_session_id", "validation_error"
            )
        if body.sampling_session_id is not None and body.seq_id is None:
            raise violation(422, "asample with sampling_session_id needs seq_id", "validation_error")
        if body.num_samples < 1:
            raise violation(422, "num_samples must be at least 1", "validation_error")
        missing = body.model_path is not None and self.registry.find(body.model_path) is None
        prompt = [t for chunk in body.prompt.chunks for t in chunk.tokens]
        params = body.sampling_params
        max_tokens = params.max_tokens or 16
        seed = params.seed if params.seed is not None else zlib.crc32(repr(prompt).encode())
        result: dict[str, Any]
        if missing:
            result = {"error": f"checkpoint {body.model_path} not found", "category": "user"}
        else:
            sequences = []
            for i in range(body.num_samples):
                words = draw(seed * 1_000_003 + i, 2 * max_tokens)
                tokens = token_ids(words[:max_tokens])
                logprobs = [round(-(word % 40_000) / 10_000, 4) for word in words[max_tokens:]]
                sequences.append({"stop_reason": "length", "tokens": tokens, "logprobs": logprobs})
            prompt_logprobs = None
            if body.prompt_logprobs:
                rng = random.Random(seed)
                prompt_logprobs = [None] + [round(-rng.random() * 6, 4) for _ in prompt[1:]]
            result = {
                "type": "sample",
                "sequences": sequences,
                "prompt_logprobs": prompt_logprobs,
                "topk_prompt_logprobs": None,
            }
        request_id = self.futures.create("sample", result)
        sequence_ids = [f"{request_id}:{i}" for i in range(body.num_samples)]
        request.send_json(200, {"request_id": request_id, "sample_sequence_ids": sequence_ids})
