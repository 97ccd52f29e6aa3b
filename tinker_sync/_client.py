"""The Client: plain calls, raw streams and event streams, all through one send path.

Rules:
1. Every request, plain or streaming, goes through ``Client.send``: the same
   retries, timeouts, errors, hooks and dumps.
2. The API key and Tinker headers go only to the base URL's origin; an
   absolute URL elsewhere (a signed download URL) gets none of them.
3. A stream is retried only until its response is established; after the
   first body byte reaches the caller nothing is replayed silently.
"""

from __future__ import annotations

import copy
import os
import pathlib
import platform
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import msgspec

from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    Timeout,
    cloudflare_headers,
    resolve_api_key,
    resolve_base_url,
)
from ._exceptions import APIConnectionError, APIResponseValidationError, status_error_class
from ._observe import (
    ErrorInfo,
    Hooks,
    RequestInfo,
    ResponseInfo,
    RetryInfo,
    StreamEndInfo,
    check_hooks,
    dump,
    emit,
    mask_url,
    setup_logging,
)
from ._response import EventStream, StreamedResponse, decode_json
from ._retry import retry_delay, should_retry_status
from ._transport import DEFAULT_POOL_MAXSIZE, Headers, Request, Transport, origin_of
from ._version import __version__

__all__ = ["Client"]

Params = Mapping[str, Any]
Timeoutish = float | Timeout | None

# Error bodies are read for the exception, up to this size (the rest is discarded).
MAX_ERROR_BODY = 1 << 20
USER_AGENT = f"tinker-sync/{__version__} Python/{platform.python_version()}"


