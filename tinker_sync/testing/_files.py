"""Byte bodies with Range, If-Range, ETag and checksum headers: ``/test/bytes``, signed files, and
``/test/presigned/...``: the same bodies behind an object store's signed URL that expires.

A presigned URL carries its expiry the way S3 (``X-Amz-Date`` + ``X-Amz-Expires``), GCS
(``X-Goog-Date`` + ``X-Goog-Expires``) or CloudFront (``Expires``, unix seconds) write it. As
those stores do, the expiry is checked when a request starts: a body already being sent runs to its
end, a request made after the expiry is refused with the store's XML error.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import math
import os
import re
import time
from collections.abc import Hashable, Iterable, Iterator, Sequence
from email.utils import formatdate
from typing import Literal
from urllib.parse import quote, urlencode

from . import _data
from ._types import Fault, HTTPError, Request, ServerState

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")

# -- crc32c (Castagnoli), pure Python -----------------------------------------------------------------


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE: list[int] = []


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data``, continuing from ``crc``. Slow (pure Python): a few MB/s."""
    if not _CRC_TABLE:
        _CRC_TABLE.extend(_make_table())
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class Body:
    """A servable byte resource: size, a version key for its ETag, and ranged chunks."""

    content_type = "application/octet-stream"

    def __init__(self, key: Hashable, size: int, etag_stem: str) -> None:
        self.key = key
        self.size = size
        self.etag_stem = etag_stem

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        raise NotImplementedError


class GeneratedBody(Body):
    """``_data.generate(seed, size)``."""

    def __init__(self, key: Hashable, seed: int, size: int) -> None:
        super().__init__(key, size, f"{seed}-{size}")
        self.seed = seed

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        return _data.generate(self.seed, self.size, start, end)


class FileBody(Body):
    """A file on disk (a prepared archive)."""

    def __init__(self, key: Hashable, path: str, size: int, etag_stem: str) -> None:
        super().__init__(key, size, etag_stem)
        self.path = path

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining > 0:
                data = f.read(min(remaining, 1 << 20))
                if not data:
                    return
                remaining -= len(data)
                yield data


def _digest(state: ServerState, body: Body, algo: str) -> bytes:
    def compute() -> bytes:
        if algo == "crc32c":
            crc = 0
            for chunk in body.chunks(0, body.size):
                crc = crc32c(chunk, crc)
            return crc.to_bytes(4, "big")
        h = hashlib.new(algo)
        for chunk in body.chunks(0, body.size):
            h.update(chunk)
        return h.digest()

    return state.memo((body.key, body.size, body.etag_stem, algo), compute)


def checksum_headers(
    state: ServerState, body: Body, algos: Iterable[str], bad: bool
) -> list[tuple[str, str]]:
    """Headers advertising checksums of the whole body; ``bad`` flips a bit in each."""
    headers = []
    goog = []
    for algo in algos:
        name = "md5" if algo == "etag-md5" else algo
        if name not in ("md5", "crc32c", "sha256"):
            raise HTTPError(400, f"unknown checksum {algo!r}", "invalid_request_error")
        digest = _digest(state, body, name)
        if bad:
            digest = bytes([digest[0] ^ 0xFF]) + digest[1:]
        if algo == "etag-md5":
            continue  # handled by etag_of
        b64 = base64.b64encode(digest).decode()
        if name == "sha256":
            headers.append(("Content-Digest", f"sha-256=:{b64}:"))
        else:
            goog.append(f"{name}={b64}")
    if goog:
        headers.append(("x-goog-hash", ",".join(goog)))
    return headers


def etag_of(state: ServerState, body: Body, algos: Sequence[str] = (), bad: bool = False) -> str:
    if "etag-md5" in algos:
        digest = _digest(state, body, "md5")
        if bad:
            digest = bytes([digest[0] ^ 0xFF]) + digest[1:]
        return f'"{digest.hex()}"'
    return f'"{body.etag_stem}-{state.version(body.key)}"'


def last_modified_of(state: ServerState, body: Body) -> str:
    return formatdate(int(state.started_at) - 3600 + state.version(body.key), usegmt=True)


