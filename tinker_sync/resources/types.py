"""The API's JSON objects as msgspec Structs, with the official SDK's field names.

Rules (msgspec's schema evolution): unknown fields are ignored; a field the
SDK requires is required here too (the API is stable there, and a response
missing it raises APIResponseValidationError naming it); every other field
has a default. Value sets that may grow (checkpoint types, queue states,
stop reasons) are plain ``str``. Times decode to aware ``datetime`` objects.
Request bodies omit their defaults. Decoders are built once per type.

Last, the results of a client-side operation the API has no object for:
``SyncReport`` (``client.checkpoints.sync``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

__all__ = [
    "Checkpoint",
    "CheckpointArchiveUrl",
    "CheckpointList",
    "CreateModelResponse",
    "CreateSessionResponse",
    "Cursor",
    "EncodedTextChunk",
    "ExternalWeightsUrls",
    "FutureHandle",
    "HealthResponse",
    "ModelInput",
    "SampleResponse",
    "SampleStreamChunk",
    "SampledSequence",
    "SamplingParams",
    "SaveWeightsExternalResponse",
    "ServerCapabilities",
    "Session",
    "SessionList",
    "SupportedModel",
    "SyncFailure",
    "SyncReport",
    "SyncedCheckpoint",
    "TraceExport",
    "TrainingRun",
    "TrainingRunList",
    "WeightsInfo",
]


# -- checkpoints and training runs ------------------------------------------------------------------


class Cursor(msgspec.Struct):
    """Paging state of a list response: where this page starts, its size, and how many there are."""

    offset: int
    limit: int
    total_count: int


class Checkpoint(msgspec.Struct):
    """One checkpoint. ``checkpoint_id`` keeps the kind: ``weights/NAME``; ``checkpoint_type`` is
    ``training``, ``sampler`` or ``external``."""

    checkpoint_id: str
    checkpoint_type: str
    time: datetime
    tinker_path: str
    size_bytes: int | None = None
    public: bool = False
    expires_at: datetime | None = None
    user_metadata: dict[str, str] | None = None
    training_run_id: str | None = None


class CheckpointList(msgspec.Struct):
    """``GET /checkpoints`` (paged, with a cursor) and ``GET /training_runs/{run}/checkpoints`` (all)."""

    checkpoints: list[Checkpoint]
    cursor: Cursor | None = None


class CheckpointArchiveUrl(msgspec.Struct):
    """Where a checkpoint's tar archive can be fetched (a signed URL, no API key) and until when."""

    url: str
    expires: datetime | None = None


class ExternalWeightsUrls(msgspec.Struct):
    """``GET .../external_weights_urls``: relative path -> signed URL, valid until ``expires``."""

    urls: dict[str, str]
    expires: datetime


class TrainingRun(msgspec.Struct):
    """One training run."""

    training_run_id: str
    base_model: str
    model_owner: str
    is_lora: bool
    last_request_time: datetime
    corrupted: bool = False
    lora_rank: int | None = None
    last_checkpoint: Checkpoint | None = None
    last_sampler_checkpoint: Checkpoint | None = None
    user_metadata: dict[str, str] | None = None


class TrainingRunList(msgspec.Struct):
    """``GET /training_runs``: one page, and its cursor."""

    training_runs: list[TrainingRun]
    cursor: Cursor


# -- sessions -----------------------------------------------------------------------------------------


class SessionList(msgspec.Struct):
    """``GET /sessions``: one page of session ids (the API sends no total)."""

    sessions: list[str]


class Session(msgspec.Struct):
    """``GET /sessions/{id}``: the training runs and samplers a session created."""

    training_run_ids: list[str]
    sampler_ids: list[str]
    user_metadata: dict[str, str] | None = None
    display_name: str | None = None


class CreateSessionResponse(msgspec.Struct):
    """``POST /create_session``."""

    session_id: str
    info_message: str | None = None
    warning_message: str | None = None
    error_message: str | None = None


class WeightsInfo(msgspec.Struct):
    """``POST /weights_info``: what a checkpoint needs to be loaded (the SDK's WeightsInfoResponse)."""

    base_model: str
    is_lora: bool
    lora_rank: int | None = None
    train_unembed: bool | None = None
    train_mlp: bool | None = None
    train_attn: bool | None = None


# -- futures ------------------------------------------------------------------------------------------


class FutureHandle(msgspec.Struct):
    """What a future-returning call answers (the SDK's UntypedAPIFuture): poll ``request_id``."""

    request_id: str
    model_id: str | None = None
    sample_sequence_ids: list[str] | None = None


class CreateModelResponse(msgspec.Struct):
    """The result of a ``create_model`` future."""

    model_id: str


class SaveWeightsExternalResponse(msgspec.Struct):
    """The result of a ``save_weights_external`` future: the export's ``tinker://`` path."""

    path: str
    size_bytes: int | None = None


