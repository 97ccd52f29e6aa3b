"""The mock server's shared types: the leaf every other module of the package imports.

Owns what the routes and the server share: ``Fault`` (a wire fault for one
response), ``HTTPError`` (a route's JSON error answer), ``RecordedRequest``,
the ``ABORT`` / ``HANG`` body markers, and two ``Protocol`` classes saying
exactly what a route may use: ``Request`` (the request handler) and
``ServerState`` (the server-wide settings and services behind it).

Rules: this module imports nothing else of ``tinker_sync.testing`` (it is the
bottom of the import graph), and routes reach the server only through these
two protocols, never through a private attribute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, Protocol

import msgspec

__all__ = [
    "ABORT",
    "HANG",
    "NO_FAULT",
    "WRITE_SIZE",
    "Chunk",
    "Fault",
    "HTTPError",
    "Headers",
    "Marker",
    "RecordedRequest",
    "Request",
    "ServerState",
]

WRITE_SIZE: Final = 64 * 1024  # the largest single socket write of a body


class Marker:
    """A body marker: a body iterator yields one instead of bytes to act on the connection."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ABORT: Final = Marker("ABORT")  # reset the connection mid-body
HANG: Final = Marker("HANG")  # send nothing more until the client goes away or the server stops

Chunk = bytes | bytearray | memoryview | Marker
Headers = Iterable[tuple[str, str]]


class RecordedRequest(msgspec.Struct, frozen=True):
    """One request as the server saw it. ``headers`` names are lower-cased; ``query`` keeps the last value."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return msgspec.json.decode(self.body)


def _flag(value: str | None) -> bool:
    return value in ("1", "true")


@dataclasses.dataclass(frozen=True)
class Fault:
    """A wire fault for one response; see ``MockTinkerServer.script``.

    Byte counts are body bytes (payload, not chunked framing).
    """

    reset_after: int | None = None  # close the connection mid-body after this many body bytes
    rst: bool = False  # ... with an RST (SO_LINGER 0; may drop bytes in flight) instead of a FIN
    stall_after: int | None = None  # after this many body bytes, sleep ``stall`` seconds, then continue
    stall: float = 0.0
    status: int | None = None  # answer this status with a JSON error body instead
    retry_after: float | None = None  # ... with this Retry-After (seconds)
    ignore_range: bool = False  # answer 200 with the full body even to a Range request
    change_etag: bool = False  # bump the resource's version first: its ETag changes from now on
    wrong_length: int | None = None  # announce this Content-Length, send the true bytes, then close
    trickle: int | None = None  # write the body in pieces of this many bytes ...
    trickle_delay: float = 0.0  # ... with this delay between them
    delay_headers: float = 0.0  # wait this long before sending the status line (a cost per request)
    close: bool = False  # close the connection after the answer (``Connection: close``), as moto's S3 does
    rate: float | None = None  # cap this response's body at this many bytes per second
    # Range answers a correct server may give (RFC 9110 lets it send more than asked, or less):
    range_to_eof: bool = False  # answer ``bytes=A-B`` with ``A-EOF`` (as simple servers do)
    range_short: int | None = None  # answer each range with at most this many bytes (a 206 ending early)
    range_widen: int | None = None  # answer each range with this many bytes more on each side

    @classmethod
    def from_query(cls, query: dict[str, str]) -> Fault:
        """The fault given by query parameters (``reset_after=``, ``stall_after=&stall=``, ...).

        Raises:
            HTTPError: 400 when a number does not parse.
        """

        def integer(name: str) -> int | None:
            value = query.get(name)
            if value in (None, ""):
                return None
            try:
                return int(value)
            except ValueError:
                raise HTTPError(400, f"query {name} must be an integer", "invalid_request_error") from None

        def number(name: str) -> float | None:
            value = query.get(name)
            if value in (None, ""):
                return None
            try:
                return float(value)
            except ValueError:
                raise HTTPError(400, f"query {name} must be a number", "invalid_request_error") from None

        return cls(
            reset_after=integer("reset_after"),
            rst=_flag(query.get("rst")),
            stall_after=integer("stall_after"),
            stall=number("stall") or 0.0,
            ignore_range=_flag(query.get("ignore_range")),
            change_etag=_flag(query.get("change_etag")),
            wrong_length=integer("wrong_length"),
            trickle=integer("trickle"),
            trickle_delay=number("trickle_delay") or 0.0,
            delay_headers=number("delay_headers") or 0.0,
            close=_flag(query.get("close")),
            rate=number("rate"),
            range_to_eof=_flag(query.get("range_to_eof")),
            range_short=integer("range_short"),
            range_widen=integer("range_widen"),
        )


NO_FAULT: Final = Fault()


class HTTPError(Exception):
    """Raised by a route to answer a JSON error ``{"error": {"message", "type"}}``.

    ``violation=True`` marks a client mistake (a wrong method, path, header,
    body or query): the server also appends the message to ``violations``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "error",
        headers: Headers = (),
        *,
        violation: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.headers = list(headers)
        self.violation = violation


