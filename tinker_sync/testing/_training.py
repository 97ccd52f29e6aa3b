"""Training and sampling sessions: the routes the training SDKs (official and tinker_sync) need.

Routes (relative to ``/api/v1``): ``forward_backward`` (protobuf, ``Content-Encoding: zstd`` optional), ``optim_step``,
``save_weights``, ``save_weights_for_sampler`` (named, or an ephemeral sampling
session), ``load_weights`` (``load_state``: seq-ordered, restores the fake model),
``create_sampling_session``, ``join_sampling_session`` (each session registered for
``GET samplers/{id}``), ``asample`` on a sampling session (sequence ids, 429 backpressure),
``retrieve_future`` for their promises (``_promises``), ``retrieve_futures``, ``cancel_future``.
The flags of ``client/config`` are the server's ``client_config`` (the handshake routes).

Rules:
- ``seq_id`` order per model: a request is processed when every lower seq_id of its
  model has arrived (``hold_out_of_order``: its HTTP answer waits too, so a client
  that waits for seq n+1's answer before sending n deadlocks, as on a strict server).
  Arrivals are recorded (``arrivals``) for tests.
- The fake model is deterministic: the logprob of target token t is
  ``-(0.5 + (t % 97) / 48.5) * 0.85 ** steps`` where ``steps`` counts the optim steps
  with a positive learning rate applied before it in seq order; so the loss falls as
  training goes. Samples come from the prompt and seed alone.
- Delays (``delays[kind]``, seconds from processing to ready) let tests hold results.
"""

from __future__ import annotations

import collections
import itertools
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ._checkpoints import Registry
from ._promises import Promise, Promises, clone_queue
from ._proto_wire import (
    WireError,
    decode_forward_backward_request,
    encode_dense_tensor,
    encode_fwdbwd_output,
    encode_sample_response,
)
from ._sampling import Sampler, SampleRequest, draw, token_ids
from ._sessions import Sessions
from ._types import HTTPError, Request, ServerState
from ._validate import decode, method_not_allowed, violation

__all__ = ["ROUTES", "Training"]

ROUTES = (
    "forward_backward",
    "optim_step",
    "save_weights",
    "save_weights_for_sampler",
    "create_sampling_session",
    "join_sampling_session",
    "retrieve_futures",
    "cancel_future",
)


def _target_logprobs(target: dict[str, Any] | None, prompt: list[int], steps: int) -> bytes | None:
    """Field 5 for a request's ``target_prompt_logprobs``: the logprob of each listed id (0.0 for -1)."""
    if target is None:
        return None
    shape, data = target.get("shape"), target.get("data")
    if target.get("dtype") != "int64" or not isinstance(shape, list) or len(shape) != 2:
        raise violation(422, "target_prompt_logprobs must be a 2-D int64 tensor", "validation_error")
    if shape[0] != len(prompt) - 1 or not isinstance(data, list) or len(data) != shape[0] * shape[1]:
        raise violation(
            422, "target_prompt_logprobs must be [len(prompt) - 1, K], data filled", "validation_error"
        )
    values = [0.0 if token == -1 else token_logprob(token, steps) for token in data]
    return encode_dense_tensor(values, 1, shape)


def _alt_tokens(k: int, prompt: list[int], seed: int, steps: int) -> tuple[bytes, bytes] | None:
    """Field 6 for ``prompt_alt_tokens_k``: k draws at every prompt position after the first."""
    if k <= 0:
        return None
    tokens = token_ids(draw(seed * 7_919 + k, (len(prompt) - 1) * k))
    shape = [len(prompt) - 1, k]
    return (
        encode_dense_tensor(tokens, 2, shape),
        encode_dense_tensor(token_logprobs(tokens, steps), 1, shape),
    )


def token_logprob(token: int, steps: int) -> float:
    """The fake model's logprob of ``token`` after ``steps`` optimizer steps."""
    return token_logprobs((token,), steps)[0]


def token_logprobs(tokens: Iterable[int], steps: int) -> list[float]:
    """The fake model's logprob of each token after ``steps`` optimizer steps."""
    decay = 0.85**steps
    return [-(0.5 + (token % 97) / 48.5) * decay for token in tokens]


class AdamParams(msgspec.Struct, forbid_unknown_fields=True):
    learning_rate: float = 0.0001
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class OptimStepRequest(msgspec.Struct, forbid_unknown_fields=True):
    model_id: str
    seq_id: int | None = None
    adam_params: AdamParams | None = None
    optimizer_params: dict[str, Any] | None = None
    type: str = "optim_step"


