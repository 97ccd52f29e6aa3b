"""``SamplingClient``: sampling and prompt logprobs on one sampling session, and ``sample_many``.

Each ``sample`` is one ``POST /asample`` (``X-Tinker-Sampling-Backpressure: 1``) answered by
a future whose result is a protobuf ``SampleResponse``; the promise must carry one
``sample_sequence_ids`` entry per sample, stamped on the sequences. A 429 (or a 402 within
the billing pause) backs the whole holder off and the same request (same ``seq_id``) is sent
again (``_sampling_holder``). A promise the server has dropped (410) is sent again as a new
request, into the same future.

A ``SamplingClient`` pickles (to ``multiprocessing`` or ``ProcessPoolExecutor`` workers): the
copy samples through a shadow holder of its process (``_sampling_holder``), on the same
sampling session. Its ``seq_id``s are ``1e9 * k + n``: ``k`` is the ``client_counter`` of
``POST join_sampling_session`` when the server's flag ``sample_join_sampling_session`` is set
(asked once, before the first sample), else a random clone id, as in the official SDK.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import itertools
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import msgspec

from ._exceptions import APIStatusError
from ._observe import SECRET_HEADERS
from ._proto import decode_sample_response
from ._sampling_holder import (
    DispatchBytes,
    SampleDispatch,
    ShadowConfig,
    dispatch_size,
    shadow_service,
)
from ._tokenizer import load_tokenizer
from ._train_engine import Engine, post_future
from ._train_future import Future, proto_result, resolve
from ._train_types import ClientConfigResponse
from .resources.types import (
    EncodedTextChunk,
    FutureHandle,
    ModelInput,
    ModelInputChunk,
    SampleResponse,
    SamplingParams,
    TensorData,
)

__all__ = ["DEFAULT_WINDOW", "DispatchBytes", "SamplingClient", "SamplingClientState", "dispatch_size"]

DEFAULT_WINDOW = 64  # sample_many: how many samples are in flight at most
_SAMPLE = proto_result(decode_sample_response, "SampleResponse")
CLONE_BLOCK = 1_000_000_000  # a clone's seq_ids are CLONE_BLOCK * k + n
_CLOSED_UNSENT = "the ServiceClient was closed before this sample was sent"


class Session(Protocol):
    """What a sampling client uses of its ``ServiceClient`` (or of a shadow holder): the engine,
    the dispatch limits, the server's flags, and what a copy in another process is built from."""

    session_id: str
    _engine: Engine
    _config: ClientConfigResponse
    _sample_dispatch: SampleDispatch

    def _shadow_config(self) -> ShadowConfig: ...


class JoinSamplingSessionResponse(msgspec.Struct):
    """The answer of ``POST join_sampling_session``: this clone's id, unique in its sampling session."""

    client_counter: int


@dataclasses.dataclass(frozen=True)
class SamplingClientState:
    """What a pickled ``SamplingClient`` carries (the SDK's ``_SamplingClientPickleState``);
    its repr shows no credential."""

    holder: ShadowConfig
    sampling_session_id: str
    base_model: str
    model_path: str | None
    record_stability_info: bool = False


_HANDLE = msgspec.json.Decoder(SamplingClientState)


def _unpickle_sampling_client(state: SamplingClientState) -> SamplingClient:
    """A pickled ``SamplingClient`` in this process: on this process's shadow holder of its session."""
    service = shadow_service(state.holder)
    return SamplingClient(
        service,
        state.sampling_session_id,
        state.base_model,
        state.model_path,
        shadow=True,
        record_stability_info=state.record_stability_info,
    )


def _chunk(chunk: ModelInputChunk) -> dict[str, Any]:
    """A prompt chunk as the SDK's JSON: bytes in base64, every None left out."""
    if isinstance(chunk, EncodedTextChunk):
        return {"tokens": list(chunk.tokens), "type": "encoded_text"}
    return {k: v for k, v in msgspec.to_builtins(chunk).items() if v is not None}


