"""The archive flow's signed URL and body: sign (waiting while the server prepares the archive),
open the signed URL at an offset (re-signing when it is refused or about to expire), and read the
body as a file-like for the extractor.

Rules:
1. Signed URLs get no API key and no Tinker headers (``credentials=False``).
2. ``ArchiveSigner`` is the ``Sender`` of the archive's responses: a broken
   body resumes through the response's own resume (``Range`` at the same
   offset, the one continuation rule), and the signer only swaps in a fresh
   signed URL. The extractor sees one seamless stream.
3. Everything spends the download's one retry budget (renewed by progress),
   except waiting for the server to prepare the archive, which is bounded by
   ``prepare_timeout`` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Unpack
from urllib.parse import urljoin

from .._base_client import BaseClient
from .._buffers import READ_SIZE
from .._config import Timeout
from .._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    CheckpointNotReadyError,
    UnsafeArchiveError,
)
from .._options import RequestOptions
from .._receiver import Progress
from .._redirects import check_redirect
from .._response import StreamedResponse
from .._retry import RetryBudget, RetryHints, retry_delay, should_retry_status
from .._transport import Request
from ._paths import TinkerPath

__all__ = ["ARCHIVE_UNSUPPORTED", "ArchiveSigner", "BodyReader", "Notify", "http_date", "is_compressed"]

log = logging.getLogger("tinker_sync")

Notify = Callable[[str], None]

# An archive URL is re-signed before a resume when this close to its Expires.
ARCHIVE_RESIGN_MARGIN = 10.0
# How a server that no longer serves archives answers (a download then takes the export flow):
# final answers, never retried (501 would be, as a 5xx).
ARCHIVE_UNSUPPORTED = (404, 405, 501)


class ArchiveSigner:
    """Gets (and renews) the archive's signed URL, and opens it at an offset (the archive's ``Sender``)."""

    def __init__(
        self,
        client: BaseClient,
        path: TinkerPath,
        prepare_timeout: float,
        say: Notify,
        budget: RetryBudget,
        options: RequestOptions | None = None,
    ) -> None:
        self.client = client
        self.path = path
        # the signing request (the API's): a method's per-call headers and query go with it
        self.options = options or RequestOptions("GET", path.api_path + "/archive")
        self.prepare_timeout = prepare_timeout
        self.say = say
        self.budget = budget
        self.url = ""
        self.expires: float | None = None
        self._told = False

    def sign(self) -> str:
        """GET ``.../archive`` until it redirects, waiting while the server prepares the archive."""
        client, budget = self.client, self.budget
        start = time.monotonic()
        deadline = start + self.prepare_timeout
        waits = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckpointNotReadyError(
                    f"The archive of {self.path} was not ready after {self.prepare_timeout:g} s; try again later"
                )
            request = client.build_request(self.options)
            # Slow headers count as preparation: wait for them up to the deadline.
            timeout = Timeout(connect=client.timeout.connect, read=max(1.0, remaining))
            headers: Mapping[str, str] | None = None
            try:
                response = client.send(request, self.options.replace(timeout=timeout), budget, retry=False)
            except APITimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise CheckpointNotReadyError(
                        f"The archive of {self.path} was not ready after {self.prepare_timeout:g} s "
                        f"(no answer): {exc}",
                        request,
                    ) from exc
                if not client.backoff(budget, request, str(exc), cause=exc.cause):
                    raise
                continue
            except APIStatusError as exc:
                headers = exc.response.headers if exc.response is not None else None
                if exc.status_code in ARCHIVE_UNSUPPORTED:
                    raise
                if exc.status_code not in (409, 503):
                    reason = f"HTTP {exc.status_code}"
                    if should_retry_status(exc.status_code, headers or {}) and client.backoff(
                        budget, request, reason, headers=headers
                    ):
                        continue
                    raise
            except APIConnectionError as exc:
                if not client.backoff(budget, request, str(exc), cause=exc.cause):
                    raise
                continue
            else:
                with response:
                    location = response.headers.get("location")
                    if 300 <= response.status_code < 400 and location:
                        url = urljoin(request.url, location.strip())
                        # never down to plain http (the signed URL would travel in the clear), and
                        # only URLs that parse one way: a refusal raises at once, never retried
                        check_redirect(request.url, url, request)
                        self.url = url
                        self.expires = http_date(response.headers.get("expires"))
                        if waits:
                            log.info(
                                "The archive of %s is ready after %.1f s", self.path, time.monotonic() - start
                            )
                        return self.url
                    if response.status_code != 202:
                        raise APIResponseValidationError(
                            f"Expected a redirect to the archive of {self.path}, got {response.status_code}"
                            f"{'' if location else ' without a Location header'}",
                            response,
                        )
                    headers = response.headers
            # 409, 503 or 202: the archive is being prepared.
            self._preparing()
            wait = min(retry_delay(min(waits, 2), headers), max(0.0, deadline - time.monotonic()))
            waits += 1
            client._wait(wait, f"the server is preparing the archive of {self.path}")

    def _preparing(self) -> None:
        if not self._told:
            self._told = True
            self.say(
                f"The server is preparing the archive of {self.path}; waiting up to {self.prepare_timeout:g} s"
            )

    # -- the Sender of the archive's responses ---------------------------------

    @property
    def max_connections(self) -> int:
        return self.client.max_connections

    def send(
        self,
        request: Request,
        options: RequestOptions | None = None,
        budget: RetryBudget | None = None,
        *,
        quiet: bool = False,
    ) -> StreamedResponse:
        """GET the archive from the ``Range`` of ``request`` at the current signed URL, as the
        call's ``options`` say (its timeout; by default the client's).

        The URL is signed again first when about to expire, and when the
        storage refuses it (401/403: expired), within the retry budget.
        """
        budget = budget or self.budget
        ranged = {name: request.headers[name] for name in ("Range", "If-Range") if name in request.headers}
        while True:
            if self.expires is not None and time.time() > self.expires - ARCHIVE_RESIGN_MARGIN:
                self.say(f"The archive URL of {self.path} expires; signing it again")
                self.sign()
            signed = self.client.build_request(
                RequestOptions("GET", self.url, headers=ranged, credentials=False)
            )
            try:
                call = options or RequestOptions("GET", self.url)
                return self.client.send(signed, call, budget, quiet=True, resumer=self)
            except APIStatusError as exc:
                if exc.status_code not in (401, 403):
                    raise
                reason = f"the archive URL was refused ({exc.status_code})"
                if not self.client.backoff(budget, signed, reason, progress=_offset(ranged)):
                    raise
                self.say(f"The archive URL of {self.path} was refused ({exc.status_code}); signing it again")
                self.sign()

    def backoff(
        self, budget: RetryBudget, request: Request, reason: str, **hints: Unpack[RetryHints]
    ) -> bool:
        if not self.client.backoff(budget, request, reason, **hints):
            return False
        if (progress := hints.get("progress")) is not None:
            self.say(f"Connection broke at byte {progress}; resuming")
        return True


class BodyReader:
    """``read(n)`` over a response's body, for the extractor; counts received bytes for progress."""

    def __init__(self, response: StreamedResponse, progress: Progress, total: int | None) -> None:
        self._response = response
        self._progress = progress
        self._total = total
        self._buffer = memoryview(bytearray(READ_SIZE))
        self._pushback = b""
        self.count = 0

    def peek(self, n: int = 512) -> bytes:
        """The first bytes, without consuming them (fewer only at the end)."""
        data = self._pushback
        while len(data) < n and (more := self.read(n - len(data))):
            data += more
        self._pushback = data
        return data

    def read(self, n: int = -1) -> bytes:
        if self._pushback:
            cut = len(self._pushback) if n < 0 else n
            data, self._pushback = self._pushback[:cut], self._pushback[cut:]
            return data
        view = self._buffer if n < 0 else self._buffer[: min(n, READ_SIZE)]
        got = self._response.readinto(view)
        if got:
            self.count += got
            self._progress(self.count, self._total)
        return bytes(view[:got])

    def drain(self, limit: int) -> None:
        """Read to the end of the body (so it completes, and its connection is reused)."""
        extra = 0
        while data := self.read():
            extra += len(data)
            if extra > limit:
                raise UnsafeArchiveError(
                    f"malformed archive: more than {limit} bytes after the end of the archive"
                )


def is_compressed(head: bytes) -> bool:
    """Whether an archive starts like a gzip, bzip2 or xz stream."""
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


def _offset(headers: Mapping[str, str]) -> int:
    """The first byte a ``Range: bytes=N-`` header asks for (0 without one)."""
    first = headers.get("Range", "").removeprefix("bytes=").partition("-")[0]
    return int(first) if first.isdigit() else 0


def http_date(value: str | None) -> float | None:
    """An HTTP date (``Expires``) as a Unix time; None when absent or malformed."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
