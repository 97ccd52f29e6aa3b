"""The API's JSON objects as msgspec Structs.

Rules (msgspec's schema evolution): unknown fields are ignored, and every
field the client can live without has a default, so a server that adds or
drops an optional field never breaks decoding. Times decode to aware
``datetime`` objects. Decoders are built once per type by
``_response.json_decoder``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

__all__ = [
    "Checkpoint",
    "CheckpointList",
    "Cursor",
    "ExternalWeightsUrls",
    "SampleStreamChunk",
    "TrainingRun",
    "TrainingRunList",
]


class Cursor(msgspec.Struct):
    """Paging state of a list response."""

    offset: int = 0
    limit: int = 0
    total_count: int | None = None


class Checkpoint(msgspec.Struct):
    """One checkpoint. ``checkpoint_id`` keeps the kind: ``weights/NAME``."""

    checkpoint_id: str
    tinker_path: str = ""
    checkpoint_type: str | None = None
    training_run_id: str | None = None
    size_bytes: int | None = None
    public: bool = False
    time: datetime | None = None
    expires_at: datetime | None = None


class CheckpointList(msgspec.Struct):
    """``GET /checkpoints`` and ``GET /training_runs/{run}/checkpoints``."""

    checkpoints: list[Checkpoint] = []
    cursor: Cursor | None = None


class TrainingRun(msgspec.Struct):
    """One training run."""

    training_run_id: str
    base_model: str | None = None
    model_owner: str | None = None
    is_lora: bool | None = None
    lora_rank: int | None = None
    corrupted: bool = False
    last_request_time: datetime | None = None
    last_checkpoint: Checkpoint | None = None
    last_sampler_checkpoint: Checkpoint | None = None
    user_metadata: dict[str, Any] | None = None


class TrainingRunList(msgspec.Struct):
    """``GET /training_runs``."""

    training_runs: list[TrainingRun] = []
    cursor: Cursor | None = None


class ExternalWeightsUrls(msgspec.Struct):
    """``GET .../external_weights_urls``: relative path -> signed URL, valid until ``expires``."""

    urls: dict[str, str] = {}
    expires: datetime | None = None


class SampleStreamChunk(msgspec.Struct):
    """One event of ``POST /stream_sample``: a token, the end (``done``) or an ``error``."""

    event_type: str = "token"
    token: str | None = None
    token_id: int | None = None
    index: int | None = None
    logprob: float | None = None
    finish_reason: str | None = None
    total_tokens: int | None = None
    message: str | None = None
