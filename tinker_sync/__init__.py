"""tinker_sync: a synchronous, streaming-first client for the Tinker training API.

Explicit re-exports only. Never imports the CLI, the testing server or
tarfile: they load lazily, when used.
"""

import logging

from ._api_response import APIResponse, ResponseContextManager
from ._client import Client
from ._config import TLS, ArchiveLimits, Timeout
from ._event_stream import EventStream
from ._events import ServerSentEvent
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    CheckpointNotReadyError,
    ConflictError,
    DownloadIntegrityError,
    DownloadLockedError,
    InsecureRequestWarning,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestFailedError,
    SSEDecodeError,
    StreamAlreadyConsumed,
    TinkerError,
    UnprocessableEntityError,
    UnsafeArchiveError,
)
from ._observe import ErrorInfo, EventHooks, RequestInfo, ResponseInfo, RetryInfo, StreamEndInfo
from ._response import StreamedResponse
from ._sampling_client import SamplingClient
from ._service import ServiceClient
from ._train_future import Future
from ._training_client import TrainingClient
from ._version import __version__
from .resources.types import SyncedCheckpoint, SyncFailure, SyncReport

logging.getLogger("tinker_sync").addHandler(logging.NullHandler())

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponse",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "ArchiveLimits",
    "AuthenticationError",
    "BadRequestError",
    "BillingError",
    "CheckpointNotReadyError",
    "Client",
    "ConflictError",
    "DownloadIntegrityError",
    "DownloadLockedError",
    "ErrorInfo",
    "EventHooks",
    "EventStream",
    "Future",
    "InsecureRequestWarning",
    "InternalServerError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestFailedError",
    "RequestInfo",
    "ResponseContextManager",
    "ResponseInfo",
    "RetryInfo",
    "SSEDecodeError",
    "SamplingClient",
    "ServerSentEvent",
    "ServiceClient",
    "StreamAlreadyConsumed",
    "StreamEndInfo",
    "StreamedResponse",
    "SyncFailure",
    "SyncReport",
    "SyncedCheckpoint",
    "TLS",
    "Timeout",
    "TinkerError",
    "TrainingClient",
    "UnprocessableEntityError",
    "UnsafeArchiveError",
    "__version__",
]