class Client:
    """A synchronous, streaming-first Tinker API client.

    Args:
        api_key: the API key; defaults to ``TINKER_API_KEY``. Must start
            with ``tml-`` (or ``eyJ``, a JWT).
        base_url: defaults to ``TINKER_BASE_URL``, then the production URL.
        timeout: seconds (the read timeout; connect is at most 5 s) or a
            ``Timeout(connect, read, total)``.
        max_retries: retries on connection errors, timeouts, 408/409/429/5xx.
        default_headers: extra headers for every API request (after the
            Cloudflare Access headers from ``CLOUDFLARE_ACCESS_CLIENT_ID`` /
            ``_SECRET``, which they may override).
        event_hooks: ``{"request"|"response"|"retry"|"stream_end"|"error": [callable, ...]}``.
        dump_headers: log each request and response head at INFO, secrets
            masked; defaults to ``TINKER_SYNC_DUMP_HEADERS``.

    One client holds one connection pool and is safe to share between
    threads. Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | Timeout = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        event_hooks: Hooks | None = None,
        dump_headers: bool | None = None,
        pool_maxsize: int = DEFAULT_POOL_MAXSIZE,
    ) -> None:
        setup_logging()
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self._origin = origin_of(self.base_url)
        self.timeout = Timeout.coerce(timeout)
        self.max_retries = max_retries
        # Read once, as every environment setting (TINKER_*, CLOUDFLARE_ACCESS_*).
        self.default_headers = {**cloudflare_headers(), **(default_headers or {})}
        self.event_hooks = check_hooks(event_hooks)
        if dump_headers is None:
            dump_headers = os.environ.get("TINKER_SYNC_DUMP_HEADERS", "") not in ("", "0", "false")
        self.dump_headers = dump_headers
        self._transport = Transport(pool_maxsize=pool_maxsize)
        self._sleep: Callable[[float], None] = time.sleep
        self._resources: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<tinker_sync.Client base_url={self.base_url!r}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection (shared with copies made by ``with_options``)."""
        self._transport.close()

    def with_options(
        self, *, max_retries: int | None = None, timeout: float | Timeout | None = None
    ) -> Client:
        """A copy with other defaults, sharing this client's connection pool."""
        clone = copy.copy(self)
        clone._resources = {}
        if max_retries is not None:
            clone.max_retries = max_retries
        if timeout is not None:
            clone.timeout = Timeout.coerce(timeout)
        return clone

    # -- resources -----------------------------------------------------------

    @property
    def checkpoints(self) -> Any:  # resources.checkpoints.Checkpoints (resources sit below the client)
        """Checkpoint operations: list, delete, publish, download (``resources.checkpoints``)."""
        if "checkpoints" not in self._resources:
            from .resources.checkpoints import Checkpoints

            self._resources["checkpoints"] = Checkpoints(self)
        return self._resources["checkpoints"]

    # -- building requests ---------------------------------------------------

    def is_api_url(self, url: str) -> bool:
        """Whether ``url`` is on the base URL's origin (and so may see the API key)."""
        return origin_of(url) == self._origin

    def build_url(self, path: str, params: Params | None = None) -> str:
        """Join ``path`` to the base URL (an absolute http(s) URL is kept) and add ``params``."""
        if path.startswith(("http://", "https://")):
            url = path
        else:
            url = f"{self.base_url}/{path.lstrip('/')}"
        if params:
            query = urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
            if query:
                url += ("&" if "?" in url else "?") + query
        return url

    def build_request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        accept: str = "application/json",
        credentials: bool = True,
    ) -> Request:
        """The request to send, with the Tinker headers only when it goes to the API's origin.

        ``credentials=False`` leaves out the API key and every Tinker header
        whatever the origin: for signed URLs, which carry their own authorization.
        """
        method = method.upper()
        url = self.build_url(path, params)
        request_headers = Headers({"User-Agent": USER_AGENT})
        body: bytes | None = None
        if json is not None:
            body = msgspec.json.encode(json)
            request_headers["Content-Type"] = "application/json"
        elif content is not None:
            body = content.encode() if isinstance(content, str) else bytes(content)
        if credentials and self.is_api_url(url):
            request_headers["Accept"] = accept
            request_headers["X-API-Key"] = self.api_key
            request_headers.update(self.default_headers)
            if method != "GET":
                request_headers["X-Idempotency-Key"] = str(uuid.uuid4())
        if headers:
            for name, value in headers.items():
                request_headers[name] = value  # the caller's value wins, its idempotency key too
        return Request(method, url, request_headers, body)

    # -- the one send path ---------------------------------------------------

    def send(
        self,
        request: Request,
        *,
        timeout: Timeoutish = None,
        max_retries: int | None = None,
        read_body: bool = False,
        quiet: bool = False,
    ) -> StreamedResponse:
        """Send ``request`` with retries; return the response once established.

        Retries connection errors, timeouts and retryable statuses, reading
        and releasing each error body first. A 4xx/5xx that is not retried
        raises the SDK's exception for it, body read. With ``read_body`` the
        body is read too (a body cut short is then retried). ``quiet``
        skips the ``request`` and ``response`` hooks (a resume is part of
        the logical request that started it).
        """
        timeout = self.timeout if timeout is None else Timeout.coerce(timeout)
        max_retries = self.max_retries if max_retries is None else max_retries
        hooks = self.event_hooks
        method, url = request.method, request.url
        if not quiet:
            emit(hooks, "request", RequestInfo(method, url))
        start = time.monotonic()
        deadline = None if timeout.total is None else start + timeout.total
        attempt = 0
        while True:
            attempt += 1
            request.headers["x-stainless-retry-count"] = str(attempt - 1)
            if self.dump_headers:
                dump(">", f"{method} {mask_url(url)} (attempt {attempt})", request.headers)
            retry_headers: Any = None
            try:
                raw = self._transport.send(request, timeout)
                response = StreamedResponse(raw, request, deadline=deadline, attempts=attempt)
                if self.dump_headers:
                    dump("<", f"{response.status_code} {mask_url(url)}", response.headers)
                if response.status_code >= 400:
                    retryable = should_retry_status(response.status_code, response.headers)
                    body = _read_error_body(response)
                    if not (retryable and attempt <= max_retries and not _past(deadline)):
                        raise _status_error(response, body)
                    reason = f"HTTP {response.status_code}"
                    retry_headers = response.headers
                elif read_body:
                    response.read()
            except APIConnectionError as exc:
                if attempt > max_retries or _past(deadline):
                    emit(hooks, "error", ErrorInfo(method, url, attempt, exc))
                    raise
                reason = str(exc)
            except Exception as exc:
                emit(hooks, "error", ErrorInfo(method, url, attempt, exc))
                raise
            else:
                if retry_headers is None:  # established
                    if not quiet:
                        elapsed = time.monotonic() - start
                        emit(
                            hooks,
                            "response",
                            ResponseInfo(method, url, response.status_code, attempt, elapsed),
                        )
                    return response
            wait = retry_delay(attempt - 1, retry_headers)
            emit(hooks, "retry", RetryInfo(method, url, attempt, reason, wait))
            self._sleep(wait)

    def range_reopener(
        self, request: Request, response: StreamedResponse, timeout: Timeoutish, max_retries: int | None
    ) -> Callable[[int, str], StreamedResponse | None]:
        """A ``reopen(offset, validator)`` for ``StreamedResponse.resume_with``.

        Resumes share the request's retry budget and backoff: each resume
        costs one retry, plus any retries it needs itself.
        """
        budget = [(self.max_retries if max_retries is None else max_retries) - (response.attempts - 1)]
        used = [response.attempts - 1]

        def reopen(offset: int, validator: str) -> StreamedResponse | None:
            if budget[0] <= 0:
                return None
            budget[0] -= 1
            wait = retry_delay(used[0])
            used[0] += 1
            emit(
                self.event_hooks,
                "retry",
                RetryInfo(request.method, request.url, used[0], f"body broken at byte {offset}", wait),
            )
            self._sleep(wait)
            headers = request.headers.copy()
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = validator
            new = self.send(
                Request(request.method, request.url, headers, request.body),
                timeout=timeout,
                max_retries=budget[0],
                quiet=True,
            )
            budget[0] -= new.attempts - 1
            used[0] += new.attempts - 1
            return new

        return reopen

    def _stream_end(
        self,
        response: StreamedResponse | None,
        request: Request,
        events: int,
        error: BaseException | None,
        start: float,
    ) -> None:
        emit(
            self.event_hooks,
            "stream_end",
            StreamEndInfo(
                request.method,
                request.url,
                response.status_code if response is not None else 0,
                getattr(response, "attempts", 0),
                response.num_bytes_downloaded if response is not None else 0,
                events,
                time.monotonic() - start,
                None if error is None else repr(error),
            ),
        )

    # -- plain calls ---------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        max_retries: int | None = None,
        cast_to: Any = None,
    ) -> Any:
        """Send a request, read the whole body and decode it (JSON via msgspec, into ``cast_to`` if given).

        Returns None for an empty body, text for a non-JSON body.
        """
        request = self.build_request(method, path, params=params, json=json, content=content, headers=headers)
        start = time.monotonic()
        try:
            response = self.send(request, timeout=timeout, max_retries=max_retries, read_body=True)
        except BaseException as exc:
            self._stream_end(None, request, 0, exc, start)
            raise
        self._stream_end(response, request, 0, None, start)
        return _decode_body(response, cast_to)

    def get(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        max_retries: int | None = None,
    ) -> Any:
        """GET ``path`` and return its decoded JSON body (into ``cast_to`` when given)."""
        return self.request(
            "GET",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            max_retries=max_retries,
        )

    def post(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        max_retries: int | None = None,
    ) -> Any:
        """POST ``json`` to ``path`` and return the decoded JSON body."""
        return self.request(
            "POST",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            max_retries=max_retries,
        )

    def put(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        max_retries: int | None = None,
    ) -> Any:
        """PUT ``json`` to ``path`` and return the decoded JSON body."""
        return self.request(
            "PUT",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            max_retries=max_retries,
        )

    def patch(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        max_retries: int | None = None,
    ) -> Any:
        """PATCH ``path`` with ``json`` and return the decoded JSON body."""
        return self.request(
            "PATCH",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            max_retries=max_retries,
        )

    def delete(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        max_retries: int | None = None,
    ) -> Any:
        """DELETE ``path`` and return the decoded JSON body (None when empty)."""
        return self.request(
            "DELETE",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            max_retries=max_retries,
        )

    # -- downloads -----------------------------------------------------------

    def download(
        self,
        url_or_path: str,
        dest: str | os.PathLike[str],
        *,
        progress: Callable[[int, int | None], None] | None = None,
        resume: bool = True,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        credentials: bool = True,
    ) -> pathlib.Path:
        """Download ``url_or_path`` (an API path or any http(s) URL, e.g. a signed URL) to ``dest``.

        Constant memory, atomic (a ``.part`` file renamed when complete and
        verified), resumed with Range after a break or a crash. The API key
        goes only to the API's origin; ``credentials=False`` withholds it
        there too. See ``tinker_sync._download.download``.
        """
        from ._download import download

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

    # -- raw streams ---------------------------------------------------------

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        max_retries: int | None = None,
    ) -> Iterator[StreamedResponse]:
        """Send a request and yield its response with the body unread, as a ``with`` block.

        The request is sent on entry (retried until its response is
        established); status errors raise there, before any streaming. Read
        the body with ``iter_bytes()``, ``iter_text()``, ``iter_lines()``,
        ``iter_events()``, ``read()`` or ``stream_to_file()``. Leaving the
        block releases the connection if the body was read to its end, and
        closes it otherwise.

        Example::

            with client.stream("GET", "/api/v1/...") as response:
                for chunk in response.iter_bytes(chunk_size=65536):
                    ...
        """
        request = self.build_request(method, path, params=params, json=json, content=content, headers=headers)
        start = time.monotonic()
        try:
            response = self.send(request, timeout=timeout, max_retries=max_retries)
        except BaseException as exc:
            self._stream_end(None, request, 0, exc, start)
            raise
        if request.method == "GET":
            response.resume_with(self.range_reopener(request, response, timeout, max_retries))
        error: BaseException | None = None
        try:
            yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            response.close()
            self._stream_end(
                response, request, 0, error if not isinstance(error, GeneratorExit) else None, start
            )

    # -- event streams -------------------------------------------------------

    def stream_events(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        max_retries: int | None = None,
    ) -> EventStream[Any]:
        """A lazy stream of Server-Sent Events from ``method path``; see ``stream_post``."""
        timeout = self.timeout if timeout is None else Timeout.coerce(timeout)
        if idle_timeout is not None:
            read = idle_timeout if timeout.read is None else min(timeout.read, idle_timeout)
            timeout = Timeout(connect=timeout.connect, read=read, total=timeout.total)
        retries = self.max_retries if max_retries is None else max_retries
        base: list[Request] = []
        start = time.monotonic()

        def open_response(extra_headers: dict[str, str]) -> StreamedResponse:
            if not base:  # built on first use: nothing happens before iteration
                base.append(
                    self.build_request(
                        method, path, params=params, json=json, headers=headers, accept="text/event-stream"
                    )
                )
            request = copy.copy(base[0])
            request.headers = base[0].headers.copy()
            request.headers.update(extra_headers)
            return self.send(request, timeout=timeout, max_retries=retries)

        def on_end(response: StreamedResponse | None, events: int, error: BaseException | None) -> None:
            if base:
                self._stream_end(response, base[0], events, error, start)

        def on_reconnect(attempt: int, reason: str, wait: float) -> None:
            emit(self.event_hooks, "retry", RetryInfo(method, base[0].url, attempt, reason, wait))

        return EventStream(
            open_response,
            cast_to=cast_to,
            reconnect=reconnect,
            max_reconnects=retries,
            idle_timeout=idle_timeout,
            sleep=self._sleep,
            on_end=on_end,
            on_reconnect=on_reconnect,
        )

    def stream_get(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        max_retries: int | None = None,
    ) -> EventStream[Any]:
        """A lazy stream of Server-Sent Events from ``GET path``; see ``stream_post``.

        With ``reconnect=True`` a broken stream is resumed with ``Last-Event-ID``
        (for servers that support it), waiting the server's ``retry`` time.
        """
        return self.stream_events(
            "GET",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            idle_timeout=idle_timeout,
            reconnect=reconnect,
            max_retries=max_retries,
        )

    def stream_post(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        max_retries: int | None = None,
    ) -> EventStream[Any]:
        """POST ``json`` to ``path`` and stream the Server-Sent Events of the response.

        Lazy: nothing is sent until the first iteration (or ``with`` entry).
        Yields ``ServerSentEvent`` objects, or with ``cast_to`` (a msgspec
        Struct, ``dict``, ``list``, ...) each event's data decoded into it.

        Example::

            for event in client.stream_post("/api/v1/stream_sample", json=request):
                print(event.event, event.data)

        Args:
            cast_to: decode each event's JSON data into this type.
            timeout: seconds or ``Timeout``; the read timeout applies between chunks.
            idle_timeout: the longest wait for the next event (comments and
                keep-alive pings do not count); raises APITimeoutError.
            reconnect: resume a broken stream with ``Last-Event-ID``.

        Raises:
            APIStatusError (subclasses): an error status, before any event.
            APIError: the server sent an event named ``error`` (after the events before it).
            APIConnectionError: the connection broke mid-stream (never a quiet end).
            APIResponseValidationError: the response is not ``text/event-stream``,
                or an event does not fit ``cast_to``.

        Breaking out of the loop, ``close()``, or dropping the stream closes its connection.
        """
        return self.stream_events(
            "POST",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            idle_timeout=idle_timeout,
            reconnect=reconnect,
            max_retries=max_retries,
        )

    def stream_put(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        max_retries: int | None = None,
    ) -> EventStream[Any]:
        """PUT ``json`` to ``path`` and stream the Server-Sent Events of the response; see ``stream_post``."""
        return self.stream_events(
            "PUT",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            idle_timeout=idle_timeout,
            reconnect=reconnect,
            max_retries=max_retries,
        )

    def stream_patch(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        max_retries: int | None = None,
    ) -> EventStream[Any]:
        """PATCH ``path`` with ``json`` and stream the Server-Sent Events of the response; see ``stream_post``."""
        return self.stream_events(
            "PATCH",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            idle_timeout=idle_timeout,
            reconnect=reconnect,
            max_retries=max_retries,
        )

    def stream_delete(
        self,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        cast_to: Any = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        max_retries: int | None = None,
    ) -> EventStream[Any]:
        """DELETE ``path`` and stream the Server-Sent Events of the response; see ``stream_post``."""
        return self.stream_events(
            "DELETE",
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            cast_to=cast_to,
            idle_timeout=idle_timeout,
            reconnect=reconnect,
            max_retries=max_retries,
        )


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _read_error_body(response: StreamedResponse) -> Any:
    """Read (up to MAX_ERROR_BODY) and release an error response's body; decode JSON when it is JSON."""
    content = response.read_capped(MAX_ERROR_BODY)
    try:
        return msgspec.json.decode(content) if content else None
    except msgspec.DecodeError:
        return content.decode("utf-8", errors="replace")


def _status_error(response: StreamedResponse, body: Any) -> Exception:
    content = response.read()  # already read, capped, by _read_error_body
    text = content.decode("utf-8", errors="replace") if content else "(empty body)"
    cls = status_error_class(response.status_code)
    return cls(f"Error code: {response.status_code} - {text}", response, body)


def _decode_body(response: StreamedResponse, cast_to: Any) -> Any:
    content = response.read()
    if cast_to is bytes:
        return content
    if cast_to is str:
        return response.text()
    if cast_to is not None:
        return decode_json(content, cast_to, response)
    if not content:
        return None
    content_type = response.headers.get("content-type", "application/json").lower()
    if "json" not in content_type:
        return response.text()
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        raise APIResponseValidationError(f"Response is not valid JSON: {exc}", response) from exc
