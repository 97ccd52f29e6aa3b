"""The one continuation rule: whether a response continues a resource's bytes at an offset.

Every resume goes through ``continuation_problem``: a broken body resumed in the call, a
``.part`` resumed by a re-run, and each byte range of a download over several connections.
Anything it does not accept restarts a file from zero (or raises for a byte stream, which
cannot take back the bytes it handed out): never a spliced file.

Also here: the headers that rule reads (``Content-Range``, the validators), the ``Range``
headers resumes send, and the expiry a signed URL states (after which no request may start).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from ._transport import Request

__all__ = [
    "answer_problem",
    "continuation_problem",
    "parse_content_range",
    "range_end",
    "strong_etag",
    "url_expiry",
    "validator_of",
    "whole_request",
]


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """``bytes A-B/N`` as (A, B, N or None for ``*``); None when malformed."""
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    if unit.lower() != "bytes" or not (first.isdigit() and last.isdigit()):
        return None
    if not (total.isdigit() or total == "*"):
        return None
    return int(first), int(last), int(total) if total.isdigit() else None


def validator_of(headers: Mapping[str, str]) -> str | None:
    """What If-Range can pin a resume to: a strong ETag, else Last-Modified."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("last-modified")


def continuation_problem(
    status: int,
    headers: Mapping[str, str],
    offset: int,
    validator: str | None,
    total: int | None,
    *,
    ranged: bool = False,
    last: int | None = None,
    cover: bool = False,
) -> str | None:
    """Why a response does not continue a resource's bytes at ``offset`` (None when it does).

    The one rule for every resume, in a call, across runs and for each range
    of a download over several connections: at ``offset`` 0 a 200 continues
    (it is the whole) unless its validator shows another version; otherwise
    only a 206 whose Content-Range starts at ``offset``, names the same
    total length, and whose validator (when it sends one) is ``validator``.
    ``ranged``: the request asked for a range from ``offset`` (so a 206 from
    byte 0 is a continuation too). ``last``: the last byte the request asked for
    (``total - 1`` for ``bytes=N-``); a 206 that stops before it, or whose
    Content-Length is not its Content-Range's span, would end the body early.
    A 206 running past ``last`` is fine: the reader stops where it needs to.
    ``cover``: the reader uses any 206 holding byte ``offset`` (it skips what comes
    before and asks again for what the answer lacks), so only another object or a
    body that cannot be the bytes it names is a problem.

    Each problem says what was asked and what came.
    """
    new = validator_of(headers)
    changed = new is not None and validator is not None and new != validator
    asked = f"asked for bytes={offset}-{'' if last is None else last}"
    if status == 200 and offset == 0:
        return f"the resource changed (validator {validator!r} became {new!r})" if changed else None
    if status != 206:
        return f"{asked}, the server answered {status} instead of 206 Partial Content"
    if not offset and not ranged:
        return "the server sent 206 Partial Content to a request without Range"
    value = headers.get("content-range")
    parsed = parse_content_range(value or "")
    if parsed is None:
        return f"{asked}, the server sent a wrong Content-Range {value!r} (not bytes A-B/N)"
    first, end, size = parsed
    if not (first == offset or (cover and first <= offset <= end)):
        return (
            f"{asked}, the server sent a wrong Content-Range {value!r} (it does not start at byte {offset})"
        )
    if total is not None and size is not None and size != total:
        return f"{asked} of {total} bytes, the server sent {value!r}: the resource size changed to {size}"
    if last is not None and end < last and not cover:
        return f"{asked}, the server sent Content-Range {value!r}: it ends before byte {last}"
    length = headers.get("content-length", "").strip()
    if length.isdigit() and int(length) != end - first + 1 and _identity(headers):
        return (
            f"{asked}, the server sent Content-Length {length}, which does not match Content-Range {value!r}"
        )
    if changed:
        return f"{asked} of version {validator!r}, the server sent {new!r}: the resource changed"
    return None


def answer_problem(
    status: int,
    headers: Mapping[str, str],
    offset: int,
    validator: str | None,
    total: int | None,
    *,
    last: int | None = None,
) -> tuple[str | None, bool]:
    """The one rule for an answer to a request for bytes ``offset``..``last`` of the version
    ``validator`` (``total`` bytes), by a reader that skips and asks again: (problem, changed).

    Usable (problem None): a 206 holding byte ``offset``, whatever its end (the bytes before
    ``offset`` are skipped, what it lacks is asked for again), or a 200 of the same version (its
    validator is ``validator``, its length ``total``), read from ``offset`` on. ``changed``: the
    problem shows another object (validator or size): only then does a file restart from zero;
    any other problem is the same object answered unusably (ask for it otherwise).
    """
    asked = f"asked for bytes={offset}-{'' if last is None else last}"
    new = validator_of(headers)
    if new is not None and validator is not None and new != validator:
        return f"{asked} of version {validator!r}, the server sent {new!r}: the resource changed", True
    if status == 206:
        parsed = parse_content_range(headers.get("content-range", ""))
        size = parsed[2] if parsed is not None else None
    else:
        length = headers.get("content-length", "").strip()
        size = int(length) if length.isdigit() and status == 200 else None
    if size is not None and total is not None and size != total:
        return f"{asked} of {total} bytes, the server sent {size}: the resource size changed", True
    if status == 200:
        if new is None and validator is not None:  # nothing shows it is the same version
            return f"{asked} of version {validator!r}, the server sent the whole without a validator", True
        return None, False
    problem = continuation_problem(
        status, headers, offset, validator, total, ranged=True, last=last, cover=True
    )
    return problem, False


def url_expiry(url: str, now: float | None = None) -> float | None:
    """When a signed URL stops being accepted, as the URL itself states it (unix seconds), or None.

    S3 (SigV4): ``X-Amz-Date`` + ``X-Amz-Expires``; GCS (V4): ``X-Goog-Date`` +
    ``X-Goog-Expires``; S3 SigV2, CloudFront and others: ``Expires`` in unix seconds.
    Stores check it when a request starts: a body already being sent runs to its
    end, a request made later is refused, and a download cannot sign the URL again.
    """
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    for prefix in ("x-amz-", "x-goog-"):
        date, seconds = query.get(f"{prefix}date", ""), query.get(f"{prefix}expires", "")
        if date and seconds.isdigit():
            try:
                signed = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
            except ValueError:
                continue
            return float(signed + int(seconds))
    expires = query.get("expires", "")
    return float(expires) if expires.isdigit() else None


def _identity(headers: Mapping[str, str]) -> bool:
    return headers.get("content-encoding", "identity").strip().lower() in ("", "identity")


def strong_etag(validator: str | None) -> bool:
    """Whether ``validator`` is a strong ETag: one version of one resource, byte for byte (ranges
    from several connections may be joined only then; a Last-Modified date may match two)."""
    return validator is not None and validator.startswith('"')


def whole_request(request: Request) -> Request:
    """``request`` for the whole resource again (its Range and If-Range dropped)."""
    headers = request.headers.copy()
    for name in ("Range", "If-Range"):
        headers.pop(name, None)
    return Request("GET", request.url, headers)


def range_end(value: str | None) -> str:
    """The last byte a ``Range: bytes=A-B`` header asks for (``"B"``), or ``""`` for ``bytes=A-``."""
    return (value or "").partition("-")[2].strip()
