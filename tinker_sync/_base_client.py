"""BaseClient: the HTTP verbs of a Tinker client over ``ClientCore``: plain calls, streams, event streams.

Rules:
1. Each public method builds the call's one ``RequestOptions`` and hands it
   to the core (``_call``, ``event_connector``), which passes it on whole.
2. It knows nothing of resources: ``Client`` (``_client.py``) adds them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypedDict, Unpack

from ._config import Timeout
from ._core import ClientCore
from ._decode import decode_body
from ._event_stream import Connector, EventSource, EventStream
from ._exceptions import APIConnectionError
from ._options import Params, RequestOptions, Timeoutish
from ._redirects import MAX_REDIRECTS, check_redirect
from ._response import StreamedResponse
from ._retry import RetryBudget
from ._transport import Request
from ._typing import E, T

__all__ = [
    "MAX_REDIRECTS",
    "BaseClient",
    "CallOptions",
    "Params",
    "StreamOptions",
    "Timeoutish",
    "check_redirect",
]


class CallOptions(TypedDict, total=False):
    """The options of every plain call (``get``, ``post``, ...); see ``BaseClient.request``."""

    params: Params | None
    json: Any
    headers: Mapping[str, str] | None
    timeout: Timeoutish
    max_retries: int | None


class StreamOptions(CallOptions, total=False):
    """The options of every event stream (``stream_get``, ``stream_post``, ...); see ``stream_post``."""

    idle_timeout: float | None
    reconnect: bool


class BaseClient(ClientCore):
    """The HTTP core of a Tinker client: requests, retries, hooks, redirects, streams. No resources.

    Args:
        api_key: the API key; else ``TINKER_API_KEY``, else ``TINKER_CREDENTIAL_CMD``
            (run for each JWT exchange), else the default key of
            ``~/.tinker/credentials.json`` (``tinker-sync auth login``). Must start
            with ``tml-`` (or ``eyJ``, a JWT).
        base_url: defaults to ``TINKER_BASE_URL``, then the production URL.
        timeout: seconds (the read timeout; connect is at most 5 s) or a
            ``Timeout(connect, read, total)``.
        max_retries: retries on connection errors, timeouts, 408/409/429/5xx,
            in a row without progress (see ``RetryBudget``).
        default_headers: extra headers for every API request (after the
            Cloudflare Access headers from ``CLOUDFLARE_ACCESS_CLIENT_ID`` /
            ``_SECRET``, which they may override).
        event_hooks: ``{"request"|"response"|"retry"|"stream_end"|"error": [callable, ...]}``.
        dump_headers: log each request and response head at INFO, secrets
            masked; defaults to ``TINKER_SYNC_DUMP_HEADERS``.
        pool_maxsize: connections kept alive per host.
        max_event_size: the longest SSE line, and the most data one event may
            hold, in bytes (default 16 MiB); past it ``SSEDecodeError``.
        max_response_size: the most bytes a non-streamed call (a typed or JSON
            answer) reads (default 64 MiB); past it ``ResponseTooLargeError``,
            the connection discarded. Per call: ``client.with_options(max_response_size=...)``.
        archive_limits: what extracting a checkpoint archive may create
            (``ArchiveLimits``: members, bytes, name length).
        proxy: an HTTP proxy for every request (``http://user:password@host:port``);
            by default ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` (either case),
            with ``NO_PROXY``. As curl does it: an ``https://`` URL goes through a
            ``CONNECT`` tunnel (the proxy never sees a header, a path or a signed URL);
            an ``http://`` URL goes to the proxy in absolute form, which the proxy
            reads, API key included, and forwards (that is what ``http://`` means).
        proxy_tunnel: tunnel ``http://`` URLs through the proxy too (curl's
            ``--proxytunnel``); many proxies open tunnels to port 443 only.
        verify: TLS verification: ``True`` (the system's CAs, and under ``trust_env``
            ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` / ``REQUESTS_CA_BUNDLE``), ``False``
            (none; warns once), a CA file or directory (only those CAs), an
            ``ssl.SSLContext``, or ``TLS(extra_ca=...)`` (the default CAs and more).
        trust_env: read proxies and CA locations from the environment (default
            True, as requests, httpx and curl do).
        sleep: how the client waits between retries (for tests: record instead).
        handshake: before the first API request, fetch the server's flags (``POST
            client/config``, as the official SDK does; once per client and its
            ``with_options`` copies) and follow them: with ``pjwt_auth_enabled``,
            short-lived JWTs from ``auth/token`` replace the key. On by default; a
            404 means the defaults. It is part of the call that needs it (its
            timeout and retries; a failure fails that call and is asked again by
            the next). False skips it: the key goes as is, for a server or proxy
            that knows only the routes you call.

    One client holds one connection pool and is safe to share between
    threads. Use it as a context manager, or call ``close()``.
    """

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
        cast_to: type[T] | None = None,
    ) -> T:
        """Send a request, read the whole body and decode it (JSON via msgspec, into ``cast_to`` if given).

        Asks for a compressed body (``Accept-Encoding``: gzip, and br / zstd when
        their packages are installed), decoded on arrival. Returns None for an
        empty body, text for a non-JSON body.
        """
        options = RequestOptions(
            method, path, params, headers, json, content, timeout, max_retries, read_body=True
        )
        with self._call(options) as response:
            decoded: T = decode_body(response, cast_to)
        return decoded

    def get(self, path: str, *, cast_to: type[T] | None = None, **options: Unpack[CallOptions]) -> T:
        """GET ``path`` and return its decoded JSON body (into ``cast_to`` when given)."""
        return self.request("GET", path, cast_to=cast_to, **options)

    def post(self, path: str, *, cast_to: type[T] | None = None, **options: Unpack[CallOptions]) -> T:
        """POST ``json`` to ``path`` and return the decoded JSON body."""
        return self.request("POST", path, cast_to=cast_to, **options)

    def put(self, path: str, *, cast_to: type[T] | None = None, **options: Unpack[CallOptions]) -> T:
        """PUT ``json`` to ``path`` and return the decoded JSON body."""
        return self.request("PUT", path, cast_to=cast_to, **options)

    def patch(self, path: str, *, cast_to: type[T] | None = None, **options: Unpack[CallOptions]) -> T:
        """PATCH ``path`` with ``json`` and return the decoded JSON body."""
        return self.request("PATCH", path, cast_to=cast_to, **options)

    def delete(self, path: str, *, cast_to: type[T] | None = None, **options: Unpack[CallOptions]) -> T:
        """DELETE ``path`` and return the decoded JSON body (None when empty)."""
        return self.request("DELETE", path, cast_to=cast_to, **options)

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
        credentials: bool = True,
        follow_redirects: bool = False,
    ) -> Iterator[StreamedResponse]:
        """Send a request and yield its response with the body unread, as a ``with`` block.

        The request is sent on entry (retried until its response is
        established); status errors raise there, before any streaming. Read
        the body with ``iter_bytes()``, ``iter_text()``, ``iter_lines()``,
        ``iter_events()``, ``read()`` or ``stream_to_file()``. Leaving the
        block releases the connection if the body was read to its end, and
        closes it otherwise. A broken GET body resumes with ``Range`` (see
        ``StreamedResponse``), inside the call's one retry budget.

        Example::

            with client.stream("GET", "/api/v1/...") as response:
                for chunk in response.iter_bytes(chunk_size=65536):
                    ...
        """
        options = RequestOptions(
            method,
            path,
            params,
            headers,
            json,
            content,
            timeout,
            max_retries,
            credentials=credentials,
            follow_redirects=follow_redirects,
        )
        call = self._call(options)
        with call as response:
            yield response

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
        cast_to: type[E] | None = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        max_retries: int | None = None,
    ) -> EventStream[E]:
        """A lazy stream of Server-Sent Events from ``method path``; see ``stream_post``."""
        options = RequestOptions(
            method,
            path,
            params,
            headers,
            json,
            timeout=timeout,
            max_retries=max_retries,
            idle_timeout=idle_timeout,
            reconnect=reconnect,
        )
        return self.event_stream(options, cast_to)

    def event_stream(self, options: RequestOptions, cast_to: type[E] | None = None) -> EventStream[E]:
        """The lazy ``EventStream`` of the call ``options`` describe (``stream_events`` and the
        resources' event methods build them)."""
        return EventStream(
            self.event_connector(options),
            cast_to=cast_to,
            reconnect=options.reconnect,
            idle_timeout=options.idle_timeout,
            max_event_size=self.max_event_size,
        )

    def event_connector(self, options: RequestOptions) -> Connector:
        """What an ``EventStream`` (or a subclass of it) opens and reopens the request of
        ``options`` through; the read timeout is at most ``options.idle_timeout``."""
        timeout = self._timeout(options.timeout)
        if options.idle_timeout is not None:
            idle = options.idle_timeout
            read = idle if timeout.read is None else min(timeout.read, idle)
            timeout = Timeout(connect=timeout.connect, read=read, total=timeout.total)
        return _EventConnector(self, options.replace(timeout=timeout, accept="text/event-stream"))

    def stream_get(
        self, path: str, *, cast_to: type[E] | None = None, **options: Unpack[StreamOptions]
    ) -> EventStream[E]:
        """A lazy stream of Server-Sent Events from ``GET path``; see ``stream_post``.

        With ``reconnect=True`` a broken stream is resumed with ``Last-Event-ID``
        (for servers that support it), waiting the server's ``retry`` time.
        """
        return self.stream_events("GET", path, cast_to=cast_to, **options)

    def stream_post(
        self, path: str, *, cast_to: type[E] | None = None, **options: Unpack[StreamOptions]
    ) -> EventStream[E]:
        """POST ``json`` to ``path`` and stream the Server-Sent Events of the response.

        Lazy: nothing is sent until the first iteration (or ``with`` entry).
        Yields ``ServerSentEvent`` objects, or with ``cast_to`` (a msgspec
        Struct, ``dict``, ``list``, ...) each event's data decoded into it
        (events with empty data are skipped then).

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
            SSEDecodeError: a line or an event over ``max_event_size``.

        Breaking out of the loop, ``close()``, or dropping the stream closes its connection.
        """
        return self.stream_events("POST", path, cast_to=cast_to, **options)

    def stream_put(
        self, path: str, *, cast_to: type[E] | None = None, **options: Unpack[StreamOptions]
    ) -> EventStream[E]:
        """PUT ``json`` to ``path`` and stream the Server-Sent Events of the response; see ``stream_post``."""
        return self.stream_events("PUT", path, cast_to=cast_to, **options)

    def stream_patch(
        self, path: str, *, cast_to: type[E] | None = None, **options: Unpack[StreamOptions]
    ) -> EventStream[E]:
        """PATCH ``path`` with ``json`` and stream the Server-Sent Events of the response; see ``stream_post``."""
        return self.stream_events("PATCH", path, cast_to=cast_to, **options)

    def stream_delete(
        self, path: str, *, cast_to: type[E] | None = None, **options: Unpack[StreamOptions]
    ) -> EventStream[E]:
        """DELETE ``path`` and stream the Server-Sent Events of the response; see ``stream_post``."""
        return self.stream_events("DELETE", path, cast_to=cast_to, **options)


class _EventConnector:
    """Opens (and reopens) one event stream's request: the ``Connector`` a client gives an EventStream.

    The request is built at the first open (nothing happens before the first
    iteration), and every reconnect shares the call's retry budget.
    """

    def __init__(self, client: BaseClient, options: RequestOptions) -> None:
        self._client = client
        self._options = options
        self._request: Request | None = None
        self._budget: RetryBudget | None = None
        self._start = 0.0

    def open(self, last_event_id: str | None) -> StreamedResponse:
        client, options = self._client, self._options
        if self._request is None or self._budget is None:
            self._start = time.monotonic()
            self._budget = client._budget(options)
            self._request = client.build_request(options)
            return client.send(self._request, options, self._budget)
        request = Request(
            self._request.method, self._request.url, self._request.headers.copy(), self._request.body
        )
        if last_event_id:  # the spec: UTF-8, and no header at all for an empty ID
            request.headers["Last-Event-ID"] = last_event_id.encode("utf-8").decode("latin-1")
        return client.send(request, options, self._budget, quiet=True)

    def wait_to_reconnect(self, error: APIConnectionError, *, events: int, retry: float) -> bool:
        assert self._request is not None and self._budget is not None
        reason = f"stream broke ({error}); reconnecting"
        return self._client.backoff(
            self._budget, self._request, reason, cause=error.cause, progress=events, min_wait=retry
        )

    def finished(self, source: EventSource | None, events: int, error: BaseException | None) -> None:
        if self._request is not None:
            self._client._stream_end(source, self._request, self._budget, events, error, self._start)
