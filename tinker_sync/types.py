"""The API's objects as msgspec Structs, for users: ``from tinker_sync.types import TrainingRun``.

The Structs live in ``tinker_sync.resources.types`` (still importable there);
this module re-exports every one of them.
"""

from .resources.types import (
    Checkpoint,
    CheckpointArchiveUrl,
    CheckpointList,
    CreateModelResponse,
    CreateSessionResponse,
    Cursor,
    EncodedTextChunk,
    ExternalWeightsUrls,
    FutureHandle,
    HealthResponse,
    ModelInput,
    SampledSequence,
    SampleResponse,
    SampleStreamChunk,
    SamplingParams,
    SaveWeightsExternalResponse,
    ServerCapabilities,
    Session,
    SessionList,
    SupportedModel,
    TrainingRun,
    TrainingRunList,
    WeightsInfo,
)

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
    "TrainingRun",
    "TrainingRunList",
    "WeightsInfo",
]