def parse_range(header: str, size: int) -> tuple[int, int] | Literal[False] | None:
    """(start, end_exclusive), None to ignore the header, or False if unsatisfiable."""
    match = _RANGE.match(header)
    if match is None:
        return None  # malformed or multi-range: serve the whole body
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None
    if start >= size:
        return False
    return start, min(end, size)


def serve_body(
    request: Request,
    body: Body,
    *,
    checksums: Sequence[str] = (),
    bad_checksum: bool = False,
    chunked: bool = False,
) -> None:
    """Answer GET or HEAD for ``body`` with Range / If-Range / ETag support and the request's fault."""
    if request.command not in ("GET", "HEAD"):
        raise HTTPError(
            405, f"method {request.command} not allowed", "method_not_allowed", [("Allow", "GET, HEAD")]
        )
    state = request.state
    etag = etag_of(state, body, checksums, bad_checksum)
    last_modified = last_modified_of(state, body)
    headers = [
        ("Content-Type", body.content_type),
        ("ETag", etag),
        ("Last-Modified", last_modified),
        ("Accept-Ranges", "bytes"),
        *checksum_headers(state, body, checksums, bad_checksum),
    ]
    status, start, end = 200, 0, body.size
    range_header = request.headers.get("range")
    if range_header and not request.fault.ignore_range:
        if_range = request.headers.get("if-range")
        if if_range is None or if_range.strip() in (etag, last_modified):
            parsed = parse_range(range_header, body.size)
            if parsed is False:
                raise HTTPError(
                    416,
                    f"range {range_header!r} not satisfiable for {body.size} bytes",
                    "range_not_satisfiable",
                    [("Content-Range", f"bytes */{body.size}")],
                )
            if parsed:
                start, end = _answered_range(request.fault, *parsed, body.size)
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{body.size}"))
    framing = request.start_response(
        status, headers, length=end - start, framing="chunked" if chunked else "length"
    )
    request.emit(body.chunks(start, end), framing)


def _answered_range(fault: Fault, start: int, end: int, size: int) -> tuple[int, int]:
    """The bytes a 206 answers for ``[start, end)``: as asked, or as the fault's server answers ranges."""
    if fault.range_widen:
        start, end = max(0, start - fault.range_widen), min(size, end + fault.range_widen)
    if fault.range_to_eof:
        end = size
    if fault.range_short:
        end = min(end, start + fault.range_short)
    return start, end


def _bytes_params(query: dict[str, str]) -> tuple[int, int]:
    try:
        return int(query.get("size", "1024")), int(query.get("seed", "0"))
    except ValueError:
        raise HTTPError(400, "size and seed must be integers", "invalid_request_error") from None


def bytes_key(query: dict[str, str]) -> Hashable:
    """The version key of ``/test/bytes`` with this query (for Fault.change_etag)."""
    size, seed = _bytes_params(query)
    return ("bytes", seed, size)


def bytes_route(request: Request) -> None:
    """``GET|HEAD /test/bytes``: ``size`` bytes made from ``seed``, with Range and checksums."""
    query = request.query
    size, seed = _bytes_params(query)
    checksum = query.get("checksum")
    body = GeneratedBody(("bytes", seed, size), seed, size)
    serve_body(
        request,
        body,
        checksums=[c for c in (checksum or "").split(",") if c],
        bad_checksum=query.get("bad_checksum") in ("1", "true"),
        chunked=query.get("chunked") in ("1", "true"),
    )


# -- presigned URLs, as object stores write them -------------------------------------------------------

PRESIGN_STYLES = ("s3", "gcs", "expires")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
# The signature parameter of each style, and the statuses and codes its store answers once expired.
_SIGNATURE = {"s3": "X-Amz-Signature", "gcs": "X-Goog-Signature", "expires": "Signature"}


def _presign_key(state: ServerState) -> bytes:
    return state.memo(("presign-key",), lambda: os.urandom(32))


def _signature(state: ServerState, path: str, params: dict[str, str], style: str) -> str:
    signed = sorted((k, v) for k, v in params.items() if k != _SIGNATURE[style])
    message = f"{path}\n{urlencode(signed)}".encode()
    return hmac.new(_presign_key(state), message, hashlib.sha256).hexdigest()


