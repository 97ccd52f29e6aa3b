"""Client: the public client, ``BaseClient`` plus the API's resources, their views, and downloads.

Rules:
1. Resources load lazily (the first use of ``client.checkpoints``), so that
   ``import tinker_sync`` and a plain call stay light; their types are known
   to mypy all the same.
2. ``APIResources[M]`` lists the resources once, for every mode: the client
   is ``APIResources[Parsed]``, ``client.with_raw_response`` an
   ``APIResources[Raw]`` and ``client.with_streaming_response`` an
   ``APIResources[Streamed]`` (see ``resources/_resource.py``).
"""

from __future__ import annotations

import copy
import os
import pathlib
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Unpack

from ._base_client import BaseClient
from ._config import Timeout
from ._options import Connections, FileOptions, Overrides, RequestOptions
from ._receiver import Progress
from ._transport import check_request
from .resources._resource import M, Parsed, Raw, Streamed

if TYPE_CHECKING:
    from .resources.checkpoints import Checkpoints
    from .resources.futures import Futures
    from .resources.sampling import Sampling
    from .resources.server import Health, Server
    from .resources.sessions import Sessions
    from .resources.training_runs import TrainingRuns

__all__ = ["APIResources", "Client"]


class APIResources(Generic[M]):
    """The API's resources in one mode: ``client`` itself (typed results),
    ``client.with_raw_response`` (``APIResponse`` objects, body read) or
    ``client.with_streaming_response`` (``with`` blocks, body unread)."""

    _mode: type[Any] = Parsed

    def __init__(self, client: Client, mode: type[M]) -> None:
        self._owner = client
        self._mode = mode

    def _api_client(self) -> Client:
        return self._owner

    @cached_property
    def health(self) -> Health[M]:
        """``check()``: is the API up."""
        from .resources.server import Health

        return Health(self._api_client(), self._mode)

    @cached_property
    def server(self) -> Server[M]:
        """``capabilities()``: the models the server can train and sample."""
        from .resources.server import Server

        return Server(self._api_client(), self._mode)

    @cached_property
    def training_runs(self) -> TrainingRuns[M]:
        """Training runs: list, iter, get."""
        from .resources.training_runs import TrainingRuns

        return TrainingRuns(self._api_client(), self._mode)

    @cached_property
    def checkpoints(self) -> Checkpoints[M]:
        """Checkpoint operations: list, iter, get, delete, publish, TTL, archive URLs and bodies, download."""
        from .resources.checkpoints import Checkpoints

        return Checkpoints(self._api_client(), self._mode)

    @cached_property
    def sessions(self) -> Sessions[M]:
        """Sessions: list, iter, get."""
        from .resources.sessions import Sessions

        return Sessions(self._api_client(), self._mode)

    @cached_property
    def futures(self) -> Futures[M]:
        """``retrieve()``: the result of an asynchronous call, polled within one deadline."""
        from .resources.futures import Futures

        return Futures(self._api_client(), self._mode)

    @cached_property
    def sampling(self) -> Sampling[M]:
        """``stream_sample()`` (tokens as they come) and ``sample()`` (through a future)."""
        from .resources.sampling import Sampling

        return Sampling(self._api_client(), self._mode)


# The cached properties: a copy made by with_options builds its own.
_CACHED = tuple(name for name, value in vars(APIResources).items() if isinstance(value, cached_property)) + (
    "with_raw_response",
    "with_streaming_response",
)


