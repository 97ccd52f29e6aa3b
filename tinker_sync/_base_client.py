"""BaseClient: build requests, send them with retries, hooks and redirects; plain calls and streams.

Rules:
1. Every request, plain or streaming, goes through ``send``: the same
   retries, timeouts, errors, hooks and dumps. One ``RetryBudget`` per
   logical call is shared by everything that recovers it (retries, byte
   resume, SSE reconnects, redirects), and every retry is logged at INFO.
2. The API key and Tinker headers go only to the base URL's origin; an
   absolute URL elsewhere (a signed download URL) gets none of them, and
   redirects are followed by hand so that they never carry them across.
3. A stream is retried only until its response is established; after the
   first body byte reaches the caller nothing is replayed silently.
4. It knows nothing of resources: ``Client`` (``_client.py``) adds them.
"""

from __future__ import annotations

import logging
import platform
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import urlencode, urljoin

import msgspec

from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    ArchiveLimits,
    Timeout,
    Verify,
    ca_locations,
    cloudflare_headers,
    dump_headers_default,
    proxy_rules,
    resolve_api_key,
    resolve_base_url,
)
from ._event_stream import Connector, EventSource, EventStream
from ._exceptions import APIConnectionError, InvalidRequestError
from ._observe import (
    ErrorInfo,
    EventHooks,
    RequestInfo,
    ResponseInfo,
    RetryInfo,
    StreamEndInfo,
    check_hooks,
    dump,
    emit,
    mask_url,
    setup_logging,
    shown_url,
)
from ._response import Sender, StreamedResponse, decode_body, status_error
from ._retry import RetryBudget, RetryHints, should_retry_status
from ._transport import (
    ACCEPT_ENCODING,
    DEFAULT_POOL_MAXSIZE,
    Headers,
    Request,
    Transport,
    check_request,
    origin_of,
)
from ._typing import E, T
from ._version import __version__
from .sse import DEFAULT_MAX_SIZE

__all__ = ["MAX_REDIRECTS", "BaseClient", "CallOptions", "Params", "StreamOptions", "Timeoutish"]

Self = TypeVar("Self", bound="BaseClient")
Params = Mapping[str, Any]
Timeoutish = float | Timeout | None

log = logging.getLogger("tinker_sync")

MAX_REDIRECTS = 10
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# An absolute URL starts with a scheme (RFC 3986): anything else is a path under the base URL.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
DEFAULT_ARCHIVE_LIMITS = ArchiveLimits()
USER_AGENT = f"tinker-sync/{__version__} Python/{platform.python_version()}"


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


