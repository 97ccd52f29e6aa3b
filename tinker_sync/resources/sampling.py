"""``client.sampling``: token streaming over Server-Sent Events, sampling through a future, and what a
sampler samples from (``get_sampler``).

Rules for a token stream (``SampleStream``): it is lazy (nothing is sent
until it is iterated or entered); a ``done`` chunk is handed out and ends it;
an ``error`` (an SSE ``event: error``, or a chunk whose ``event_type`` is
``error``) raises APIError after every chunk before it was handed out; a stream
that ends without ``done`` is incomplete, never a shorter sample: it raises
APIConnectionError (``cause="broken"``) after every chunk that came was handed
out, so ``text()`` and any helper gathering a sample raise too.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any, Unpack

import msgspec

from .._config import Timeout
from .._event_stream import EventStream
from .._exceptions import APIConnectionError, APIError
from .._options import BodyOverrides, Overrides, RequestOptions
from .._response import StreamedResponse
from .._retry import RetryBudget
from ._paths import segment
from ._resource import M, Raw, Streamed, SyncAPIResource, endpoint, json_parser, view
from .futures import QueueStateCallback, future_timeout, submit
from .types import GetSamplerResponse, ModelInput, SampleResponse, SampleStreamChunk, SamplingParams

__all__ = ["SampleStream", "Sampling"]

STREAM_PATH = "/api/v1/stream_sample"
SAMPLE_PATH = "/api/v1/asample"


class SampleStream(EventStream[SampleStreamChunk]):
    """A lazy stream of ``SampleStreamChunk``: tokens, then ``done`` (see the module docstring).

    ``text()`` gathers the text of the tokens (the whole sample, unless some
    were already consumed).
    """

    def _new_generator(self) -> Generator[SampleStreamChunk, None, None]:
        # The base class holds the generator only weakly inside a ``for`` loop, so that the
        # loop's end (a ``break`` too) closes the connection at once: wrap its generator, never
        # keep one of our own.
        return self._until_done(super()._new_generator())

    def __enter__(self) -> SampleStream:
        super().__enter__()
        return self

    def text(self) -> str:
        """The tokens' text, joined, once the stream is done (it is closed then).

        Raises:
            APIConnectionError: the stream ended without its ``done`` event (an incomplete sample).
        """
        with self:
            return "".join(chunk.token or "" for chunk in self if chunk.event_type == "token")

    def _until_done(self, chunks: Iterator[SampleStreamChunk]) -> Generator[SampleStreamChunk, None, None]:
        tokens = 0
        try:
            for chunk in chunks:
                if chunk.event_type == "error":
                    request = getattr(self.response, "request", None)
                    body = msgspec.to_builtins(chunk)
                    raise APIError(
                        f"The sampler failed: {chunk.message or 'error event'}", request, body=body
                    )
                yield chunk
                tokens += chunk.event_type == "token"
                if chunk.event_type == "done":
                    return
            raise APIConnectionError(
                f"The sample stream ended without its done event after {tokens} token(s): "
                "the sample is incomplete",
                getattr(self.response, "request", None),
                cause="broken",
            )
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()


class Sampling(SyncAPIResource[M]):
    """``client.sampling``."""

    with_raw_response: Sampling[Raw] = view(Raw)
    with_streaming_response: Sampling[Streamed] = view(Streamed)

    @endpoint
    def get_sampler(self, sampler_id: str, **overrides: Unpack[Overrides]) -> GetSamplerResponse:
        """What a sampler (a sampling session, ``SESSION:sample:N``) samples from: its base model and
        the weights' tinker path, if any (the SDK's ``get_sampler``)."""
        path = f"/api/v1/samplers/{segment(sampler_id, 'sampler id')}"
        return self._json(RequestOptions("GET", path), GetSamplerResponse, overrides)

    @endpoint
    def stream_sample(
        self,
        prompt: str | ModelInput | Sequence[int],
        *,
        max_tokens: int | None = None,
        sampling_params: SamplingParams | None = None,
        base_model: str | None = None,
        model_path: str | None = None,
        idle_timeout: float | None = None,
        **overrides: Unpack[BodyOverrides],
    ) -> SampleStream:
        """Sample ``prompt`` and stream its tokens as they are generated (``POST /stream_sample``).

        Lazy: nothing is sent until the stream is iterated (or entered). A
        ``done`` chunk ends it; an error raises APIError after the tokens
        before it. ``stream.text()`` gathers the whole text.

        Args:
            prompt: text, token ids, or a ``ModelInput``.
            idle_timeout: the longest wait for the next chunk.
            extra_body: more fields of the request body, sent as they are
                (and ``extra_headers``, ``extra_query``, ``timeout``, ``max_retries``).
        """
        body: dict[str, Any] = {"prompt": _prompt(prompt) if not isinstance(prompt, str) else prompt}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        for name, value in (
            ("sampling_params", sampling_params),
            ("base_model", base_model),
            ("model_path", model_path),
        ):
            if value is not None:
                body[name] = value
        client = self._client

        def stream(options: RequestOptions) -> SampleStream:  # the plain call: lazy, sent when iterated
            return SampleStream(
                client.event_connector(options),
                cast_to=SampleStreamChunk,
                idle_timeout=idle_timeout,
                max_event_size=client.max_event_size,
            )

        def parse(response: StreamedResponse) -> SampleStream:  # the views: the response is there
            return SampleStream(
                source=response.event_source(),
                cast_to=SampleStreamChunk,
                idle_timeout=idle_timeout,
                max_event_size=client.max_event_size,
            )

        headers = {"Accept": "text/event-stream"}
        options = RequestOptions("POST", STREAM_PATH, json=body, headers=headers, idle_timeout=idle_timeout)
        return self._request(options, parse, overrides, lazy=stream)

    @endpoint
    def sample(
        self,
        prompt: ModelInput | Sequence[int],
        *,
        sampling_params: SamplingParams,
        num_samples: int = 1,
        base_model: str | None = None,
        model_path: str | None = None,
        prompt_logprobs: bool | None = None,
        on_queue_state: QueueStateCallback | None = None,
        **overrides: Unpack[BodyOverrides],
    ) -> SampleResponse:
        """Sample ``prompt`` through a future (``POST /asample``, then its result): the whole answer.

        Args:
            base_model: the base model to sample from (or ``model_path``).
            model_path: the ``tinker://`` path of sampler weights to sample from (or ``base_model``).
            timeout: the most seconds to wait for the result in all (see ``client.futures``).
            extra_headers, extra_query, extra_body, max_retries: per-call overrides.

        Raises:
            RequestFailedError: the sampling failed (a missing ``model_path``, say).
            APITimeoutError: no result in time.
        """
        body: dict[str, Any] = {
            "prompt": _prompt(prompt),
            "sampling_params": sampling_params,
            "num_samples": num_samples,
        }
        for name, value in (
            ("base_model", base_model),
            ("model_path", model_path),
            ("prompt_logprobs", prompt_logprobs),
        ):
            if value is not None:
                body[name] = value
        client = self._client
        seconds, call_timeout = future_timeout(client, overrides.get("timeout"))
        options = RequestOptions("POST", SAMPLE_PATH, json=body)
        options = options.overridden({**overrides, "timeout": call_timeout})

        def opener(budget: RetryBudget, timeout: Timeout) -> StreamedResponse:
            deadline = budget.deadline if budget.deadline is not None else time.monotonic() + seconds
            return submit(client, options, budget, deadline, on_queue_state)

        return self._request(options, json_parser(SampleResponse), opener=opener)


def _prompt(prompt: ModelInput | Sequence[int]) -> ModelInput:
    return prompt if isinstance(prompt, ModelInput) else ModelInput.from_ints(prompt)
