"""Client: the public client, ``BaseClient`` plus the API's resources and downloads.

Rule: resources load lazily (the first use of ``client.checkpoints``), so that
``import tinker_sync`` and a plain call stay light; their types are known to
mypy all the same.
"""

from __future__ import annotations

import copy
import os
import pathlib
from functools import cached_property
from typing import TYPE_CHECKING

from ._base_client import BaseClient
from ._config import Timeout
from ._files import Progress

if TYPE_CHECKING:
    from .resources.checkpoints import Checkpoints

__all__ = ["Client"]

# The cached resource properties: a copy made by with_options builds its own.
_RESOURCES = ("checkpoints",)


class Client(BaseClient):
    """A synchronous, streaming-first Tinker API client.

    Args: see ``BaseClient`` (api_key, base_url, timeout, max_retries,
    default_headers, event_hooks, dump_headers, pool_maxsize,
    max_event_size, proxy, verify, trust_env, sleep).

    One client holds one connection pool and is safe to share between
    threads. Use it as a context manager, or call ``close()``.
    """

    def with_options(
        self, *, max_retries: int | None = None, timeout: float | Timeout | None = None
    ) -> Client:
        """A copy with other defaults, sharing this client's connection pool."""
        clone = copy.copy(self)
        for name in _RESOURCES:
            clone.__dict__.pop(name, None)
        if max_retries is not None:
            clone.max_retries = max_retries
        if timeout is not None:
            clone.timeout = Timeout.coerce(timeout)
        return clone

    # -- resources -----------------------------------------------------------

    @cached_property
    def checkpoints(self) -> Checkpoints:
        """Checkpoint operations: list, get, delete, publish, TTL, download."""
        from .resources.checkpoints import Checkpoints

        return Checkpoints(self)

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

        Returns:
            ``dest`` as a ``pathlib.Path``.

        Raises:
            DownloadIntegrityError: size or checksum mismatch (``.part`` and sidecar removed).
            APIStatusError: the server refused (404, 403 for an expired signed URL, ...).
            APIConnectionError: the connection failed beyond the retry budget, or a bad redirect.
            DownloadLockedError: another download of ``dest`` holds its lock.
            OSError: not enough disk space, or the file system failed.
        """
        from ._download import download  # lazy: a plain call never needs it

        return download(
            self,
            url_or_path,
            dest,
            progress=progress,
            resume=resume,
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            credentials=credentials,
        )
