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
from typing import Any, Literal

import msgspec

__all__ = [
    "Checkpoint",
    "CheckpointArchiveUrl",
    "CheckpointList",
    "CopyWeightsResponse",
    "CreateModelResponse",
    "CreateSessionResponse",
    "Cursor",
    "DmelChunk",
    "EncodedTextChunk",
    "ExternalWeightsUrls",
    "FutureHandle",
    "GetSamplerResponse",
    "HealthResponse",
    "ImageChunk",
    "ModelInput",
    "ModelInputChunk",
    "PromptAltTokens",
    "SampleResponse",
    "SampleStreamChunk",
    "SampledSequence",
    "SamplingParams",
    "SaveWeightsExternalResponse",
    "ServerCapabilities",
    "Session",
    "SessionList",
    "SessionSearchCursor",
    "SessionSearchResponse",
    "SessionStatus",
    "SessionSummary",
    "SupportedModel",
    "SyncFailure",
    "SyncReport",
    "SyncedCheckpoint",
    "TensorData",
    "TensorDtype",
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


class CopyWeightsResponse(msgspec.Struct):
    """``POST copy_weights``: the copy's tinker path."""

    tinker_path: str


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


class SessionStatus(msgspec.Struct):
    """Where a session stands: ``type`` is ``active``, ``cancelled``, ``failed`` or
    ``client_finished`` (a plain ``str``: the set may grow), with the fields of that kind."""

    type: str
    reason: dict[str, Any] | None = None  # failed: what failed it; client_finished: {"type": "success"...}
    category: str | None = None  # failed: "user" or "internal"
    message: str | None = None  # failed
    detail: str | None = None  # cancelled, client_finished


class SessionSummary(msgspec.Struct):
    """One session found by ``client.sessions.search``."""

    session_id: str
    created_at: datetime
    owner: str
    project_id: str
    checkpoints_count: int
    status: SessionStatus | None = None  # None: neither finished nor known to be running
    display_name: str | None = None
    user_metadata: dict[str, str] | None = None
    checkpoint_storage_bytes: int | None = None


class SessionSearchCursor(msgspec.Struct):
    """Where the next page of a session search starts: pass a page's ``next_cursor`` back unchanged."""

    last_created_at: datetime
    last_session_id: str


class SessionSearchResponse(msgspec.Struct):
    """``POST sessions/search``: one page of sessions, newest first."""

    sessions: list[SessionSummary]
    next_cursor: SessionSearchCursor | None = None  # None once the results are exhausted


class GetSamplerResponse(msgspec.Struct):
    """``GET samplers/{id}``: what a sampler (a sampling session) samples from."""

    sampler_id: str
    base_model: str
    model_path: str | None = None


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
    optimizer_config: dict[str, Any] | None = None  # the optimizer family ({"type": "adamw"}, ...)


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


class ImageChunk(msgspec.Struct, tag_field="type", tag="image"):
    """An image in a prompt: its bytes (base64 in JSON), ``png`` or ``jpeg``.

    ``expected_tokens`` is advisory (the server counts them and fails a mismatch
    early); a prompt's ``length`` needs it.
    """

    data: bytes
    format: Literal["png", "jpeg"]
    expected_tokens: int | None = None

    @property
    def length(self) -> int:
        """The tokens the image stands for: ``expected_tokens`` (ValueError when unset)."""
        if self.expected_tokens is None:
            raise ValueError("ImageChunk expected_tokens needs to be set in order to compute the length")
        return self.expected_tokens


class DmelChunk(msgspec.Struct, tag_field="type", tag="dmel"):
    """Audio in a prompt: serialized TensorContainer bytes of DMel model tokens (base64 in JSON),
    passed through as they are."""

    dmel: bytes


ModelInputChunk = EncodedTextChunk | ImageChunk | DmelChunk
"""One chunk of a prompt: token ids, an image or audio (tagged by ``type`` in JSON)."""


class ModelInput(msgspec.Struct):
    """A prompt: a list of chunks (``ModelInput.from_ints([...])`` for plain token ids)."""

    chunks: list[ModelInputChunk]

    @classmethod
    def from_ints(cls, tokens: Sequence[int]) -> ModelInput:
        """A prompt of token ids: one ``encoded_text`` chunk, as the official SDK builds it."""
        return cls([EncodedTextChunk(list(tokens))])

    @classmethod
    def empty(cls) -> ModelInput:
        """A prompt of no chunks."""
        return cls([])

    def to_ints(self) -> list[int]:
        """Every chunk's token ids, in order (ValueError for a prompt with an image or audio chunk)."""
        texts = [chunk for chunk in self.chunks if isinstance(chunk, EncodedTextChunk)]
        if len(texts) != len(self.chunks):
            kinds = [type(chunk).__name__ for chunk in self.chunks]
            raise ValueError(f"to_ints only supported for ModelInput with EncodedTextChunks, got {kinds}")
        return [token for chunk in texts for token in chunk.tokens]

    @property
    def length(self) -> int:
        """The context length the prompt uses (its token count; an image counts its ``expected_tokens``)."""
        total = 0
        for chunk in self.chunks:
            if isinstance(chunk, DmelChunk):
                raise ValueError(
                    "the length of a dmel chunk is not known here (its TensorContainer is opaque)"
                )
            total += chunk.length
        return total

    def append(self, chunk: ModelInputChunk) -> ModelInput:
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

    @property
    def tokens_np(self) -> Any:
        """``tokens`` as a 1-D int32 numpy array (needs numpy), as the official SDK offers it."""
        import numpy as np

        return np.asarray(self.tokens, dtype=np.int32)

    @property
    def logprobs_np(self) -> Any:
        """``logprobs`` as a 1-D float32 numpy array (needs numpy), or None when not asked for."""
        import numpy as np

        return None if self.logprobs is None else np.asarray(self.logprobs, dtype=np.float32)


TensorDtype = Literal["float32", "int64"]


class TensorData(msgspec.Struct):
    """A flat tensor: ``data`` (row-major), ``dtype`` (float32 or int64), ``shape``.

    With ``sparse_crow_indices`` / ``sparse_col_indices`` it is a sparse CSR
    matrix: ``data`` holds only the listed values and ``shape`` the dense shape.
    """

    data: Sequence[float]
    dtype: TensorDtype
    shape: list[int] | None = None
    sparse_crow_indices: list[int] | None = None
    sparse_col_indices: list[int] | None = None

    @classmethod
    def from_torch(cls, tensor: Any) -> TensorData:
        """A tensor of a torch tensor, as ``from_numpy`` (bfloat16 widened to float32; gradients
        and device left behind). torch is never imported here: the tensor brings it."""
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
            tensor = tensor.float()
        return cls.from_numpy(tensor.detach().cpu().contiguous().numpy())

    def to_torch(self, pad_value: int = 0) -> Any:
        """The tensor as a torch tensor of its shape (needs torch; sparse tensors densified with
        ``pad_value``)."""
        import torch

        return torch.from_numpy(self.to_numpy(pad_value))

    @classmethod
    def from_numpy(cls, array: Any) -> TensorData:
        """A tensor of a numpy array (floats become float32, integers int64)."""
        kind = array.dtype.kind
        if kind == "f":
            dtype: TensorDtype = "float32"
        elif kind in "iu":
            dtype = "int64"
        else:
            raise ValueError(f"Unsupported numpy dtype for TensorData: {array.dtype}")
        return cls(array.ravel().tolist(), dtype, list(array.shape))

    def to_numpy(self, pad_value: int = 0) -> Any:
        """The tensor as a numpy array of its shape (needs numpy; sparse tensors are densified
        with ``pad_value``)."""
        import numpy as np

        np_dtype = np.float32 if self.dtype == "float32" else np.int64
        if self.sparse_crow_indices is not None:
            if self.sparse_col_indices is None or self.shape is None:
                raise ValueError("a sparse CSR tensor needs sparse_col_indices and a shape")
            dense = np.full(self.shape, pad_value, dtype=np_dtype)
            crow, col = self.sparse_crow_indices, self.sparse_col_indices
            for row in range(len(crow) - 1):
                for at in range(crow[row], crow[row + 1]):
                    dense[row, col[at]] = self.data[at]
            return dense
        array = np.asarray(self.data, dtype=np_dtype)
        return array.reshape(self.shape) if self.shape is not None else array

    def tolist(self, pad_value: int = 0) -> list[Any]:
        """The tensor as nested lists of its shape (sparse tensors densified with ``pad_value``)."""
        if self.sparse_crow_indices is not None:
            return list(self.to_numpy(pad_value).tolist())
        flat = list(self.data)
        shape = self.shape if self.shape is not None else [len(flat)]
        if not shape:
            return flat
        return _nest(flat, shape)


def _nest(flat: list[Any], shape: list[int]) -> list[Any]:
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


class PromptAltTokens(msgspec.Struct):
    """``prompt_alt_tokens_k`` draws at every prompt position after the first: ``tokens`` (int64)
    and their ``logprobs`` (float32), both ``[len(prompt) - 1, k]``."""

    tokens: TensorData
    logprobs: TensorData


class SampleResponse(msgspec.Struct):
    """The result of a sampling future.

    ``target_prompt_logprobs``: the logprobs of the ids a request's ``target_prompt_logprobs``
    named (same shape; 0.0 where it had -1); ``prompt_alt_tokens``: what ``prompt_alt_tokens_k``
    asked for. Each None when not asked for.
    """

    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: list[list[tuple[int, float]] | None] | None = None
    prompt_cache_hit_tokens: int = 0
    target_prompt_logprobs: TensorData | None = None
    prompt_alt_tokens: PromptAltTokens | None = None

    @property
    def prompt_logprobs_np(self) -> Any:
        """``prompt_logprobs`` as a 1-D float32 numpy array, NaN where a token has none (needs
        numpy), as the official SDK offers it; None when not asked for."""
        import numpy as np

        if self.prompt_logprobs is None:
            return None
        return np.array([np.nan if x is None else x for x in self.prompt_logprobs], dtype=np.float32)


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