class Client(BaseClient, APIResources[Parsed]):
    """A synchronous, streaming-first Tinker API client.

    Args: see ``BaseClient`` (api_key, base_url, timeout, max_retries,
    default_headers, event_hooks, dump_headers, pool_maxsize,
    max_event_size, max_response_size, proxy, proxy_tunnel, verify, trust_env, sleep).

    Resources: ``client.health``, ``server``, ``training_runs``,
    ``checkpoints``, ``sessions``, ``futures``, ``sampling``; each method has
    a raw view (``client.with_raw_response.<resource>.<method>``, an
    ``APIResponse``) and a streaming view (``client.with_streaming_response...``,
    a ``with`` block whose body is unread).

    One client holds one connection pool and is safe to share between
    threads. Use it as a context manager, or call ``close()``.
    """

    def _api_client(self) -> Client:
        return self

    @cached_property
    def with_raw_response(self) -> APIResources[Raw]:
        """Every API method, returning an ``APIResponse[T]``: status, headers, ``parse()``; body read."""
        return APIResources(self, Raw)

    @cached_property
    def with_streaming_response(self) -> APIResources[Streamed]:
        """Every API method as a ``with`` block yielding an ``APIResponse[T]`` whose body is unread."""
        return APIResources(self, Streamed)

    def with_options(
        self,
        *,
        timeout: float | Timeout | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_response_size: int | None = None,
    ) -> Client:
        """A copy of this client with other defaults, sharing its connection pools (and its TLS
        context, hooks and settings): cheap enough to make per call or per task.

        Args:
            timeout: seconds or a ``Timeout``: the copy's default for every call.
            max_retries: the copy's retry budget per call.
            default_headers: headers for every API request of the copy, over
                this client's defaults (a header given here wins).
            max_response_size: the most bytes a non-streamed call of the copy reads, for one
                large answer: ``client.with_options(max_response_size=1 << 30).checkpoints.list(run)``.

        Closing the copy closes the shared pools: close the client you made first.
        """
        if max_response_size is not None and (type(max_response_size) is not int or max_response_size < 1):
            raise ValueError(f"max_response_size must be an integer of 1 or more, got {max_response_size!r}")
        clone = copy.copy(self)
        for name in _CACHED:
            clone.__dict__.pop(name, None)
        if max_response_size is not None:
            clone.max_response_size = max_response_size
        if timeout is not None:
            clone.timeout = Timeout.coerce(timeout)
        if max_retries is not None:
            clone.max_retries = max_retries
        if default_headers:
            check_request("GET", default_headers)
            clone.default_headers = {**self.default_headers, **default_headers}
        return clone

    copy = with_options  # the official SDK's other name for it

    # -- downloads -----------------------------------------------------------

    def download(
        self,
        url_or_path: str,
        dest: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        resume: bool = True,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        credentials: bool = True,
        connections: Connections = "auto",
        **overrides: Unpack[Overrides],
    ) -> pathlib.Path:
        """Download ``url_or_path`` (an API path or any http(s) URL, e.g. a signed URL) to ``dest``.

        A GET with ``Accept-Encoding: identity``; redirects are followed (up
        to 10), each hop built so that the API key and Tinker headers only go
        to the API's origin (never with ``credentials=False``, for signed
        URLs); https -> http is refused.

        - Constant memory, atomic: ``dest.part`` is renamed into place only
          when complete, verified and fsynced (``dest.part.json`` is its resume
          sidecar, ``dest.lock`` its lock: a second download of the same
          ``dest`` waits a few seconds, then raises DownloadLockedError).
        - Verified: the byte count against Content-Length / Content-Range and
          ``expected_size``; MD5, SHA-256 and CRC32C (with ``google-crc32c``)
          from ``x-goog-hash``, ``Content-Digest``, ``Digest`` or an ETag that
          is a plain MD5; and ``expected_sha256``.
        - Resumed: within the call (a broken body continues with Range), and
          across runs from a ``.part`` whose sidecar names the same URL (query
          aside, when an ETag pins it), with ``If-Range``. Anything that does
          not prove the bytes continue the same resource restarts from zero.
          ``resume=False`` always starts from zero.
        - Over several connections: when the server takes byte ranges (``Accept-Ranges:
          bytes``, a length, a strong ETag), ``connections`` fetch the file's pieces at once,
          each written at its offset into ``dest.part`` (of the file's size); the sidecar lists the
          pieces written, so a re-run fetches only what is missing, and any piece showing a
          changed ETag restarts the whole file from zero. ``"auto"`` (the default): 1 below
          32 MiB, one more per 16 MiB, up to 8; never more than ``pool_maxsize``. The same
          checks, in constant memory (a 256 KiB buffer per connection).

        Per-call overrides, as on every API method: ``timeout`` and ``max_retries`` are the whole
        download's (one deadline and one retry budget over every connection and resume);
        ``extra_headers`` and ``extra_query`` go to the URL given (as curl's ``-H``), with its
        resumes and ranges, a redirect within its origin too. A redirect to another origin (an
        API path's signed URL on a store) carries none of them, as it carries no API key.

        Returns:
            ``dest`` as a ``pathlib.Path``.

        Raises:
            TypeError: an unknown override.
            DownloadIntegrityError: size or checksum mismatch (``.part`` and sidecar removed).
            APIStatusError: the server refused (404, 403 for an expired signed URL, ...).
            APIConnectionError: the connection failed beyond the retry budget, or a bad redirect.
            DownloadLockedError: another download of ``dest`` holds its lock.
            OSError: not enough disk space, or the file system failed.
        """
        from ._download import download  # lazy: a plain call never needs it

        file = FileOptions(
            progress=progress,
            restart=not resume,
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            connections=connections,
        )
        options = RequestOptions("GET", url_or_path, credentials=credentials, file=file)
        return download(self, options.overridden(overrides), dest)
