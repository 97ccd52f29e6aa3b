"""The archive flow's signed URL and body: sign (waiting while the server
prepares the archive), open at an offset, re-sign when refused or about to
expire, and read the body as a file-like for the extractor.

Rules:
1. Signed URLs get no API key and no Tinker headers (``credentials=False``).
2. A resume keeps the offset: the extractor sees one seamless stream.
3. The retry budget renews whenever bytes arrive; re-signing that makes no
   progress gives up after MAX_RESIGNS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from .._config import Timeout
from .._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    CheckpointNotReadyError,
    UnsafeArchiveError,
)
from .._retry import retry_delay

if TYPE_CHECKING:
    from .._client import Client
    from .._response import StreamedResponse
    from .checkpoints import TinkerPath

__all__ = ["MAX_RESIGNS", "ArchiveSigner", "BodyReader", "Notify", "Progress", "is_compressed"]

log = logging.getLogger("tinker_sync")

Progress = Callable[[int, "int | None"], None]
Notify = Callable[[str], None]

# An archive URL is re-signed before a resume when this close to its Expires.
ARCHIVE_RESIGN_MARGIN = 10.0
# Re-signing that makes no progress (the new URL is refused too) gives up after this many.
MAX_RESIGNS = 3


class ArchiveSigner:
    """Gets (and renews) the archive's signed URL, and opens it at an offset."""

    def __init__(self, client: Client, path: TinkerPath, prepare_timeout: float, say: Notify) -> None:
        self.client = client
        self.path = path
        self.prepare_timeout = prepare_timeout
        self.say = say
        self.url = ""
        self.expires: float | None = None
        self._told = False

    def sign(self) -> str:
        """GET ``.../archive`` until it redirects, waiting while the server prepares the archive."""
        client = self.client
        start = time.monotonic()
        deadline = start + self.prepare_timeout
        transient = 0
        waits = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckpointNotReadyError(
                    f"The archive of {self.path} was not ready after {self.prepare_timeout:g} s; try again later"
                )
            request = client.build_request("GET", self.path.api_path + "/archive")
            # Slow headers count as preparation: wait for them up to the deadline.
            timeout = Timeout(connect=client.timeout.connect, read=max(1.0, remaining))
            headers: Any = None
            try:
                response = client.send(request, timeout=timeout, max_retries=0)
            except APITimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise CheckpointNotReadyError(
                        f"The archive of {self.path} was not ready after {self.prepare_timeout:g} s "
                        f"(no answer): {exc}",
                        request,
                    ) from exc
                transient += 1
                if transient > client.max_retries:
                    raise
            except APIStatusError as exc:
                if exc.status_code in (409, 503):
                    self._preparing()
                    headers = exc.response.headers if exc.response is not None else None
                    waits += 1
                elif exc.status_code in (408, 429) or exc.status_code >= 500:
                    transient += 1
                    if transient > client.max_retries:
                        raise
                    headers = exc.response.headers if exc.response is not None else None
                else:
                    raise
            except APIConnectionError:
                transient += 1
                if transient > client.max_retries:
                    raise
            else:
                with response:
                    location = response.headers.get("location")
                    if response.status_code == 202:
                        self._preparing()
                        headers = response.headers
                        waits += 1
                    elif 300 <= response.status_code < 400 and location:
                        self.url = urljoin(request.url, location)
                        self.expires = _http_date(response.headers.get("expires"))
                        if waits:
                            log.info(
                                "The archive of %s is ready after %.1f s", self.path, time.monotonic() - start
                            )
                        return self.url
                    else:
                        raise APIResponseValidationError(
                            f"Expected a redirect to the archive of {self.path}, got {response.status_code}"
                            f"{'' if location else ' without a Location header'}",
                            response,
                        )
            wait = retry_delay(min(waits, 2) if headers is not None else transient - 1, headers)
            if time.monotonic() + wait > deadline:
                wait = max(0.0, deadline - time.monotonic())
            client._sleep(wait)

    def _preparing(self) -> None:
        if not self._told:
            self._told = True
            self.say(
                f"The server is preparing the archive of {self.path}; waiting up to "
                f"{self.prepare_timeout:g} s"
            )

    def open(self, offset: int, validator: str | None) -> StreamedResponse:
        """GET the signed URL from ``offset``; a refused (expired) URL is re-signed and tried again."""
        for attempt in range(MAX_RESIGNS + 1):
            if self.expires is not None and time.time() > self.expires - ARCHIVE_RESIGN_MARGIN:
                self.say(f"The archive URL of {self.path} expires; signing it again")
                self.sign()
            try:
                headers = {"Range": f"bytes={offset}-", "If-Range": validator or ""} if offset else {}
                request = self.client.build_request("GET", self.url, headers=headers, credentials=False)
                return self.client.send(request)
            except APIStatusError as exc:
                if exc.status_code not in (401, 403) or attempt == MAX_RESIGNS:
                    raise
                self.say(f"The archive URL of {self.path} was refused ({exc.status_code}); signing it again")
                self.sign()
        raise AssertionError("unreachable")

    def reopener(
        self, response: StreamedResponse, total: int | None
    ) -> Callable[[int, str], StreamedResponse | None]:
        """``reopen(offset, validator)`` for ``resume_with``: the retry budget renews whenever bytes arrive."""
        state = {"offset": -1, "failures": 0}
        of = f" of {total}" if total is not None else ""

        def reopen(offset: int, validator: str) -> StreamedResponse | None:
            if offset != state["offset"]:
                state["offset"], state["failures"] = offset, 0
            if state["failures"] >= self.client.max_retries:
                return None
            wait = retry_delay(state["failures"])
            state["failures"] += 1
            self.say(f"Connection broke at byte {offset}{of}; resuming in {wait:.1f} s")
            self.client._sleep(wait)
            try:
                return self.open(offset, validator)
            except APIConnectionError as exc:
                log.info("Resume at byte %d failed: %s", offset, exc)
                return reopen(offset, validator)

        return reopen


class BodyReader:
    """``read(n)`` over a body's chunks, for the extractor; counts received bytes for progress."""

    def __init__(self, chunks: Iterator[bytes], progress: Progress, total: int | None) -> None:
        self._chunks = chunks
        self._progress = progress
        self._total = total
        self._chunk = b""
        self._pos = 0
        self.count = 0

    def _fill(self) -> bool:
        while self._pos >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._chunk, self._pos = chunk, 0
            self.count += len(chunk)
            self._progress(self.count, self._total)
        return True

    def peek(self) -> bytes:
        """The next bytes without consuming them (empty at the end)."""
        return self._chunk[self._pos :] if self._fill() else b""

    def read(self, n: int = -1) -> bytes:
        if not self._fill():
            return b""
        chunk, pos = self._chunk, self._pos
        if pos == 0 and (n < 0 or n >= len(chunk)):
            self._pos = len(chunk)
            return chunk  # the common case: no copy
        end = len(chunk) if n < 0 else min(len(chunk), pos + n)
        self._pos = end
        return chunk[pos:end]

    def drain(self, limit: int) -> None:
        """Read to the end of the body (so it completes, and its connection is reused)."""
        extra = 0
        while data := self.read(1 << 20):
            extra += len(data)
            if extra > limit:
                raise UnsafeArchiveError(
                    f"malformed archive: more than {limit} bytes after the end of the archive"
                )


def is_compressed(head: bytes) -> bool:
    """Whether an archive starts like a gzip, bzip2 or xz stream."""
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
