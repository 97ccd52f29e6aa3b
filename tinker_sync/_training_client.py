"""``TrainingClient``: forward/backward, optimizer steps and checkpoints of one model, in order.

Rules (the official SDK's, kept exactly):
- Each call reserves its ``seq_id`` at once, under the client's lock, in call order;
  the requests go out in that order (a request waits until every lower ``seq_id`` of
  the client has been accepted), so a server that holds ``seq_id`` n+1 until n
  arrives sees them in order. Many threads may call one client.
- ``forward`` / ``forward_backward`` split ``data`` into chunks of at most
  ``fwdbwd_max_chunk_len`` datums (1,024) or about ``fwdbwd_max_chunk_bytes_count``
  estimated bytes (5 MB); each chunk gets its own ``seq_id``; the chunks of one call
  are sent in parallel, the first chunk last, without waiting for the others'
  answers (so no server ordering can deadlock them), and their results are merged
  (outputs concatenated, metrics reduced by their ``name:reduction`` suffix).
- A request that could not be sent (its retries spent) leaves a gap in the
  ``seq_id`` order that the server would wait on forever: the client is poisoned,
  every call after it raises ``RuntimeError`` (chained to the failure).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from ._proto import decode_forward_backward_output, encode_forward_backward_request, estimate_datum_bytes
from ._sampling_client import SamplingClient
from ._sampling_holder import SampleDispatch, ShadowConfig
from ._tokenizer import load_tokenizer
from ._train_engine import Engine, post_future
from ._train_future import Future, json_result, proto_result, resolve
from ._train_types import (
    AdamParams,
    ClientConfigResponse,
    Datum,
    DimuonParams,
    ForwardBackwardOutput,
    GetInfoResponse,
    LoadWeightsResponse,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsForSamplerResponseInternal,
    SaveWeightsResponse,
    console_url,
)
from .resources.types import SaveWeightsExternalResponse

__all__ = ["TrainingClient", "merge_outputs"]

log = logging.getLogger("tinker_sync")
FIRST_CHUNK_GRACE = 1.0  # how long the first chunk waits for the others' answers before it goes anyway
POISONED = "A previous request failed; this TrainingClient is poisoned and cannot accept further requests."
_FWDBWD = proto_result(decode_forward_backward_output, "ForwardBackwardOutput")


class Session(Protocol):
    """What a training client uses of its ``ServiceClient``."""

    session_id: str
    _engine: Engine
    _config: ClientConfigResponse
    _sample_dispatch: SampleDispatch  # for the sampling clients it makes

    def _shadow_config(self) -> ShadowConfig: ...

    def _compress(self, body: bytes) -> bytes: ...

    def _next_sampling_seq(self) -> int: ...

    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        *,
        record_stability_info: bool = False,
    ) -> Future[SamplingClient]: ...


def _reduce(reduction: str, values: list[float], weights: list[int]) -> float | None:
    if reduction == "sum":
        return float(sum(values))
    if reduction == "mean" or reduction == "slack":
        total = sum(weights)
        mean = (
            sum(v * w for v, w in zip(values, weights, strict=True)) / total
            if total
            else sum(values) / len(values)
        )
        return float(max(values) - mean) if reduction == "slack" else float(mean)
    if reduction == "min":
        return float(min(values))
    if reduction == "max":
        return float(max(values))
    if reduction == "hash2":
        return sum(int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in values) & 0xFFFF_FFFF_FFFF_FFFF
    return None


def merge_outputs(results: Sequence[ForwardBackwardOutput]) -> ForwardBackwardOutput:
    """The chunks of one call as one result: outputs in order, metrics reduced as the SDK does.

    Keys are ``name:reduction``; ``mean`` and ``slack`` are weighted by each chunk's
    datum count; ``unique`` keeps the first value and adds ``key_2``, ``key_3``...;
    a key missing from a chunk, or with an unknown reduction, is dropped.
    """
    if not results:
        return ForwardBackwardOutput("", [], {})
    weights = [len(r.loss_fn_outputs) for r in results]
    metrics: dict[str, float] = {}
    for key in results[0].metrics:
        reduction = key.split(":")[-1]
        if ":" not in key or not all(key in r.metrics for r in results):
            continue
        values = [r.metrics[key] for r in results]
        if reduction == "unique":
            metrics[key] = values[0]
            metrics.update({f"{key}_{i + 1}": v for i, v in enumerate(values[1:], start=1)})
            continue
        reduced = _reduce(reduction, values, weights)
        if reduced is None:
            log.debug("Unknown reduction %r of metric %r: dropped", reduction, key)
        else:
            metrics[key] = reduced
    outputs = [output for r in results for output in r.loss_fn_outputs]
    return ForwardBackwardOutput(results[0].loss_fn_output_type, outputs, metrics)


def chunk_data(data: Sequence[Datum], config: ClientConfigResponse) -> list[list[Datum]]:
    """``data`` in chunks of at most ``fwdbwd_max_chunk_len`` datums and about the byte limit (the SDK's rule)."""
    chunks: list[list[Datum]] = []
    current: list[Datum] = []
    size = 0
    for datum in data:
        estimate = estimate_datum_bytes(datum)
        if current and (
            size + estimate > config.fwdbwd_max_chunk_bytes_count
            or len(current) == config.fwdbwd_max_chunk_len
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(datum)
        size += estimate
    if current:
        chunks.append(current)
    return chunks


class TrainingClient:
    """One model being trained (see the module doc for ordering, chunking and poisoning).

    Made by ``ServiceClient.create_lora_training_client`` and the ``from_state``
    methods. Every method returns a ``Future`` at once; submit the next request
    before waiting on the last (``fb = tc.forward_backward(...); op = tc.optim_step(...)``).
    """

    def __init__(self, service: Session, model_id: str, model_seq_id: int, info: GetInfoResponse) -> None:
        self.service = service
        self.model_id = model_id
        self.model_seq_id = model_seq_id
        self._info = info
        self._lock = threading.Lock()
        self._next_seq = 1  # the SDK sends request_id + 1, from request id 0
        self._sent = threading.Condition()
        self._sent_through = 0  # every seq_id up to this one has been accepted
        self._sent_seqs: set[int] = set()
        self._error: BaseException | None = None

    def __reduce__(self) -> Any:
        raise TypeError(
            "a TrainingClient cannot be pickled: it stays in the main process with its ServiceClient; "
            "pass a SamplingClient to worker processes (it pickles)"
        )

    def __repr__(self) -> str:
        return f"<tinker_sync.TrainingClient model_id={self.model_id!r}>"

    def get_info(self) -> GetInfoResponse:
        """The model's info, fetched once when the client was made (no request)."""
        return self._info

    def get_base_model(self) -> str:
        """The base model's name."""
        return self._info.model_data.model_name or self._info.model_name or ""

    def get_tokenizer(self) -> Any:
        """The model's Hugging Face ``PreTrainedTokenizer`` (needs ``transformers``; see ``_tokenizer``)."""
        return load_tokenizer(self.get_base_model(), self._info.model_data.tokenizer_id)

    def get_console_url(self) -> str:
        """The Tinker Console page of this training run."""
        return console_url("training_runs", self.model_id)

    # -- ordering -----------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(POISONED) from self._error

    def _wait_turn(self, first_seq: int) -> None:
        with self._sent:
            while self._sent_through < first_seq - 1 and self._error is None:
                self._sent.wait()
        self._check()

    def _mark_sent(self, seq: int) -> None:
        with self._sent:
            self._sent_seqs.add(seq)
            while self._sent_through + 1 in self._sent_seqs:
                self._sent_seqs.discard(self._sent_through + 1)
                self._sent_through += 1
            self._sent.notify_all()

    def _poison(self, error: BaseException) -> None:
        with self._sent:
            if self._error is None:
                self._error = error
                log.error("TrainingClient %s is poisoned: %r", self.model_id, error)
            self._sent.notify_all()

    def _ordered(
        self,
        count: int,
        start: Callable[[int, int], None],
        fail: Callable[[int, int, BaseException], None],
        order: Sequence[int] | None = None,
        *,
        group: bool = False,
    ) -> None:
        """Reserve ``count`` seq_ids; submit ``start(seq, first)`` for each, in ``order`` (indexes).

        ``fail(seq, first, error)`` settles the seq's future when it cannot be sent. A ``group``
        (the chunks of one call sent in parallel) goes once every seq_id before ``first`` is
        accepted; otherwise each seq_id waits for the one before it.
        """
        with self._lock:
            self._check()
            first = self._next_seq
            self._next_seq += count
            closed = RuntimeError("the ServiceClient was closed before this request was sent")
            for index in order if order is not None else range(count):
                turn = first if group else first + index
                self.service._engine.submit(
                    functools.partial(self._send, start, fail, first + index, first, turn),
                    drop=functools.partial(self._dropped, fail, first + index, first, closed),
                )

    def _dropped(
        self, fail: Callable[[int, int, BaseException], None], seq: int, first: int, error: BaseException
    ) -> None:
        """A request the closing engine dropped before it was sent: its future fails, and so does
        every later call (a job waiting its turn behind it wakes and fails too)."""
        fail(seq, first, error)
        self._poison(error)

    def _send(
        self,
        start: Callable[[int, int], None],
        fail: Callable[[int, int, BaseException], None],
        seq: int,
        first: int,
        turn: int,
    ) -> None:
        try:
            self._wait_turn(turn)
            start(seq, first)
        except BaseException as error:
            fail(seq, first, error)
            self._poison(error)
            return
        self._mark_sent(seq)

    def _simple(self, path: str, request_type: str, body: dict[str, Any], cast_to: type[Any]) -> Future[Any]:
        future: Future[Any] = Future()
        decode = json_result(cast_to)

        def start(seq: int, _first: int) -> None:
            post_future(
                self.service._engine, future, path, request_type, decode, json={**body, "seq_id": seq}
            )

        self._ordered(1, start, lambda _seq, _first, error: resolve(future, error=error))
        return future

    # -- forward / backward -------------------------------------------------------------------------

    def forward(
        self, data: Sequence[Datum], loss_fn: str, loss_fn_config: Mapping[str, float | str] | None = None
    ) -> Future[ForwardBackwardOutput]:
        """The forward pass only (no gradients): outputs and loss."""
        return self._fwdbwd(data, loss_fn, loss_fn_config, forward_only=True)

    def forward_backward(
        self, data: Sequence[Datum], loss_fn: str, loss_fn_config: Mapping[str, float | str] | None = None
    ) -> Future[ForwardBackwardOutput]:
        """Forward and backward passes: gradients accumulate until the next ``optim_step``."""
        return self._fwdbwd(data, loss_fn, loss_fn_config, forward_only=False)

    def _fwdbwd(
        self,
        data: Sequence[Datum],
        loss_fn: str,
        config: Mapping[str, float | str] | None,
        *,
        forward_only: bool,
    ) -> Future[ForwardBackwardOutput]:
        self._check()
        flags = self.service._config
        chunks = chunk_data(data, flags)
        if not chunks:
            raise ValueError("No data provided")
        combined: Future[ForwardBackwardOutput] = Future()
        parts: list[Future[ForwardBackwardOutput]] = [Future() for _ in chunks]
        request_type = "Forward" if forward_only else "ForwardBackward"
        engine = self.service._engine
        others_sent = threading.Semaphore(0)
        parallel = flags.parallel_fwdbwd_chunks

        def start(seq: int, first: int) -> None:
            if (
                seq == first and parallel
            ):  # the first chunk goes last: the server then finds the whole batch queued
                deadline = time.monotonic() + FIRST_CHUNK_GRACE
                for _ in range(len(chunks) - 1):
                    if not others_sent.acquire(timeout=max(0.0, deadline - time.monotonic())):
                        break  # a server holding their answers until the first arrives: send it now
            body = encode_forward_backward_request(
                self.model_id, seq, chunks[seq - first], loss_fn, config, forward_only=forward_only
            )
            headers = {"Content-Type": "application/x-protobuf"}
            if flags.proto_compress_fwdbwd:
                body = self.service._compress(body)
                headers["Content-Encoding"] = "zstd"
            part = parts[seq - first]
            try:
                post_future(
                    engine,
                    part,
                    "/api/v1/forward_backward",
                    request_type,
                    _FWDBWD,
                    content=body,
                    headers=headers,
                    protobuf=True,
                )
            finally:
                if seq != first:
                    others_sent.release()

        def merge(_: concurrent.futures.Future[Any]) -> None:
            if all(p.done() for p in parts) and not combined.done():
                errors = [p.exception() for p in parts if p.exception() is not None]
                if errors:
                    resolve(combined, error=errors[0])
                else:
                    resolve(combined, merge_outputs([p.result() for p in parts]))

        for part in parts:
            part.add_done_callback(merge)
        combined._follow(parts[0])
        order = [*range(1, len(chunks)), 0] if parallel else list(range(len(chunks)))
        self._ordered(
            len(chunks),
            start,
            lambda seq, first, error: resolve(parts[seq - first], error=error),
            order,
            group=parallel,
        )
        return combined

    # -- optimizer and checkpoints ------------------------------------------------------------------

    def optim_step(
        self,
        optim_params: AdamParams | DimuonParams | Mapping[str, Any] | None = None,
        *,
        adam_params: AdamParams | None = None,
    ) -> Future[OptimStepResponse]:
        """One optimizer step, with the parameters of the model's optimizer family: ``AdamParams``
        go as ``adam_params``; ``DimuonParams`` (or a mapping with a ``type``, a family this
        version does not know) as ``optimizer_params``."""
        if optim_params is not None and adam_params is not None:
            raise ValueError("Specify optim_params or legacy adam_params, not both")
        params = optim_params if optim_params is not None else adam_params
        if isinstance(params, AdamParams):
            key, value = "adam_params", msgspec.to_builtins(params)
        elif isinstance(params, DimuonParams):
            key, value = "optimizer_params", msgspec.to_builtins(params)
        elif isinstance(params, Mapping) and "type" in params:
            key, value = "optimizer_params", dict(params)
        else:
            raise TypeError("Expected AdamParams, DimuonParams or optimizer params with a 'type'")
        body = {"model_id": self.model_id, "type": "optim_step", key: value}
        return self._simple("/api/v1/optim_step", "OptimStep", body, OptimStepResponse)

    def save_state(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> Future[SaveWeightsResponse]:
        """Save the weights and optimizer state as ``tinker://.../weights/NAME`` (to resume training)."""
        body: dict[str, Any] = {
            "model_id": self.model_id,
            "path": name,
            "overwrite": overwrite,
            "type": "save_weights",
        }
        _optional(body, ttl_seconds=ttl_seconds, user_metadata=user_metadata)
        return self._simple("/api/v1/save_weights", "SaveWeights", body, SaveWeightsResponse)

    def load_state(self, path: str, weights_access_token: str | None = None) -> Future[LoadWeightsResponse]:
        """Load weights (not the optimizer state) from a checkpoint into this model."""
        return self._load(path, False, weights_access_token)

    def load_state_with_optimizer(
        self, path: str, weights_access_token: str | None = None
    ) -> Future[LoadWeightsResponse]:
        """Load weights and optimizer state from a checkpoint into this model."""
        return self._load(path, True, weights_access_token)

    def _load(self, path: str, optimizer: bool, token: str | None) -> Future[LoadWeightsResponse]:
        body: dict[str, Any] = {
            "model_id": self.model_id,
            "path": path,
            "optimizer": optimizer,
            "type": "load_weights",
        }
        _optional(body, weights_access_token=token)
        return self._simple("/api/v1/load_weights", "LoadWeights", body, LoadWeightsResponse)

    def save_weights_for_sampler(
        self, name: str, ttl_seconds: int | None = None, user_metadata: dict[str, str] | None = None
    ) -> Future[SaveWeightsForSamplerResponse]:
        """Save sampler weights as ``tinker://.../sampler_weights/NAME``."""
        body: dict[str, Any] = {
            "model_id": self.model_id,
            "path": name,
            "kind": "snapshot",
            "type": "save_weights_for_sampler",
        }
        _optional(body, ttl_seconds=ttl_seconds, user_metadata=user_metadata)
        return self._simple(
            "/api/v1/save_weights_for_sampler", "SaveWeightsForSampler", body, SaveWeightsForSamplerResponse
        )

    def save_weights_external(
        self, name: str, ttl_seconds: int | None = None, age_encryption_recipients: list[str] | None = None
    ) -> Future[SaveWeightsExternalResponse]:
        """Export the weights to temporary external storage (``tinker://.../external_weights/NAME``)."""
        body: dict[str, Any] = {"model_id": self.model_id, "path": name, "type": "save_weights_external"}
        _optional(body, ttl_seconds=ttl_seconds, age_encryption_recipients=age_encryption_recipients)
        return self._simple(
            "/api/v1/save_weights_external", "SaveWeightsExternal", body, SaveWeightsExternalResponse
        )

    def save_weights_and_get_sampling_client(
        self, name: str | None = None, kind: str = "snapshot", *, record_stability_info: bool = False
    ) -> Future[SamplingClient]:
        """Save ephemeral sampler weights and make a ``SamplingClient`` on them (``name`` is ignored,
        as in the SDK; ``record_stability_info`` as ``ServiceClient.create_sampling_client``'s)."""
        service = self.service
        k = service._next_sampling_seq()
        body = {
            "model_id": self.model_id,
            "sampling_session_seq_id": k,
            "kind": kind,
            "type": "save_weights_for_sampler",
        }
        saved = self._simple(
            "/api/v1/save_weights_for_sampler",
            "SaveWeightsForSampler",
            body,
            SaveWeightsForSamplerResponseInternal,
        )
        client: Future[SamplingClient] = Future()

        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                return
            error = f.exception()
            if error is not None:
                resolve(client, error=error)
                return
            session = f.result().sampling_session_id
            if not session:
                resolve(client, error=ValueError("save_weights_for_sampler answered no sampling_session_id"))
                return
            sampler = SamplingClient(
                service, session, self.get_base_model(), None, record_stability_info=record_stability_info
            )
            resolve(client, sampler)

        saved.add_done_callback(done)
        return client

    def create_sampling_client(
        self, model_path: str, *, record_stability_info: bool = False
    ) -> Future[SamplingClient]:
        """A ``SamplingClient`` on saved sampler weights (``tinker://.../sampler_weights/NAME``)."""
        return self.service.create_sampling_client(
            model_path=model_path, record_stability_info=record_stability_info
        )


def _optional(body: dict[str, Any], **fields: Any) -> None:
    body.update({k: v for k, v in fields.items() if v is not None})