def _params(params: SamplingParams) -> dict[str, Any]:
    """The SDK's JSON: every default sent, every None left out."""
    body: dict[str, Any] = {}
    for key in ("max_tokens", "seed", "stop"):
        value = getattr(params, key)
        if value is not None:
            body[key] = value
    body.update(temperature=float(params.temperature), top_k=params.top_k, top_p=float(params.top_p))
    return body


def _check_honored(result: SampleResponse, alt_tokens_k: int, last_n: int | None) -> None:
    """Fail, as the SDK does, when the server ignored what it was asked (a server older than the
    option): no ``prompt_alt_tokens`` for ``alt_tokens_k`` draws, or prompt logprobs scored before
    the last ``last_n`` tokens."""
    if alt_tokens_k > 0 and result.prompt_alt_tokens is None:
        raise RuntimeError(
            f"prompt_alt_tokens_k={alt_tokens_k} was requested but the server returned no "
            "prompt_alt_tokens; it may predate this feature"
        )
    logprobs = result.prompt_logprobs
    if last_n is not None and logprobs is not None:
        if any(value is not None for value in logprobs[: len(logprobs) - last_n]):
            raise RuntimeError(
                f"prompt_logprobs_last_n={last_n} was requested but the server returned prompt logprobs "
                "before that suffix; it may predate this feature"
            )


