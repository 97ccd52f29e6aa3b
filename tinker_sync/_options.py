"""Request options: one frozen value per call, built once at the public method, passed down whole.

Rules:
1. ``RequestOptions`` says everything about one logical call: method, URL,
   query, headers, body, timeout (and so the deadline), max retries,
   idempotency key, and how the response is taken (read whole or streamed,
   events, redirects). Every layer below the public method (the client's
   send path, redirects, event streams, resumes, ranged fetchers) reads it
   and passes it on unchanged; a layer that needs another value (a redirect
   hop, a resume) makes one with ``replace``. No layer re-lists its fields.
2. Per-call overrides (``extra_headers``, ``extra_query``, ``extra_body``,
   ``timeout``, ``max_retries``, the names of the official SDK) fold into it
   once, in ``RequestOptions.overridden``: extra headers and query
   parameters win over the method's own, extra body fields are merged into
   its JSON object.
3. ``None`` means "the client's default" for ``timeout`` and ``max_retries``;
   the client resolves them when the call starts.
4. A call that writes a file (``Client.download``, a checkpoint download,
   ``stream_to_file``) carries how in ``RequestOptions.file``, a ``FileOptions``
   checked when it is built: the download, the receivers and the ranged
   fetchers read it there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from ._checksums import check_expected
from ._config import Timeout
from ._receiver import Progress

__all__ = [
    "BodyOverrides",
    "Connections",
    "Extras",
    "FileOptions",
    "Overrides",
    "Params",
    "RequestOptions",
    "Timeoutish",
    "check_connections",
]

Params = Mapping[str, Any]
Timeoutish = float | Timeout | None
# How many connections a file download may use: a number, or "auto" (see ``_range_plan.auto_connections``).
Connections = int | Literal["auto"]


def check_connections(connections: object) -> None:
    """Raise ValueError unless ``connections`` is a positive int or ``"auto"``."""
    if connections != "auto" and not (type(connections) is int and connections >= 1):
        raise ValueError(f"connections must be a positive integer or 'auto', got {connections!r}")


class Extras(TypedDict, total=False):
    """The per-call overrides but ``timeout``: for a method whose own ``timeout`` argument says
    something else (the whole wait of ``sessions.export_trace``).

    Keys:
        extra_headers: more request headers; they win over the method's own
            (and the client's ``default_headers``).
        extra_query: more query parameters; they win over the method's own.
        max_retries: retries for this call (None: the client's).
    """

    extra_headers: Mapping[str, str] | None
    extra_query: Params | None
    max_retries: int | None


class Overrides(Extras, total=False):
    """The per-call overrides every API method takes as keyword arguments (as in the official SDK):
    ``Extras`` (``extra_headers``, ``extra_query``, ``max_retries``) and ``timeout``, seconds or a
    ``Timeout`` for this call (None: the client's)."""

    timeout: Timeoutish


class BodyOverrides(Overrides, total=False):
    """``Overrides`` plus ``extra_body``: more fields of the JSON body (POST, PUT and PATCH methods)."""

    extra_body: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class FileOptions:
    """How a call writes its body to a file: built (and checked) once at the public method, read by
    the download, the receivers and the ranged fetchers.

    Attributes:
        progress: ``progress(downloaded, total)`` as bytes land (None: no callback).
        resume: a broken body continues with Range inside the call (False: a break raises).
        restart: start from zero, whatever ``.part`` an earlier run left (``Client.download``'s
            ``resume=False``).
        expected_size, expected_sha256: what the caller knows of the file, verified with the
            server's checksums.
        connections: how many connections may fetch the file at once, or ``"auto"``.
        chunk_size: the most bytes read and written at a time (None: 256 KiB).

    Raises:
        ValueError, TypeError: a value that cannot be right (at construction, before any request).
    """

    progress: Progress | None = None
    resume: bool = True
    restart: bool = False
    expected_size: int | None = None
    expected_sha256: str | None = None
    connections: Connections = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        check_connections(self.connections)
        check_expected(self.expected_size, self.expected_sha256, self.progress)


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """One call's options (see the module docstring): built once, read by every layer below.

    Attributes:
        method, url: the HTTP method and an API path (or an absolute http(s) URL).
        params: the query parameters (a None value leaves the parameter out).
        headers: request headers over the client's (the caller's value wins).
        json: the JSON body; content: a raw body instead.
        timeout: seconds or a ``Timeout``, or None for the client's.
        max_retries: the retry budget's failures in a row, or None for the client's.
        idempotency_key: ``X-Idempotency-Key`` of a non-GET API request
            (None: a new key per request built).
        accept: the ``Accept`` header of an API request.
        credentials: False sends no API key nor Tinker header, whatever the origin.
        follow_redirects: follow up to ``MAX_REDIRECTS`` hops, each built for its own origin.
        read_body: the body is read whole before the call returns (else streamed).
        final: statuses that answer this call for good, never retried.
        idle_timeout: an event stream's longest wait for the next event.
        reconnect: an event stream resumes with ``Last-Event-ID`` after a break.
        file: how a body written to a file is received (``FileOptions``).
    """

    method: str
    url: str
    params: Params | None = None
    headers: Mapping[str, str] | None = None
    json: Any = None
    content: bytes | str | None = None
    timeout: Timeoutish = None
    max_retries: int | None = None
    idempotency_key: str | None = None
    accept: str = "application/json"
    credentials: bool = True
    follow_redirects: bool = False
    read_body: bool = False
    final: Collection[int] = ()
    idle_timeout: float | None = None
    reconnect: bool = False
    file: FileOptions = FileOptions()

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", self.method.upper())

    def replace(self, **changes: Any) -> RequestOptions:
        """A copy with ``changes`` (the value itself never changes: other layers hold it)."""
        return dataclasses.replace(self, **changes)

    def for_resume(self) -> RequestOptions:
        """These options for sending part of the call's body again (a resume, another range):
        the body streamed, no final statuses."""
        return self.replace(read_body=False, final=()) if self.read_body or self.final else self

    def signed(self, url: str) -> RequestOptions:
        """These options for a GET of ``url``, a signed URL (it carries its own authorization): no
        API key, none of the call's headers, query or body (they are the API's); the same timeout,
        retries and file options."""
        return self.replace(
            method="GET",
            url=url,
            params=None,
            headers=None,
            json=None,
            content=None,
            idempotency_key=None,
            credentials=False,
        )

    def overridden(self, overrides: Mapping[str, Any]) -> RequestOptions:
        """These options with per-call ``Overrides`` / ``BodyOverrides`` folded in (see the module docstring).

        Raises:
            TypeError: an unknown override, or ``extra_body`` for a GET, HEAD or DELETE
                or a body that is not a JSON object.
        """
        unknown = set(overrides) - set(BodyOverrides.__annotations__)
        if unknown:
            raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
        changes: dict[str, Any] = {}
        extra_headers = overrides.get("extra_headers")
        if extra_headers:
            changes["headers"] = {**(self.headers or {}), **extra_headers}
        extra_query = overrides.get("extra_query")
        if extra_query:
            changes["params"] = {**(self.params or {}), **extra_query}
        extra_body = overrides.get("extra_body")
        if extra_body:
            if self.method in ("GET", "HEAD", "DELETE"):
                raise TypeError(f"extra_body is for POST, PUT and PATCH methods, not {self.method}")
            if self.json is not None and not isinstance(self.json, Mapping):
                raise TypeError(f"extra_body needs a JSON object body, not {type(self.json).__name__}")
            changes["json"] = {**(self.json or {}), **extra_body}
        if overrides.get("timeout") is not None:
            changes["timeout"] = overrides["timeout"]
        if overrides.get("max_retries") is not None:
            changes["max_retries"] = overrides["max_retries"]
        return self.replace(**changes) if changes else self
