"""A synchronous, streaming-first client for the Tinker training API.

    import tinker_sync

    client = tinker_sync.Client()  # reads TINKER_API_KEY and TINKER_BASE_URL
    run = client.training_runs.get("run-001")  # a TrainingRun (a msgspec Struct)
    for chunk in client.sampling.stream_sample("Hello", max_tokens=8):  # tokens as they arrive
        print(chunk.token)
    client.checkpoints.download("tinker://run-001/weights/final", output_dir="checkpoints")

Plain blocking code over urllib3: every call can stream (``client.stream_post``,
``client.stream``), retries follow the official SDK's policy within one budget per
call, downloads are atomic, verified and resumable in constant memory, and errors
are the official SDK's exception classes (all under ``TinkerError``).

Where to look:
    Client               the client: resources (training_runs, checkpoints, sessions,
                         futures, sampling, health, server), the HTTP verbs, download
    tinker_sync.types    the API's objects as msgspec Structs
    Timeout, TLS         settings; EventHooks and *Info records: hooks
    tinker_sync.testing  a mock server with demo data: ``python -m tinker_sync.testing``
                         prints the ``export`` line that points your shell at it
    tinker-sync          the command line (``tinker-sync --help``)

The guide and the API reference: README.md and docs/ (``mkdocs serve`` with the
``[docs]`` extra).
"""

# Explicit re-exports only (a test checks __all__ is sorted and complete). Never imports the CLI,
# the testing server or tarfile: they load lazily, when used.
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
    ResponseTooLargeError,
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
    "ResponseTooLargeError",
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