class SamplingClient:
    """Samples from one sampling session (a base model, or saved sampler weights).

    Made by ``ServiceClient.create_sampling_client`` or
    ``TrainingClient.save_weights_and_get_sampling_client``. Thread-safe.

    Picklable, for worker processes (``multiprocessing``, ``ProcessPoolExecutor``): the copy
    samples on the same sampling session, with ``seq_id``s of its own, and neither makes a
    session nor sends heartbeats (the ``ServiceClient`` in the main process does). The pickle
    carries the API key (a worker may have none), never shown in a repr.
    ``ServiceClient`` and ``TrainingClient`` stay in the main process.
    """

    def __init__(
        self,
        service: Session,
        sampling_session_id: str,
        base_model: str,
        model_path: str | None,
        *,
        shadow: bool = False,
        record_stability_info: bool = False,
    ) -> None:
        self.service = service
        self.sampling_session_id = sampling_session_id
        self.base_model = base_model
        self.model_path = model_path
        # every sample asks the server to record its sequences' stability information (for
        # StableReinforce training, which refers to them by sequence id)
        self.record_stability_info = record_stability_info
        # The clone id: 0 for the original; a copy asks the server (join_sampling_session) when
        # the flag says so (None until then), else picks one at random, as the SDK.
        self._clone: int | None = 0
        if shadow:
            joins = service._config.sample_join_sampling_session
            self._clone = None if joins else uuid.uuid4().int % CLONE_BLOCK + 1
        self._seq = itertools.count(CLONE_BLOCK * (self._clone or 0))  # the original's from 0, as the SDK's
        self._lock = threading.Lock()

    def _state(self) -> SamplingClientState:
        return SamplingClientState(
            self.service._shadow_config(),
            self.sampling_session_id,
            self.base_model,
            self.model_path,
            self.record_stability_info,
        )

    def __reduce__(self) -> tuple[Any, tuple[SamplingClientState]]:
        """Pickled as its session's shadow config and its sampler (see the class docstring)."""
        return (_unpickle_sampling_client, (self._state(),))

    def get_sampler_handle(self) -> str:
        """A string handle to this client's sampler, without credentials (no API key, no secret
        header, no ``proxy=``: the other process uses its own): a pickle-free way to another
        process, where ``from_sampler_handle`` makes a
        client on the same sampler, as many times as wanted, as the official SDK's."""
        state = self._state()
        holder = state.holder
        headers = {k: v for k, v in holder.default_headers.items() if k.lower() not in SECRET_HEADERS}
        bare = dataclasses.replace(holder, api_key=None, default_headers=headers, proxy=None)
        payload = msgspec.json.encode(dataclasses.replace(state, holder=bare))
        return base64.urlsafe_b64encode(payload).decode()

    @staticmethod
    def from_sampler_handle(handle: str, *, api_key: str | None = None) -> SamplingClient:
        """A client on the sampler behind ``handle`` (from ``get_sampler_handle``), authenticated
        with ``api_key`` or this process's credentials (as ``ServiceClient()`` resolves them)."""
        try:
            state = _HANDLE.decode(base64.urlsafe_b64decode(handle.encode()))
        except ValueError as error:  # binascii's and msgspec's errors are ValueErrors
            raise ValueError(
                f"not a sampler handle (from SamplingClient.get_sampler_handle): {error}"
            ) from None
        state = dataclasses.replace(state, holder=dataclasses.replace(state.holder, api_key=api_key))
        return _unpickle_sampling_client(state)

    def _join(self) -> None:
        """Have the server allocate this copy's clone id, once, before its first sample (lock held)."""
        answer = self.service._engine.client.post(
            "/api/v1/join_sampling_session",
            json={"sampling_session_id": self.sampling_session_id, "type": "join_sampling_session"},
            cast_to=JoinSamplingSessionResponse,
        )
        self._clone = answer.client_counter
        self._seq = itertools.count(CLONE_BLOCK * answer.client_counter)

    def _next_seq(self) -> int:
        with self._lock:
            if self._clone is None:
                self._join()
            return next(self._seq)

    def __repr__(self) -> str:
        return f"<tinker_sync.SamplingClient sampling_session_id={self.sampling_session_id!r}>"

    def get_base_model(self) -> str:
        """The base model's name."""
        return self.base_model

    def get_tokenizer(self) -> Any:
        """The base model's Hugging Face ``PreTrainedTokenizer`` (needs ``transformers``; see ``_tokenizer``)."""
        return load_tokenizer(self.base_model)

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> Future[SampleResponse]:
        """Sample ``num_samples`` sequences; the sequences carry their ``sequence_id``.

        ``target_prompt_logprobs``: token ids whose prompt logprobs to return, an int64
        ``[len(prompt) - 1, K]`` tensor (-1: none); ``prompt_alt_tokens_k``: that many draws
        at every prompt position after the first. Their answers are the result's
        ``target_prompt_logprobs`` and ``prompt_alt_tokens``.
        """
        if target_prompt_logprobs is not None and (
            target_prompt_logprobs.dtype != "int64"
            or target_prompt_logprobs.shape is None
            or len(target_prompt_logprobs.shape) != 2
        ):
            raise ValueError(
                "target_prompt_logprobs must be a 2-D int64 tensor of token ids, [len(prompt) - 1, K], "
                f"got {target_prompt_logprobs.dtype} of shape {target_prompt_logprobs.shape}"
            )
        if prompt_alt_tokens_k < 0:
            raise ValueError(f"prompt_alt_tokens_k must be 0 or greater, got {prompt_alt_tokens_k}")
        if prompt_logprobs_last_n is not None and prompt_logprobs_last_n < 1:
            raise ValueError(f"prompt_logprobs_last_n must be 1 or greater, got {prompt_logprobs_last_n}")
        if prompt_logprobs_last_n is not None and not include_prompt_logprobs:
            raise ValueError("prompt_logprobs_last_n applies to prompt logprobs; set include_prompt_logprobs")
        body: dict[str, Any] = {
            "num_samples": num_samples,
            "prompt": {"chunks": [_chunk(c) for c in prompt.chunks]},
            "sampling_params": _params(sampling_params),
            "sampling_session_id": self.sampling_session_id,
            "prompt_logprobs": include_prompt_logprobs,
            "topk_prompt_logprobs": topk_prompt_logprobs,
            "topk_sample_logprobs": topk_sample_logprobs,
            "prompt_alt_tokens_k": prompt_alt_tokens_k,
            "record_stability_info": self.record_stability_info,
            "type": "sample",
        }
        if target_prompt_logprobs is not None:
            tensor = msgspec.to_builtins(target_prompt_logprobs)  # the SDK's JSON: every None left out
            body["target_prompt_logprobs"] = {k: v for k, v in tensor.items() if v is not None}
        if prompt_logprobs_last_n is not None:
            body["prompt_logprobs_last_n"] = prompt_logprobs_last_n
        future: Future[SampleResponse] = Future()
        ids: list[str] = []
        engine = self.service._engine

        def decode(raw: bytes, protobuf: bool) -> SampleResponse:
            result = _SAMPLE(raw, protobuf)
            _check_honored(result, prompt_alt_tokens_k, prompt_logprobs_last_n)
            for sequence, sequence_id in zip(result.sequences, ids, strict=False):
                sequence.sequence_id = sequence_id
            return result

        def check(handle: FutureHandle) -> None:
            sequence_ids = handle.sample_sequence_ids or []
            if len(sequence_ids) != num_samples:
                raise ValueError(
                    f"asample answered {len(sequence_ids)} sample_sequence_ids for {num_samples} samples"
                )
            ids[:] = sequence_ids

        dispatch, size = self.service._sample_dispatch, dispatch_size(prompt)

        def send(track: bool = True) -> str:
            seq = self._next_seq()
            with dispatch.hold(size):  # the sending only: the result's wait holds nothing
                while True:  # a 429 (or 402): the holder backs off, then the same request again
                    if not dispatch.wait_backoff(engine.stopping):
                        raise RuntimeError(_CLOSED_UNSENT)
                    try:
                        handle = post_future(
                            engine,
                            future,
                            "/api/v1/asample",
                            "Sample",
                            decode,
                            json={**body, "seq_id": seq},
                            headers={"X-Tinker-Sampling-Backpressure": "1"},
                            protobuf=True,
                            resend=lambda: send(False),
                            track=track,
                            on_handle=check,
                            session=(self.sampling_session_id, self._clone or 0),
                            backpressure=True,
                        )
                    except APIStatusError as error:
                        if error.status_code == 429 or (
                            error.status_code == 402 and engine.billing.wait(error) is not None
                        ):
                            dispatch.back_off(size)
                            continue
                        raise
                    return handle.request_id

        def start() -> None:
            try:
                send()
            except BaseException as error:
                resolve(future, error=error)

        engine.submit(start, drop=lambda: resolve(future, error=RuntimeError(_CLOSED_UNSENT)))
        return future

    def compute_logprobs(
        self, prompt: ModelInput, prompt_logprobs_last_n: int | None = None
    ) -> Future[list[float | None]]:
        """The logprob of each prompt token (None for the first), or of the last
        ``prompt_logprobs_last_n`` only: a one-token sample with prompt logprobs."""
        sampled = self.sample(
            prompt,
            1,
            SamplingParams(max_tokens=1),
            include_prompt_logprobs=True,
            prompt_logprobs_last_n=prompt_logprobs_last_n,
        )
        result: Future[list[float | None]] = Future()
        result._follow(sampled)

        def done(f: Any) -> None:
            if f.cancelled():
                return
            error = f.exception()
            if error is not None:
                resolve(result, error=error)
            else:
                resolve(result, list(f.result().prompt_logprobs or []))

        sampled.add_done_callback(done)
        return result

    def sample_many(
        self,
        prompts: Iterable[ModelInput],
        num_samples: int,
        sampling_params: SamplingParams,
        *,
        window: int = DEFAULT_WINDOW,
        **options: Any,
    ) -> Iterator[SampleResponse]:
        """Sample every prompt of ``prompts`` (any iterable, read lazily); yield the results in order.

        At most ``window`` samples are in flight, so memory stays constant however
        many prompts there are. Leaving the loop early cancels what is not done.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        in_flight: collections.deque[Future[SampleResponse]] = collections.deque()
        try:
            for prompt in prompts:
                if len(in_flight) >= window:
                    yield in_flight.popleft().result()
                in_flight.append(self.sample(prompt, num_samples, sampling_params, **options))
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            for left in in_flight:
                left.cancel()