def presign(
    state: ServerState,
    name: str,
    *,
    size: int,
    seed: int = 0,
    expires_in: int,
    style: str = "s3",
    signed_ago: int = 0,
    extra: dict[str, str] | None = None,
) -> str:
    """An absolute presigned URL for ``size`` bytes from ``seed``, valid ``expires_in`` more seconds
    (whole seconds: the stores' dates have no fraction), signed ``signed_ago`` seconds ago.
    ``extra``: more query parameters (faults, ``checksum``), signed with the rest."""
    if style not in PRESIGN_STYLES:
        raise ValueError(f"style must be one of {PRESIGN_STYLES}, got {style!r}")
    now = math.floor(time.time())
    signed_at, lifetime = now - signed_ago, expires_in + signed_ago
    date = time.strftime(_AMZ_DATE, time.gmtime(signed_at))
    params = {"size": str(size), "seed": str(seed), **(extra or {})}
    if style == "s3":
        params |= {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"MOCKKEY/{date[:8]}/us-east-1/s3/aws4_request",
            "X-Amz-Date": date,
            "X-Amz-Expires": str(lifetime),
            "X-Amz-SignedHeaders": "host",
        }
    elif style == "gcs":
        params |= {
            "X-Goog-Algorithm": "GOOG4-HMAC-SHA256",
            "X-Goog-Credential": f"mock@example.iam.gserviceaccount.com/{date[:8]}/auto/storage/goog4_request",
            "X-Goog-Date": date,
            "X-Goog-Expires": str(lifetime),
            "X-Goog-SignedHeaders": "host",
        }
    else:
        params |= {"Expires": str(signed_at + lifetime), "Key-Pair-Id": "MOCKKEYPAIR"}
    path = f"/test/presigned/{style}/{quote(name)}"
    params[_SIGNATURE[style]] = _signature(state, path, params, style)
    return f"{state.url}{path}?{urlencode(params)}"


def _expiry(query: dict[str, str], style: str) -> float:
    """When a presigned URL expires (unix seconds). Raises HTTPError 403 when it does not parse."""
    try:
        if style == "expires":
            return float(int(query["Expires"]))
        prefix = "X-Amz-" if style == "s3" else "X-Goog-"
        signed_at = calendar.timegm(time.strptime(query[f"{prefix}Date"], _AMZ_DATE))
        return float(signed_at + int(query[f"{prefix}Expires"]))
    except (KeyError, ValueError):
        raise HTTPError(403, "malformed presigned URL", "signature_invalid") from None


def _xml_error(request: Request, status: int, fields: dict[str, str]) -> None:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    content = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>'.encode()
    framing = request.start_response(status, [("Content-Type", "application/xml")], length=len(content))
    request.emit([content], framing)


def presigned_route(request: Request) -> None:
    """``GET|HEAD /test/presigned/<style>/<name>``: ``/test/bytes``'s body behind a signature that
    expires, checked when the request starts (a 403, or GCS's 400, with the store's XML error)."""
    parts = request.path.split("/", 4)  # "", "test", "presigned", style, name
    style = parts[3] if len(parts) == 5 else ""
    if style not in PRESIGN_STYLES:
        raise HTTPError(404, f"no presigned style {style!r}", "not_found")
    query = request.query
    given = query.get(_SIGNATURE[style], "")
    if not hmac.compare_digest(given, _signature(request.state, request.path, query, style)):
        return _xml_error(request, 403, {"Code": "SignatureDoesNotMatch", "Message": "signature mismatch"})
    expires = _expiry(query, style)
    now = time.time()
    if now > expires:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        if style == "gcs":
            details = f"The provided token has expired. Request signature expired at: {stamp}"
            return _xml_error(
                request, 400, {"Code": "ExpiredToken", "Message": "Invalid argument.", "Details": details}
            )
        server_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return _xml_error(
            request,
            403,
            {
                "Code": "AccessDenied",
                "Message": "Request has expired",
                "Expires": stamp,
                "ServerTime": server_time,
            },
        )
    bytes_route(request)