class SaveWeightsRequest(msgspec.Struct, forbid_unknown_fields=True):
    model_id: str
    path: str | None = None
    seq_id: int | None = None
    ttl_seconds: int | None = None
    overwrite: bool = False
    user_metadata: dict[str, Any] | None = None
    sampling_session_seq_id: int | None = None
    kind: str | None = None
    type: str | None = None


class CreateSamplingSessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    session_id: str
    sampling_session_seq_id: int
    base_model: str | None = None
    model_path: str | None = None
    type: str = "create_sampling_session"


class JoinSamplingSessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    sampling_session_id: str
    type: str = "join_sampling_session"


class LoadWeightsRequest(msgspec.Struct):
    path: str
    model_id: str | None = None
    seq_id: int | None = None
    session_id: str | None = None
    model_seq_id: int | None = None


class ModelState:
    """One training model as the fake backend sees it."""

    def __init__(self) -> None:
        self.steps = 0
        self.next_seq = 1
        self.held: dict[int, Callable[[], None]] = {}
        self.arrivals: list[int] = []
        self.processed = threading.Condition()


class SamplerState(msgspec.Struct):
    sampler_id: str
    base_model: str
    model_path: str | None
    steps: int
    joined: int = 0


def _zstd_decompress(body: bytes) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        try:
            from backports import zstd
        except ImportError:
            raise HTTPError(
                415, "this mock has no zstd binding installed", "unsupported_media_type"
            ) from None
    return bytes(zstd.decompress(body))