class ServerState(Protocol):
    """What a route may use of the server: settings, a stop-aware wait, versions and caches."""

    @property
    def url(self) -> str:
        """The base URL, ``http://HOST:PORT`` or ``https://...``, no trailing slash."""

    @property
    def started_at(self) -> float:
        """Unix time the server object was created."""

    signed_url_ttl: float
    signed_checksums: tuple[str, ...]
    supported_models: list[str]
    archive_mode: str | int
    future_polls: int
    max_page_size: int | None  # the most items a list answers, whatever the limit asked
    api_key: str  # the API key every client starts with
    client_config: dict[str, Any]  # what POST client/config answers (pjwt_auth_enabled, ...)
    client_dynamic_config: dict[str, Any]  # what POST client/dynamic_config answers
    jwt_lifetime: float  # seconds a JWT from auth/token lives
    trace_export_polls: int  # pending answers of a session's trace_export before ready
    trace_size: int  # bytes of an exported trace file
    error_format: str  # "error": {"error": {"message", "type"}}; "detail": FastAPI's {"detail": ...}

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early when the server stops. True if it stopped."""

    def version(self, key: Hashable) -> int:
        """The version of a byte resource (1 until bumped); part of its ETag."""

    def bump_version(self, key: Hashable) -> None:
        """Change a resource's version, so its ETag changes."""

    def tmpdir(self) -> str:
        """A directory removed when the server stops."""

    def add_violation(self, message: str) -> None:
        """Record a client mistake in ``violations``."""

    def memo(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        """``compute()`` once per key and server (checksums of large bodies)."""


class Request(Protocol):
    """What a route may use of the request handler.

    ``query`` keeps the last value of each parameter; ``headers`` has lower-cased
    names; ``path`` is without the query string. A route answers with exactly
    one of ``send_json``, ``send_error_json``, ``send_empty``, ``send_body``, or
    ``start_response`` followed by ``emit``, or raises ``HTTPError``.
    """

    command: str
    path: str
    query: dict[str, str]
    body: bytes
    headers: dict[str, str]
    fault: Fault

    @property
    def state(self) -> ServerState:
        """The server behind this request."""

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty). Raises HTTPError 400 (a violation) otherwise."""

    def send_json(self, status: int, obj: Any, headers: Headers = ()) -> None:
        """Answer ``obj`` encoded as JSON."""

    def send_error_json(
        self, status: int, message: str, type: str | None = "error", headers: Headers = ()
    ) -> None:
        """Answer ``{"error": {"message", "type"}}``."""

    def send_empty(self, status: int, headers: Headers = ()) -> None:
        """Answer with no body."""

    def send_body(self, status: int, headers: Headers, body: bytes) -> None:
        """Answer ``body`` whole (``Content-Length`` framing), the request's fault applied."""

    def start_response(
        self, status: int, headers: Headers, *, length: int | None = None, framing: str = "length"
    ) -> str:
        """Send the status line and headers; returns the framing used (a fault may change it)."""

    def emit(self, chunks: Iterable[Chunk], framing: str, *, max_write: int | None = None) -> None:
        """Write the body (nothing for HEAD), with the request's fault and rate cap applied."""
