"""Downloads above the client: a URL to a file, atomic, verified, resumable across runs.

The file pieces are ``_files`` (``.part``, sidecar, lock), ``_checksums`` and
``_receiver`` (written, hashed, verified, renamed); the bytes come from a
``StreamedResponse`` through ``_receive``, and it resumes a broken body inside
the call. This module adds what only a download needs: redirects followed by hand, resuming a ``.part`` left by an earlier run (``Range`` +
``If-Range``, judged by ``continuation_problem``, the same rule as in-call
resumes), a 416 to a complete ``.part``, clean restarts from zero, and the choice of how many
connections fetch the file (``_ranges`` writes their byte ranges at their offsets).

Rules:
1. A download asks for ``Accept-Encoding: identity`` and stores the bytes as
   served: an object a store keeps with ``Content-Encoding: gzip`` (S3 sends
   it so whatever is asked) is saved compressed, verified against the
   store's length and checksums, which are the compressed bytes'. A store
   that decoded it on the way (GCS's decompressive transcoding) sends
   checksums of bytes it did not send: those are skipped, said in a warning.
2. Never a spliced file, never a verified byte thrown away: only another version of
   the resource (its validator or size) restarts from zero. An answer of the same
   version given otherwise than asked (a 206 from earlier, running on or ending early,
   a 200 to a range) is used by the ranged receive, which skips the bytes held.
3. Every send, resume and restart of one download spends one retry budget,
   whatever the number of connections.
4. A re-run of a download over several connections asks only for what its
   sidecar does not list as written, the first piece before the others.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path

from ._base_client import BaseClient
from ._checksums import Checksum, checksums_from, headers_from
from ._continuation import continuation_problem, parse_content_range, strong_etag, url_expiry
from ._exceptions import APIConnectionError, APIStatusError
from ._files import PartFile, PartState, destination
from ._observe import StreamEndInfo, emit, mask_url
from ._options import Connections, RequestOptions
from ._range_plan import MIN_PIECE, auto_connections, holes, piece_size
from ._ranges import Source, Tally, receive_ranges
from ._receive import receive, receive_over_ranges
from ._response import StreamedResponse
from ._retry import RetryBudget
from ._transport import Request

__all__ = ["download"]

log = logging.getLogger("tinker_sync")

# A signed URL's expiry, less this (seconds), is when the last request may start: the server's
# Date has whole seconds, and a request takes a moment to reach it.
EXPIRY_MARGIN = 1.5
# With less than this left before that cutoff (seconds), other connections could not be asked in
# time: the file comes over the one answer already open.
MIN_AHEAD = 0.5


def download(
    client: BaseClient,
    options: RequestOptions,
    dest: str | os.PathLike[str],
    *,
    budget: RetryBudget | None = None,
) -> Path:
    """Download what ``options`` name (a GET of an API path or any http(s) URL, its ``file`` options
    checked when built) to ``dest``: atomic, verified, resumable, safe to run twice.

    See ``Client.download`` for the guarantees. ``budget`` shares the retry
    budget of a larger call (a checkpoint's files). Reports one ``stream_end``
    for the whole download: every request and byte over every connection.
    """
    url = client.build_url(options.url, options.params)
    options = options.replace(url=url, params=None, follow_redirects=True)
    part = PartFile(destination(dest, url))
    if budget is None:
        budget = client._budget(options)
    record = _Record(budget)
    error: BaseException | None = None
    try:
        with part.lock():
            return _download(client, options, part, record, budget)
    except BaseException as exc:
        error = exc
        raise
    finally:
        record.report(client, url, error)


class _Record:
    """What one download cost, for its one ``stream_end`` record: requests and bytes over every
    connection (the retry budget counts the sends; a shared budget counts from here)."""

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget
        self.attempts_before = budget.attempts
        self.started = time.monotonic()
        self.tally = Tally()
        self.single_bytes = 0  # bytes read by the one-connection receive
        self.status_code = 0

    def report(self, client: BaseClient, url: str, error: BaseException | None) -> None:
        emit(
            client.event_hooks,
            "stream_end",
            StreamEndInfo(
                "GET",
                mask_url(url),
                self.status_code,
                self.budget.attempts - self.attempts_before,
                self.tally.received + self.single_bytes,
                0,
                time.monotonic() - self.started,
                None if error is None else repr(error),
            ),
        )


def _download(
    client: BaseClient, options: RequestOptions, part: PartFile, record: _Record, budget: RetryBudget
) -> Path:
    url, file = options.url, options.file
    expected_size, expected_sha256 = file.expected_size, file.expected_sha256
    state = None if file.restart else part.load(url)
    if state is None:
        part.discard()
    elif state.ranges is not None and state.total is not None and not holes(state.ranges, state.total):
        # Every range was written (and pinned by the ETag) before the run ended: verify, rename.
        checks = checksums_from(headers_from(state.checksums), expected_sha256)
        receive_ranges(
            part,
            _nothing,
            connections=1,
            total=state.total,
            done=state.ranges,
            checks=checks,
            file=file,
        )
        return part.dest
    while True:
        offset = state.size if state is not None else 0
        headers = {"Accept-Encoding": "identity"}
        spread = _spread(client, state, file.connections)
        last = None
        if state is not None:
            headers["Range"] = f"bytes={offset}-"
            last = None if state.total is None else state.total - 1
            if spread is not None:  # the first missing piece; the others once it is answered
                offset, end, _ = spread
                headers["Range"] = f"bytes={offset}-{end - 1}"
                last = end - 1
            headers["If-Range"] = state.validator
        try:
            sends, asked_at = budget.attempts, time.monotonic()
            response = client._open(options.replace(headers={**(options.headers or {}), **headers}), budget)
            # What a request costs this server (its answer's wait), unless retries made it longer.
            ask_time = time.monotonic() - asked_at if budget.attempts == sends + 1 else 0.0
        except APIStatusError as exc:
            if exc.status_code != 416 or state is None:
                raise
            if spread is None and _complete_after_416(part, state, exc, expected_size, expected_sha256):
                log.info("%s was already complete", part.part)
                return part.finish()
            _restart(client, budget, part, exc.request, "the server cannot satisfy the range (416)")
            state = None
            continue
        record.status_code = response.status_code
        problem = _problem(response, state, offset, last)
        kept = state is not None and problem is not None and _keeps(response, state, offset)
        if kept:  # the same version, answered otherwise than asked: every byte held stays
            problem = None
        if problem is not None and response.status_code != 200:
            response.close()
            _restart(client, budget, part, response.request, problem)
            state = None
            continue
        if problem is not None:  # a whole 200 instead of the rest: use it, from zero
            log.warning("Restarting %s from byte 0: %s", part.dest, problem)
            part.discard()
            state, offset, spread = None, 0, None
        response.as_served()
        if state is None:
            checks = checksums_from(response.headers, expected_sha256)
            n = response.connections_for(file.connections)
        else:  # a verified continuation: the checksums are the ones saved with the .part
            checks = checksums_from(headers_from(state.checksums), expected_sha256)
            n = spread[2] if spread is not None else 1
        _say_unverified(response, part, checks, expected_size)
        total = response.total_size
        cutoff = _cutoff(response, part) if n > 1 else None
        if cutoff is not None and cutoff - time.monotonic() < MIN_AHEAD:
            log.debug("%s: one connection: its URL expires before more could be asked", part.dest)
            n, cutoff = 1, None
        if (n > 1 or spread is not None or kept) and total is not None:
            done = [] if state is None else state.ranges or [(0, state.size)]
            receive_over_ranges(
                response,
                part,
                connections=n,
                checks=checks,
                total=total,
                done=done,
                url=url,
                file=file,
                first_at=offset,
                cutoff=cutoff,
                tally=record.tally,
                ask_time=ask_time,
            )
            return part.dest
        try:
            receive(
                response,
                part,
                offset=offset,
                checks=checks,
                total=response.total_size,
                url=url,
                file=file,
            )
        finally:
            record.single_bytes += response.num_bytes_downloaded
        return part.dest


def _keeps(response: StreamedResponse, state: PartState, offset: int) -> bool:
    """Whether an answer to a re-run's Range, though not the exact continuation, is the same
    version of the resource and holds byte ``offset`` (a 206 from earlier, ending early, or a
    whole 200): the ranged receive uses it and keeps every byte the ``.part`` holds."""
    if state.total is None or not strong_etag(state.validator) or response.validator != state.validator:
        return False
    if response.status_code == 200:
        return response.total_size == state.total and not response._body.decode
    problem = continuation_problem(
        response.status_code, response.headers, offset, state.validator, state.total, ranged=True, cover=True
    )
    return problem is None


def _cutoff(response: StreamedResponse, part: PartFile) -> float | None:
    """The ``time.monotonic()`` after which no request for ``response``'s URL may start: the expiry
    the URL states, in the server's clock (its ``Date``), less ``EXPIRY_MARGIN``; None: no expiry."""
    expiry = url_expiry(response.url)
    if expiry is None:
        return None
    now = time.time()
    date = response.headers.get("date")
    try:
        server_now = parsedate_to_datetime(date).timestamp() if date else now
    except (TypeError, ValueError):
        server_now = now
    left = expiry - server_now - EXPIRY_MARGIN
    log.debug("%s: its URL expires in %.1f s (by the server's clock)", part.dest, expiry - server_now)
    return time.monotonic() + left


def _say_unverified(
    response: StreamedResponse, part: PartFile, checks: Sequence[Checksum], expected_size: int | None
) -> None:
    """Warn when the bytes are stored as served under an encoding nobody asked for (a download asks
    for ``identity``) and nothing can confirm them: no checksum, no length."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity") or checks:
        return
    confirm = "only its length confirms it" if response.total_size or expected_size else "nothing confirms it"
    log.warning(
        "%s is saved as served, encoded with Content-Encoding: %s (not decoded), and %s: no checksum",
        part.dest,
        encoding,
        confirm,
        extra={"unverified_encoding": encoding},
    )


def _spread(
    client: BaseClient, state: PartState | None, connections: Connections
) -> tuple[int, int, int] | None:
    """For a re-run that fetches the rest over several connections (a ``.part`` written so, or
    enough missing for ``connections``): the first missing piece ``[start, end)`` and the number
    of connections. None: one connection, from the ``.part``'s end."""
    if state is None or state.total is None or not strong_etag(state.validator):
        return None
    done = state.ranges if state.ranges is not None else [(0, state.size)]
    missing = holes(done, state.total)
    remaining = sum(end - start for start, end in missing)
    if not missing:
        return None
    if connections == "auto":
        n = auto_connections(remaining, client.max_connections) if remaining >= 2 * MIN_PIECE else 1
    else:
        n = min(connections, client.max_connections)
    if n == 1 and state.ranges is None:
        return None
    start, end = missing[0]
    return start, min(end, start + (remaining if n == 1 else piece_size(remaining, n))), n


def _nothing(start: int, end: int) -> Source:
    raise AssertionError(f"nothing is missing, yet bytes {start}-{end} were asked for")


def _problem(
    response: StreamedResponse, state: PartState | None, offset: int, last: int | None = None
) -> str | None:
    """Why ``response`` does not continue the ``.part`` at ``offset`` up to byte ``last`` (None when it does)."""
    if response.status_code not in (200, 206):
        response.close()
        raise APIConnectionError(
            f"Unexpected status {response.status_code} downloading {mask_url(response.url)}", response.request
        )
    if state is None:
        return continuation_problem(response.status_code, response.headers, 0, None, None)
    return continuation_problem(
        response.status_code, response.headers, offset, state.validator, state.total, ranged=True, last=last
    )


def _restart(client: BaseClient, budget: RetryBudget, part: PartFile, request: Request, problem: str) -> None:
    """Drop the ``.part`` and spend a retry on starting again from zero (raise when the budget is spent)."""
    log.warning("Restarting %s from byte 0: %s", part.dest, problem)
    part.discard()
    if not client.backoff(budget, request, f"cannot resume: {problem}", cause="resume"):
        raise APIConnectionError(f"Could not download {part.dest}: {problem}", request, cause="resume")


def _complete_after_416(
    part: PartFile,
    state: PartState,
    exc: APIStatusError,
    expected_size: int | None,
    expected_sha256: str | None,
) -> bool:
    """A 416 to ``Range: bytes=<part size>-``: is the ``.part`` the whole, verified resource?"""
    headers = getattr(exc.response, "headers", None) or {}
    parsed = parse_content_range(f"bytes 0-0/{headers.get('content-range', '').partition('/')[2]}")
    total = parsed[2] if parsed else None
    return part.is_complete(state, total, expected_size, expected_sha256)