# -- the server ---------------------------------------------------------------------------------------


class HealthResponse(msgspec.Struct):
    """``GET /healthz``."""

    status: str


class TraceExport(msgspec.Struct):
    """``GET sessions/{id}/trace_export``: ``pending``, ``ready`` (with ``url``) or ``failed``."""

    status: str
    url: str | None = None
    error: str | None = None


class SupportedModel(msgspec.Struct):
    """A model the server can train or sample."""

    model_name: str | None = None
    max_context_length: int | None = None
    trainable: bool | None = None
    sampleable: bool | None = None


class ServerCapabilities(msgspec.Struct):
    """``GET /get_server_capabilities``."""

    supported_models: list[SupportedModel]


# -- sampling -----------------------------------------------------------------------------------------


class EncodedTextChunk(msgspec.Struct, tag_field="type", tag="encoded_text"):
    """Token ids of a prompt."""

    tokens: list[int]

    @property
    def length(self) -> int:
        """How many tokens the chunk holds."""
        return len(self.tokens)


class ModelInput(msgspec.Struct):
    """A prompt: a list of chunks (``ModelInput.from_ints([...])`` for plain token ids)."""

    chunks: list[EncodedTextChunk]

    @classmethod
    def from_ints(cls, tokens: Sequence[int]) -> ModelInput:
        """A prompt of token ids: one ``encoded_text`` chunk, as the official SDK builds it."""
        return cls([EncodedTextChunk(list(tokens))])

    @classmethod
    def empty(cls) -> ModelInput:
        """A prompt of no chunks."""
        return cls([])

    def to_ints(self) -> list[int]:
        """Every chunk's token ids, in order."""
        return [token for chunk in self.chunks for token in chunk.tokens]

    @property
    def length(self) -> int:
        """The context length the prompt uses (its token count)."""
        return sum(len(chunk.tokens) for chunk in self.chunks)

    def append(self, chunk: EncodedTextChunk) -> ModelInput:
        """A new prompt with ``chunk`` added at the end."""
        return ModelInput([*self.chunks, chunk])

    def append_int(self, token: int) -> ModelInput:
        """A new prompt with one more token (as its own chunk, as the SDK does)."""
        return self.append(EncodedTextChunk([token]))


class SamplingParams(msgspec.Struct, omit_defaults=True):
    """How to sample (the SDK's fields and defaults)."""

    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


class SampledSequence(msgspec.Struct):
    """One sampled sequence: its token ids, their logprobs, and why it stopped."""

    stop_reason: str
    tokens: list[int]
    logprobs: list[float] | None = None
    sequence_id: str | None = None  # stamped by the training SDKs from the promise's sample_sequence_ids
    topk_logprobs: list[list[tuple[int, float]] | None] | None = None


class SampleResponse(msgspec.Struct):
    """The result of a sampling future."""

    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: list[list[tuple[int, float]] | None] | None = None
    prompt_cache_hit_tokens: int = 0


class SampleStreamChunk(msgspec.Struct):
    """One event of ``POST /stream_sample``: a ``token``, the end (``done``) or an ``error``."""

    event_type: str = "token"
    token: str | None = None
    token_id: int | None = None
    index: int | None = None
    logprob: float | None = None
    finish_reason: str | None = None
    total_tokens: int | None = None
    message: str | None = None


# -- results of client-side operations ---------------------------------------------------------------


class SyncedCheckpoint(msgspec.Struct):
    """A checkpoint a sync downloaded into its mirror."""

    checkpoint_path: str
    destination: str
    file_size_bytes: int


class SyncFailure(msgspec.Struct):
    """A checkpoint a sync could not download (the others went on): what failed, in one line."""

    checkpoint_path: str
    error: str


class SyncReport(msgspec.Struct):
    """What ``client.checkpoints.sync`` did to a mirror of a training run's checkpoints.

    ``status``: ``"nothing to do"`` (every selected checkpoint was complete already), ``"synced"``
    (some were downloaded, none failed), ``"partial failure"`` (some failed; the others are
    complete) or ``"locked"`` (another sync holds the mirror: nothing was done; ``locked_by`` says
    which). ``current``: complete before; ``gone``: kept locally though the server no longer lists
    them (without ``prune``); ``pruned``: removed because the server no longer lists them.
    """

    run_id: str
    output_dir: str
    status: str
    downloaded: list[SyncedCheckpoint] = msgspec.field(default_factory=list)
    failed: list[SyncFailure] = msgspec.field(default_factory=list)
    current: list[str] = msgspec.field(default_factory=list)
    gone: list[str] = msgspec.field(default_factory=list)
    pruned: list[str] = msgspec.field(default_factory=list)
    locked_by: str | None = None
