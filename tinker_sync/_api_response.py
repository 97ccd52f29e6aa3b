"""The responses of the API methods' views: ``APIResponse[T]`` and the streaming view's ``with`` block.

Rule: an ``APIResponse`` wraps a ``StreamedResponse`` and the method's parser;
it parses once, when asked (``parse()``), so the raw and streaming views never
decode what the caller does not want. It knows nothing of clients.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Generic

from ._event_stream import EventStream
from ._observe import mask_url
from ._receiver import Progress
from ._response import Connections, StreamedResponse
from ._transport import Headers
from ._typing import E, T

__all__ = ["APIResponse", "ResponseContextManager"]


class APIResponse(Generic[T]):
    """An API method's response with its typed result: ``parse()`` decodes it once, when asked.

    ``client.with_raw_response.<resource>.<method>(...)`` returns one with the
    body read and the connection released; ``client.with_streaming_response``
    gives one with the body unread, in a ``with`` block (``ResponseContextManager``).

    Attributes:
        status_code, headers, url: of the response.
        http_request: the request sent; http_response: the ``StreamedResponse``.
        retries_taken: retries of the call (resumes included).
        elapsed: seconds from the first send to the response (its body read, in the raw view).
    """

    def __init__(
        self, response: StreamedResponse, parse: Callable[[StreamedResponse], T], *, elapsed: float
    ) -> None:
        self.http_response = response
        self.http_request = response.request
        self.elapsed = elapsed
        self._parse = parse
        self._parsed: tuple[T] | None = None

    def __repr__(self) -> str:
        return f"<APIResponse [{self.status_code}] {self.http_request.method} {mask_url(self.url)}>"

    @property
    def status_code(self) -> int:
        """The HTTP status of the response (after redirects)."""
        return self.http_response.status_code

    @property
    def headers(self) -> Headers:
        """The response headers (case-insensitive)."""
        return self.http_response.headers

    @property
    def url(self) -> str:
        """The URL that answered (the last hop of any redirects)."""
        return self.http_response.url

    @property
    def retries_taken(self) -> int:
        """How many retries the call took before this response (0: the first attempt)."""
        return self.http_response.retries

    @property
    def is_closed(self) -> bool:
        """Whether the body was read to its end or the connection closed."""
        return self.http_response.is_closed

    def parse(self) -> T:
        """The method's typed result (the same object on every call); APIResponseValidationError
        when the body does not fit it."""
        if self._parsed is None:
            self._parsed = (self._parse(self.http_response),)
        return self._parsed[0]

    def read(self) -> bytes:
        """The whole body (cached)."""
        return self.http_response.read()

    def text(self) -> str:
        """The whole body as text (Content-Type's charset, UTF-8 by default)."""
        return self.http_response.text()

    def json(self) -> Any:
        """The whole body decoded from JSON, untyped (``parse()`` gives the typed result)."""
        return self.http_response.json()

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The body as it arrives (``chunk_size``: exactly that size); see ``StreamedResponse``."""
        return self.http_response.iter_bytes(chunk_size)

    def iter_text(self, chunk_size: int | None = None) -> Iterator[str]:
        """The body as text, decoded incrementally (see ``StreamedResponse.iter_text``)."""
        return self.http_response.iter_text(chunk_size)

    def iter_lines(self) -> Iterator[str]:
        """The body as lines of text, without their line ends (see ``StreamedResponse.iter_lines``)."""
        return self.http_response.iter_lines()

    def iter_events(
        self,
        cast_to: type[E] | None = None,
        *,
        idle_timeout: float | None = None,
        max_event_size: int | None = None,
    ) -> EventStream[E]:
        """The body as Server-Sent Events (their data decoded into ``cast_to`` when given); a line or
        an event over ``max_event_size`` (default: the client's) raises SSEDecodeError."""
        response = self.http_response
        return EventStream(
            source=response.event_source(),
            cast_to=cast_to,
            idle_timeout=idle_timeout,
            max_event_size=response.max_event_size if max_event_size is None else max_event_size,
        )

    def stream_to_file(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int | None = None,
        progress: Progress | None = None,
        resume: bool = True,
        connections: Connections = "auto",
    ) -> int:
        """Write the body to ``path``: atomic, verified, resumed in place, constant memory, over
        several connections when the server takes ranges; its size.

        See ``StreamedResponse.stream_to_file``.
        """
        return self.http_response.stream_to_file(
            path, chunk_size=chunk_size, progress=progress, resume=resume, connections=connections
        )

    def write_to_file(self, path: str | os.PathLike[str]) -> int:
        """Write a body already read (the raw view's) to ``path``; its size."""
        return self.http_response.write_to_file(path)

    def close(self) -> None:
        """Release the connection (back to the pool if the body was read to its end)."""
        self.http_response.close()


class ResponseContextManager(Generic[T]):
    """The streaming view's ``with`` block: sends on entry, gives the ``APIResponse`` with its body
    unread, and releases the connection on exit, whatever happened inside."""

    def __init__(
        self, call: AbstractContextManager[StreamedResponse], parse: Callable[[StreamedResponse], T]
    ) -> None:
        self._call = call
        self._parse = parse

    def __enter__(self) -> APIResponse[T]:
        start = time.monotonic()
        response = self._call.__enter__()
        return APIResponse(response, self._parse, elapsed=time.monotonic() - start)

    def __exit__(self, *exc_info: Any) -> None:
        self._call.__exit__(*exc_info)