class Training:
    """The training backend of one mock server; its attributes are the knobs tests turn."""

    def __init__(
        self,
        state: ServerState,
        registry: Registry,
        sessions: Sessions,
        sampler: Sampler,
        promises: Promises,
        add_sampler: Callable[[str, str, str | None], None],
    ) -> None:
        self.state, self.registry, self.sessions, self.sampler = state, registry, sessions, sampler
        self.promises = promises
        self.add_sampler = add_sampler  # GET samplers/{id} (the inspect routes) answers for our sessions too
        self.lock = threading.Lock()
        self.delays: dict[str, float] = collections.defaultdict(float)
        self.hold_out_of_order = False
        self.sample_429s = 0  # answer this many backpressured asample requests 429 first
        self.sample_402s = 0  # ... then this many 402 (billing)
        # sample_gate: while set to an Event not yet set, asample requests are held there (their
        # answers wait), counted in sample_in_flight (the most at once: sample_most_in_flight).
        self.sample_gate: threading.Event | None = None
        self.sample_in_flight = 0
        self.sample_most_in_flight = 0
        self.sample_changed = threading.Condition(self.lock)
        self.models: dict[str, ModelState] = collections.defaultdict(ModelState)
        self.saved: dict[str, int] = {}  # tinker path -> steps
        self.samplers: dict[str, SamplerState] = {}
        self.fwdbwd_requests: list[dict[str, Any]] = []
        self.optim_requests: list[dict[str, Any]] = []
        self.counter = itertools.count(1)

    # -- dispatch -----------------------------------------------------------------------------------

    def route(self, request: Request, parts: list[str]) -> None:
        """Answer a request whose path (after ``/api/v1``) starts with one of ROUTES."""
        if request.command != "POST":
            raise method_not_allowed(request, ["POST"])
        if len(parts) != 1:
            raise violation(404, f"no route for {request.command} {request.path}", "not_found")
        if parts[0] == "retrieve_futures":
            return self.promises.retrieve_futures(request)
        if parts[0] == "cancel_future":
            return self.promises.cancel_future(request)
        handler: Callable[[Request], None] = getattr(self, "_" + parts[0])
        handler(request)

    # -- ordering -----------------------------------------------------------------------------------

    def _model(self, model_id: str) -> ModelState:
        with self.sessions.lock:
            known = model_id in self.sessions.models
        if not known:
            raise HTTPError(404, f"model {model_id!r} not found", "not_found")
        with self.lock:
            return self.models[model_id]

    def _ordered(self, model_id: str, seq_id: int | None, process: Callable[[], None]) -> None:
        """Run ``process`` in seq_id order for the model (now, or when the gap before it fills)."""
        if not seq_id or seq_id < 1:
            raise violation(400, f"seq_id must be a positive integer, got {seq_id!r}")
        model = self._model(model_id)
        with model.processed:
            model.arrivals.append(seq_id)
            if seq_id < model.next_seq or seq_id in model.held:
                raise violation(400, f"seq_id {seq_id} of {model_id} was already used")
            model.held[seq_id] = process
            while model.next_seq in model.held:
                model.held.pop(model.next_seq)()
                model.next_seq += 1
            model.processed.notify_all()
            if self.hold_out_of_order:
                deadline = time.monotonic() + 10.0
                while model.next_seq <= seq_id and time.monotonic() < deadline:
                    model.processed.wait(0.1)
                if model.next_seq <= seq_id:
                    raise violation(
                        409, f"seq_id {seq_id} of {model_id} waited 10 s for seq_id {model.next_seq}"
                    )

    def _answer(self, request: Request, promise: Promise, model_id: str) -> None:
        request.send_json(200, {"request_id": promise.request_id, "model_id": model_id})

    # -- training -----------------------------------------------------------------------------------

    def _forward_backward(self, request: Request) -> None:
        if "application/x-protobuf" not in request.headers.get("content-type", ""):
            raise violation(
                415, "forward_backward takes a protobuf body (Content-Type: application/x-protobuf)"
            )
        body = request.body
        if request.headers.get("content-encoding", "").lower() == "zstd":
            body = _zstd_decompress(body)
        try:
            decoded = decode_forward_backward_request(body)
        except (WireError, UnicodeDecodeError, IndexError) as error:
            raise violation(400, f"forward_backward body is not a ForwardBackwardRequest: {error}") from None
        model_id = decoded["model_id"]
        kind = "Forward" if decoded["forward_only"] else "ForwardBackward"
        model = self._model(model_id)
        with self.lock:
            self.fwdbwd_requests.append(decoded)
        promise = self.promises.create(kind)

        def process() -> None:
            logprobs, losses, total = [], [], 0.0
            for datum in decoded["data"]:
                inputs = datum["loss_fn_inputs"]
                targets = inputs.get("target_tokens", {"data": datum["tokens"]})["data"]
                weights = inputs.get("weights", {"data": [1.0] * len(targets)})["data"]
                lps = token_logprobs(map(int, targets), model.steps)
                loss = [-lp * w for lp, w in zip(lps, weights, strict=False)]
                logprobs.append(lps)
                losses.append(loss)
                total += sum(loss)
            proto = encode_fwdbwd_output(
                "tinker.mock:ArrayRecord",
                {"logprobs": logprobs, "elementwise_loss": losses},
                {"logprobs": 1, "elementwise_loss": 1},
                {"loss:sum": total},
            )
            self.promises.resolve(promise, proto=proto, delay=self.delays[kind])

        self._ordered(model_id, decoded["seq_id"], process)
        self._answer(request, promise, model_id)

    def _optim_step(self, request: Request) -> None:
        body = decode(request, OptimStepRequest)
        if (body.adam_params is None) == (body.optimizer_params is None):
            raise violation(422, "optim_step needs exactly one of adam_params and optimizer_params")
        model = self._model(body.model_id)
        with self.lock:
            self.optim_requests.append(request.json_body())
        promise = self.promises.create("OptimStep")
        lr = body.adam_params.learning_rate if body.adam_params is not None else 1.0

        def process() -> None:
            if lr > 0:
                model.steps += 1
            result = {"metrics": {"steps:max": float(model.steps)}, "type": "optim_step"}
            self.promises.resolve(promise, json=result, delay=self.delays["OptimStep"])

        self._ordered(body.model_id, body.seq_id, process)
        self._answer(request, promise, body.model_id)

    def _save(self, request: Request, kind: str) -> None:
        body = decode(request, SaveWeightsRequest)
        model = self._model(body.model_id)
        folder = "weights" if kind == "SaveWeights" else "sampler_weights"
        if body.path is None and kind == "SaveWeights":
            raise violation(422, "save_weights needs a path (a name)")
        if body.path is not None and (not body.path or "/" in body.path or body.path.startswith("tinker:")):
            raise violation(400, f"a checkpoint name is a plain name, not {body.path!r}")
        promise = self.promises.create(kind)

        def process() -> None:
            result: dict[str, Any] = {
                "type": "save_weights" if kind == "SaveWeights" else "save_weights_for_sampler"
            }
            if body.path is not None:
                path = f"tinker://{body.model_id}/{folder}/{body.path}"
                self.registry.add(
                    path, size=1 << 16, seed=zlib.crc32(path.encode()), n_files=2, created=time.time()
                )
                with self.lock:
                    self.saved[path] = model.steps
                result["path"] = path
            else:
                session = body.model_id.split(":", 1)[0]
                # The client's sampling_session_seq_id (a counter it shares with create_sampling_session)
                # names it, so the two never collide; the mock's own counter without one.
                seq = body.sampling_session_seq_id
                sampler_id = f"{session}:sample:{next(self.counter) if seq is None else seq}"
                base = self._base_model(body.model_id)
                with self.lock:
                    self.samplers[sampler_id] = SamplerState(sampler_id, base, None, model.steps)
                self.add_sampler(sampler_id, base, None)
                result["sampling_session_id"] = sampler_id
            self.promises.resolve(promise, json=result, delay=self.delays[kind])

        self._ordered(body.model_id, body.seq_id, process)
        self._answer(request, promise, body.model_id)

    def _save_weights(self, request: Request) -> None:
        self._save(request, "SaveWeights")

    def _save_weights_for_sampler(self, request: Request) -> None:
        self._save(request, "SaveWeightsForSampler")

    def load_weights(self, request: Request) -> bool:
        """``load_weights``: ``load_state`` (by model id, seq-ordered) is answered here (True);
        a new model from a checkpoint goes on to the sessions routes, with its steps restored."""
        body = decode(request, LoadWeightsRequest)
        with self.lock:
            steps = self.saved.get(body.path)
        if (
            body.model_id is None
            or body.seq_id is None
            or body.session_id is not None
            or body.model_seq_id is not None
        ):
            if body.session_id is not None and body.model_seq_id is not None and steps is not None:
                with self.lock:
                    self.models[f"{body.session_id}:train:{body.model_seq_id}"].steps = steps
            return False  # not load_state: the sessions routes answer (and validate) it
        if self.registry.find(body.path) is None:
            raise HTTPError(404, f"checkpoint {body.path} not found", "not_found")
        model = self._model(body.model_id)
        promise = self.promises.create("LoadWeights")
        model_id = body.model_id

        def process() -> None:
            model.steps = steps or 0
            with self.sessions.lock:  # what an export of this model then serves
                self.sessions.models[model_id].loaded_path = body.path
            result = {"path": body.path, "model_id": model_id, "type": "load_weights"}
            self.promises.resolve(promise, json=result, delay=self.delays["LoadWeights"])

        self._ordered(model_id, body.seq_id, process)
        self._answer(request, promise, model_id)
        return True

    def note_seq(self, request: Request) -> None:
        """A training request another module answers (``save_weights_external``) still takes its seq_id turn."""
        body = request.json_body()
        model_id, seq_id = body.get("model_id"), body.get("seq_id")
        if isinstance(model_id, str) and isinstance(seq_id, int):
            self._ordered(model_id, seq_id, lambda: None)

    def _base_model(self, model_id: str) -> str:
        with self.sessions.lock:
            record = self.sessions.models.get(model_id)
        return record.base_model if record is not None else "Qwen/Qwen3-8B"

    # -- sampling -----------------------------------------------------------------------------------

    def _create_sampling_session(self, request: Request) -> None:
        body = decode(request, CreateSamplingSessionRequest)
        if (body.base_model is None) == (body.model_path is None):
            raise violation(422, "create_sampling_session needs exactly one of base_model and model_path")
        steps, base = 0, body.base_model
        if body.model_path is not None:
            checkpoint = self.registry.find(body.model_path)
            if checkpoint is None:
                raise HTTPError(404, f"checkpoint {body.model_path} not found", "not_found")
            with self.lock:
                steps = self.saved.get(body.model_path, 0)
            base = self._base_model(checkpoint.run)
        sampler_id = f"{body.session_id}:sample:{body.sampling_session_seq_id}"
        with self.lock:
            self.samplers[sampler_id] = SamplerState(sampler_id, base or "", body.model_path, steps)
        self.add_sampler(sampler_id, base or "", body.model_path)
        request.send_json(200, {"type": "create_sampling_session", "sampling_session_id": sampler_id})

    def _join_sampling_session(self, request: Request) -> None:
        body = decode(request, JoinSamplingSessionRequest)
        sampler = self._sampler(body.sampling_session_id)
        with self.lock:
            sampler.joined += 1
            counter = sampler.joined
        request.send_json(200, {"type": "join_sampling_session", "client_counter": counter})

    def _sampler(self, sampler_id: str) -> SamplerState:
        with self.lock:
            sampler = self.samplers.get(sampler_id)
        if sampler is None:
            raise HTTPError(404, f"sampling session {sampler_id!r} not found", "not_found")
        return sampler

    def _hold_sample(self, request: Request) -> None:
        """Hold the request at ``sample_gate`` (if any) until it opens, counted while held."""
        gate = self.sample_gate
        if gate is None:
            return
        with self.lock:
            self.sample_in_flight += 1
            self.sample_most_in_flight = max(self.sample_most_in_flight, self.sample_in_flight)
            self.sample_changed.notify_all()
        try:
            while not gate.wait(0.05) and not request.state.wait(0):
                pass
        finally:
            with self.lock:
                self.sample_in_flight -= 1
                self.sample_changed.notify_all()

    def wait_samples_held(self, count: int, timeout: float = 60.0) -> bool:
        """Wait until ``count`` asample requests are held at ``sample_gate``; False after ``timeout``."""
        with self.lock:
            return self.sample_changed.wait_for(lambda: self.sample_in_flight >= count, timeout)

    def asample(self, request: Request) -> None:
        """``POST /asample``: on a sampling session here; by base model or path, the older route."""
        if request.command != "POST":
            raise method_not_allowed(request, ["POST"])
        body = decode(request, SampleRequest)
        if body.sampling_session_id is None:
            return self.sampler.route(request)
        if body.seq_id is None:
            raise violation(422, "asample with sampling_session_id needs seq_id", "validation_error")
        sampler = self._sampler(body.sampling_session_id)
        if request.headers.get("x-tinker-sampling-backpressure") == "1":
            with self.lock:
                refuse = self.sample_429s > 0
                self.sample_429s -= refuse
                billing = not refuse and self.sample_402s > 0
                self.sample_402s -= billing
            if refuse:
                raise HTTPError(
                    429, "sampling is backpressured: retry later", "rate_limit", [("Retry-After", "0")]
                )
            if billing:
                raise HTTPError(402, "the account is paused for billing", "billing")
        self._hold_sample(request)
        prompt = [t for chunk in body.prompt.chunks for t in chunk.tokens]
        params = body.sampling_params
        max_tokens = params.max_tokens if params.max_tokens is not None else 16
        seed = params.seed if params.seed is not None else zlib.crc32(repr(prompt).encode())
        sequences, json_sequences = [], []
        for i in range(body.num_samples):
            tokens = token_ids(draw(seed * 1_000_003 + i, max_tokens))
            logprobs = token_logprobs(tokens, sampler.steps)
            sequences.append((1, tokens, logprobs))
            json_sequences.append({"stop_reason": "length", "tokens": tokens, "logprobs": logprobs})
        prompt_logprobs = None
        if body.prompt_logprobs:
            prompt_logprobs = [math.nan, *token_logprobs(prompt[1:], sampler.steps)]
        last_n = body.prompt_logprobs_last_n
        if last_n is not None:
            if not body.prompt_logprobs or not 1 <= last_n <= len(prompt) - 1:
                raise HTTPError(
                    400,
                    "prompt_logprobs_last_n needs prompt_logprobs and 1 <= n <= len(prompt) - 1",
                    "invalid_request_error",
                )
            assert prompt_logprobs is not None
            prompt_logprobs[: len(prompt) - last_n] = [math.nan] * (len(prompt) - last_n)  # the suffix only
        targets = _target_logprobs(body.target_prompt_logprobs, prompt, sampler.steps)
        alternatives = _alt_tokens(body.prompt_alt_tokens_k, prompt, seed, sampler.steps)
        proto = encode_sample_response(sequences, prompt_logprobs, 0, targets, alternatives)
        clone = body.seq_id // 1_000_000_000  # the client's clone id: its completions' queue
        promise = self.promises.create("Sample", session=clone_queue(body.sampling_session_id, clone))
        json_result = {
            "type": "sample",
            "sequences": json_sequences,
            "prompt_logprobs": None if prompt_logprobs is None else [None, *prompt_logprobs[1:]],
        }
        self.promises.resolve(promise, json=json_result, proto=proto, delay=self.delays["Sample"])
        ids = [f"{body.sampling_session_id}:{body.seq_id}:{i}" for i in range(body.num_samples)]
        request.send_json(200, {"request_id": promise.request_id, "sample_sequence_ids": ids})
