"""The one continuation rule: whether a response continues a resource's bytes at an offset.

Every resume goes through ``continuation_problem``: a broken body resumed in the call, a
``.part`` resumed by a re-run, and each byte range of a download over several connections.
Anything it does not accept restarts a file from zero (or raises for a byte stream, which
cannot take back the bytes it handed out): never a spliced file.

Also here: the headers that rule reads (``Content-Range``, the validators) and the ``Range``
headers resumes send.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._transport import Request

__all__ = [
    "continuation_problem",
    "parse_content_range",
    "range_end",
    "strong_etag",
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
    """
    new = validator_of(headers)
    changed = new is not None and validator is not None and new != validator
    if status == 200 and offset == 0:
        return f"the resource changed (validator {validator!r} became {new!r})" if changed else None
    if status != 206:
        return f"the server answered {status} instead of 206 Partial Content"
    if not offset and not ranged:
        return "the server sent 206 Partial Content to a request without Range"
    parsed = parse_content_range(headers.get("content-range", ""))
    if parsed is None or parsed[0] != offset:
        return f"wrong Content-Range {headers.get('content-range')!r} for a resume at byte {offset}"
    if total is not None and parsed[2] is not None and parsed[2] != total:
        return f"the resource size changed from {total} to {parsed[2]}"
    if last is not None and parsed[1] != last:
        return f"Content-Range {headers.get('content-range')!r} does not reach byte {last}, as asked"
    length = headers.get("content-length", "").strip()
    if length.isdigit() and int(length) != parsed[1] - parsed[0] + 1 and _identity(headers):
        return f"Content-Length {length} does not match Content-Range {headers.get('content-range')!r}"
    if changed:
        return f"the resource changed (validator {validator!r} became {new!r})"
    return None


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