class BaseClient:
    """The HTTP core of a Tinker client: requests, retries, hooks, redirects, streams. No resources.

    Args:
        api_key: the API key; defaults to ``TINKER_API_KEY``. Must start
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
        archive_limits: what extracting a checkpoint archive may create
            (``ArchiveLimits``: members, bytes, name length).
        proxy: an HTTP proxy for every request (``http://user:password@host:port``);
            by default ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` (either case),
            with ``NO_PROXY``. Requests go through a ``CONNECT`` tunnel: the proxy
            never sees a header (the API key), a path or a signed URL.
        verify: TLS verification: ``True`` (the system's CAs, and under ``trust_env``
            ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` / ``REQUESTS_CA_BUNDLE``), ``False``
            (none; warns once), a CA file or directory (only those CAs), an
            ``ssl.SSLContext``, or ``TLS(extra_ca=...)`` (the default CAs and more).
        trust_env: read proxies and CA locations from the environment (default
            True, as requests, httpx and curl do).
        sleep: how the client waits between retries (for tests: record instead).

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
        event_hooks: EventHooks | None = None,
        dump_headers: bool | None = None,
        pool_maxsize: int = DEFAULT_POOL_MAXSIZE,
        max_event_size: int = DEFAULT_MAX_SIZE,
        archive_limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
        proxy: str | None = None,
        verify: Verify = True,
        trust_env: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        setup_logging()
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self._origin = origin_of(self.base_url)
        self.timeout = Timeout.coerce(timeout)
        self.max_retries = max_retries
        # Read once, as every environment setting (TINKER_*, CLOUDFLARE_ACCESS_*).
        self.default_headers = {**cloudflare_headers(), **(default_headers or {})}
        check_request("GET", self.default_headers)
        self.event_hooks = check_hooks(event_hooks)
        self.dump_headers = dump_headers_default() if dump_headers is None else dump_headers
        self.max_event_size = max_event_size
        self.archive_limits = archive_limits
        self._sleep = sleep
        self.trust_env = trust_env
        self._transport = Transport(
            pool_maxsize=pool_maxsize,
            proxies=proxy_rules(proxy, trust_env),
            verify=verify,
            ca=ca_locations(trust_env),
        )

    def __repr__(self) -> str:
        return f"<tinker_sync.{type(self).__name__} base_url={self.base_url!r}>"

    @property
    def max_connections(self) -> int:
        """The most connections one download may use at once: what the pool keeps per host."""
        return self._transport.pool_maxsize

    def __enter__(self: Self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection (shared with copies made by ``with_options``)."""
        self._transport.close()

    # -- building requests ---------------------------------------------------

    def is_api_url(self, url: str) -> bool:
        """Whether ``url`` is on the base URL's origin (and so may see the API key)."""
        return origin_of(url) == self._origin

    def build_url(self, path: str, params: Params | None = None) -> str:
        """Join ``path`` to the base URL (an absolute http(s) URL is kept) and add ``params``.

        Raises:
            InvalidRequestError: an absolute URL of another scheme (``ftp:``, ``file:``, ...).
        """
        scheme = _SCHEME.match(path)
        if scheme is None:
            url = f"{self.base_url}/{path.lstrip('/')}"
        elif scheme.group(1).lower() in ("http", "https"):
            url = path
        else:
            raise InvalidRequestError(f"Invalid URL {path!r}: only http and https URLs can be requested")
        if params:
            for key, value in params.items():
                for text in (key, *(value if isinstance(value, (list, tuple)) else (value,))):
                    if isinstance(text, str) and ("\r" in text or "\n" in text or "\x00" in text):
                        raise InvalidRequestError(f"Invalid query parameter {str(key)[:40]!r}: CR, LF or NUL")
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
            check_request(method, headers)
            for name, value in headers.items():
                request_headers[name] = value  # the caller's value wins, its idempotency key too
        check_request(method, request_headers)
        return Request(method, url, request_headers, body)

    # -- the one send path ---------------------------------------------------

    def _budget(self, timeout: Timeout, max_retries: int | None) -> RetryBudget:
        """A new retry budget for one logical call (its deadline starts now)."""
        deadline = None if timeout.total is None else time.monotonic() + timeout.total
        return RetryBudget(self.max_retries if max_retries is None else max_retries, deadline=deadline)

    def _timeout(self, timeout: Timeoutish) -> Timeout:
        return self.timeout if timeout is None else Timeout.coerce(timeout)

    def send(
        self,
        request: Request,
        *,
        timeout: Timeoutish = None,
        max_retries: int | None = None,
        budget: RetryBudget | None = None,
        read_body: bool = False,
        quiet: bool = False,
        retry: bool = True,
        resumer: Sender | None = None,
        final: Collection[int] = (),
    ) -> StreamedResponse:
        """Send ``request`` with retries; return the response once established.

        Retries connection errors, timeouts and retryable statuses, reading
        and releasing each error body first. A 4xx/5xx that is not retried
        raises the SDK's exception for it, body read. With ``read_body`` the
        body is read too (a body cut short is then retried).

        Args:
            budget: the logical call's retry budget, when this send is part
                of a larger call (a resume, a reconnect, a redirect).
            quiet: skip the ``request`` and ``response`` hooks (the send
                belongs to a logical request already reported).
            retry: False makes one attempt (counted in ``budget``): the caller
                decides what to do with a failure.
            resumer: what resumes a broken body of the response (default:
                this client; a signed-URL signer re-signs first).
            final: statuses that are this call's answer, never retried (a 409
                that means "already public" will not change by asking again).
        """
        timeout = self._timeout(timeout)
        if budget is None:
            budget = self._budget(timeout, max_retries)
        method, url = request.method, mask_url(request.url)
        if not quiet:
            emit(self.event_hooks, "request", RequestInfo(method, url))
        start = time.monotonic()
        while True:
            request.headers["x-stainless-retry-count"] = str(budget.sent())
            if self.dump_headers:
                proxy = self._transport.proxy_for(request.url)
                via = f" via proxy {mask_url(proxy)}" if proxy else ""
                dump(">", f"{method} {url} (attempt {budget.attempts}){via}", request.headers)
            try:
                raw = self._transport.send(request, timeout, budget.deadline)
                response = StreamedResponse(
                    raw,
                    request,
                    sender=resumer or self,
                    budget=budget,
                    timeout=timeout,
                    max_event_size=self.max_event_size,
                )
                if self.dump_headers:
                    dump("<", f"{response.status_code} {url}", response.headers)
                if response.status_code >= 400:
                    error = status_error(response)
                    retryable = response.status_code not in final and should_retry_status(
                        response.status_code, response.headers
                    )
                    reason = f"HTTP {response.status_code}"
                    if (
                        retry
                        and retryable
                        and self._backoff(budget, request, reason, headers=response.headers)
                    ):
                        continue
                    try:
                        raise error
                    finally:
                        del error  # no frame <-> traceback cycle keeping the response alive
                if read_body:
                    response.read()
            except APIConnectionError as exc:
                if retry and self._backoff(budget, request, str(exc), cause=exc.cause):
                    continue
                emit(self.event_hooks, "error", ErrorInfo(method, url, budget.attempts, exc))
                raise
            except Exception as exc:
                emit(self.event_hooks, "error", ErrorInfo(method, url, budget.attempts, exc))
                raise
            if not quiet:
                elapsed = time.monotonic() - start
                emit(
                    self.event_hooks,
                    "response",
                    ResponseInfo(method, url, response.status_code, budget.attempts, elapsed),
                )
            return response

    def _backoff(
        self, budget: RetryBudget, request: Request, reason: str, **hints: Unpack[RetryHints]
    ) -> bool:
        """Spend one retry of ``budget`` on ``reason``: log it, report it, wait. False when spent.

        Every kind of recovery comes here (retries, resumes, reconnects,
        re-signing), so each is logged at INFO and reported to the ``retry``
        hook the same way. ``hints``: see ``RetryHints``.
        """
        wait = budget.retry(**hints)
        url = mask_url(request.url)
        if wait is None:
            log.info("Giving up on %s %s after %d attempts: %s", request.method, url, budget.attempts, reason)
            return False
        log.info(
            "Retrying %s %s in %.2f s (attempt %d, failure %d of %d since progress): %s",
            request.method,
            url,
            wait,
            budget.attempts + 1,
            budget.failures,
            budget.max_retries,
            reason,
        )
        emit(self.event_hooks, "retry", RetryInfo(request.method, url, budget.attempts, reason, wait))
        self._sleep(wait)
        return True

    def _wait(self, seconds: float, reason: str) -> None:
        """Wait without spending a retry (the server asked for time: an archive being prepared)."""
        log.info("Waiting %.2f s: %s", seconds, reason)
        self._sleep(seconds)

    def _stream_end(
        self,
        response: EventSource | None,
        request: Request,
        budget: RetryBudget | None,
        events: int,
        error: BaseException | None,
        start: float,
    ) -> None:
        emit(
            self.event_hooks,
            "stream_end",
            StreamEndInfo(
                request.method,
                mask_url(request.url),
                response.status_code if response is not None else 0,
                budget.attempts if budget is not None else 0,
                getattr(response, "num_bytes_downloaded", 0),
                events,
                time.monotonic() - start,
                None if error is None or isinstance(error, GeneratorExit) else repr(error),
            ),
        )

    def _open(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        budget: RetryBudget,
        read_body: bool = False,
        credentials: bool = True,
        follow_redirects: bool = False,
        final: Collection[int] = (),
    ) -> StreamedResponse:
        """Build and send a request; with ``follow_redirects``, follow up to MAX_REDIRECTS hops.

        Each hop is built for its own origin (the API key never crosses to
        another), within the same retry budget; a redirect from https to
        plain http, or to anything but http(s), is refused at once.
        """
        request = self.build_request(
            method, path, params=params, json=json, content=content, headers=headers, credentials=credentials
        )
        for _ in range(MAX_REDIRECTS + 1):
            response = self.send(request, timeout=timeout, budget=budget, read_body=read_body, final=final)
            location = response.headers.get("location")
            if not follow_redirects or response.status_code not in REDIRECT_STATUSES:
                return response
            response.close()
            if not location:
                raise APIConnectionError(
                    f"Redirect {response.status_code} without a Location from {mask_url(request.url)}",
                    request,
                    cause="redirect",
                )
            try:
                target = urljoin(request.url, location.strip())
            except ValueError:
                target = location  # refused just below, as a URL that does not parse
            check_redirect(request.url, target, request)
            log.info(
                "Following redirect %d from %s to %s",
                response.status_code,
                mask_url(request.url),
                mask_url(target),
            )
            if response.status_code == 303 or (
                response.status_code in (301, 302) and request.method == "POST"
            ):
                method, json, content = "GET", None, None
            request = self.build_request(
                method, target, json=json, content=content, headers=headers, credentials=credentials
            )
        raise APIConnectionError(
            f"Too many redirects (more than {MAX_REDIRECTS}) from {mask_url(request.url)}",
            request,
            cause="redirect",
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
        cast_to: type[T] | None = None,
    ) -> T:
        """Send a request, read the whole body and decode it (JSON via msgspec, into ``cast_to`` if given).

        Asks for a compressed body (``Accept-Encoding``: gzip, and br / zstd when
        their packages are installed), decoded on arrival. Returns None for an
        empty body, text for a non-JSON body.
        """
        call = self._call(
            method,
            path,
            params=params,
            json=json,
            content=content,
            headers=headers,
            timeout=timeout,
            max_retries=max_retries,
            read_body=True,
        )
        with call as response:
            decoded: T = decode_body(response, cast_to)
        return decoded

    @contextmanager
    def _call(
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
        budget: RetryBudget | None = None,
        read_body: bool = False,
        credentials: bool = True,
        follow_redirects: bool = False,
        opener: Callable[[RetryBudget, Timeout], StreamedResponse] | None = None,
        final: Collection[int] = (),
    ) -> Iterator[StreamedResponse]:
        """One logical call as a ``with`` block: the response once established, closed at the end.

        The call gets its own retry budget and deadline, or spends ``budget``
        when it is part of a larger call. ``opener`` replaces the plain send
        (a polled future, a signed archive): it gets the budget and timeout.
        The ``stream_end`` hook reports the call when the block ends. A body
        read whole (``read_body``) may travel compressed (``Accept-Encoding``);
        a streamed one keeps ``identity``, its bytes as stored.
        """
        if read_body:
            headers = {"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}
        timeout = self._timeout(timeout)
        if budget is None:
            budget = self._budget(timeout, max_retries)
        start = time.monotonic()
        try:
            if opener is not None:
                response = opener(budget, timeout)
            else:
                response = self._open(
                    method,
                    path,
                    params=params,
                    json=json,
                    content=content,
                    headers=headers,
                    timeout=timeout,
                    budget=budget,
                    read_body=read_body,
                    credentials=credentials,
                    follow_redirects=follow_redirects,
                    final=final,
                )
        except BaseException as exc:
            self._stream_end(
                None, Request(method.upper(), self.build_url(path, params)), budget, 0, exc, start
            )
            raise
        error: BaseException | None = None
        try:
            yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            response.close()
            self._stream_end(response, response.request, budget, 0, error, start)

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
        call = self._call(
            method,
            path,
            params=params,
            json=json,
            content=content,
            headers=headers,
            timeout=timeout,
            max_retries=max_retries,
            credentials=credentials,
            follow_redirects=follow_redirects,
        )
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
        connector = self._event_connector(
            method,
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            idle_timeout=idle_timeout,
            max_retries=max_retries,
        )
        return EventStream(
            connector,
            cast_to=cast_to,
            reconnect=reconnect,
            idle_timeout=idle_timeout,
            max_event_size=self.max_event_size,
        )

    def _event_connector(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeoutish = None,
        idle_timeout: float | None = None,
        max_retries: int | None = None,
    ) -> Connector:
        """What an ``EventStream`` (or a subclass of it) opens and reopens its request through."""
        timeout = self._timeout(timeout)
        if idle_timeout is not None:
            read = idle_timeout if timeout.read is None else min(timeout.read, idle_timeout)
            timeout = Timeout(connect=timeout.connect, read=read, total=timeout.total)
        return _EventConnector(self, method, path, params, json, headers, timeout, max_retries)

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

    def __init__(
        self,
        client: BaseClient,
        method: str,
        path: str,
        params: Params | None,
        json: Any,
        headers: Mapping[str, str] | None,
        timeout: Timeout,
        max_retries: int | None,
    ) -> None:
        self._client = client
        self._args = (method, path, params, json, headers)
        self._timeout = timeout
        self._max_retries = max_retries
        self._request: Request | None = None
        self._budget: RetryBudget | None = None
        self._start = 0.0

    def open(self, last_event_id: str | None) -> StreamedResponse:
        client = self._client
        if self._request is None or self._budget is None:
            method, path, params, json, headers = self._args
            self._start = time.monotonic()
            self._budget = client._budget(self._timeout, self._max_retries)
            self._request = client.build_request(
                method, path, params=params, json=json, headers=headers, accept="text/event-stream"
            )
            return client.send(self._request, timeout=self._timeout, budget=self._budget)
        request = Request(
            self._request.method, self._request.url, self._request.headers.copy(), self._request.body
        )
        if last_event_id:  # the spec: UTF-8, and no header at all for an empty ID
            request.headers["Last-Event-ID"] = last_event_id.encode("utf-8").decode("latin-1")
        return client.send(request, timeout=self._timeout, budget=self._budget, quiet=True)

    def wait_to_reconnect(self, error: APIConnectionError, *, events: int, retry: float) -> bool:
        assert self._request is not None and self._budget is not None
        reason = f"stream broke ({error}); reconnecting"
        return self._client._backoff(
            self._budget, self._request, reason, cause=error.cause, progress=events, min_wait=retry
        )

    def finished(self, source: EventSource | None, events: int, error: BaseException | None) -> None:
        if self._request is not None:
            self._client._stream_end(source, self._request, self._budget, events, error, self._start)


def check_redirect(source: str, target: str, request: Request | None = None) -> None:
    """Raise APIConnectionError (never retried) unless a redirect to ``target`` may be followed.

    Only http(s) URLs that parse unambiguously, and never from https down to
    plain http (the signed URL, and anything sent with it, would travel in the clear).
    """
    try:
        old, new = origin_of(source)[0], origin_of(target)[0]
    except InvalidRequestError as exc:
        raise APIConnectionError(
            f"Refusing redirect to a non-HTTP URL: {shown_url(target)} ({exc})", request, cause="redirect"
        ) from None
    if old == "https" and new == "http":
        raise APIConnectionError(
            f"Refusing redirect from https to plain http: {shown_url(source)} -> {shown_url(target)}",
            request,
            cause="redirect",
        )
