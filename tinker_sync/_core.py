"""ClientCore: a client's settings, its requests, the one send path (retries, hooks, dumps), logical calls.

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
4. A call is described by one ``RequestOptions``, read here and passed on
   whole; the public verbs that build it live in ``BaseClient``.
"""

from __future__ import annotations

import logging
import platform
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, Unpack
from urllib.parse import urlencode, urlsplit

import msgspec

from ._auth import Auth, Exchange, is_invalid_token
from ._config import (
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    ArchiveLimits,
    Timeout,
    Verify,
    ca_locations,
    cloudflare_headers,
    dump_headers_default,
    proxy_rules,
    resolve_base_url,
    resolve_credentials,
)
from ._decode import decode_body
from ._event_stream import EventSource
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
)
from ._options import Params, RequestOptions, Timeoutish
from ._redirects import MAX_REDIRECTS, REDIRECT_STATUSES, next_hop
from ._response import Sender, StreamedResponse
from ._retry import RetryBudget, RetryHints, should_retry_status
from ._status_errors import status_error
from ._transport import (
    ACCEPT_ENCODING,
    DEFAULT_POOL_MAXSIZE,
    Headers,
    Request,
    Transport,
    check_request,
    origin_of,
)
from ._version import SDK_VERSION, __version__
from .sse import DEFAULT_MAX_SIZE

__all__ = ["USER_AGENT", "ClientCore"]

Self = TypeVar("Self", bound="ClientCore")

log = logging.getLogger("tinker_sync")

# An absolute URL starts with a scheme (RFC 3986): anything else is a path under the base URL.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
DEFAULT_ARCHIVE_LIMITS = ArchiveLimits()
USER_AGENT = f"tinker-sync/{__version__} Python/{platform.python_version()}"
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64", "i386": "x32", "i686": "x32"}
_OS = {"Linux": "Linux", "Darwin": "MacOS", "Windows": "Windows", "FreeBSD": "FreeBSD"}
# What the official SDK says of itself on every API request (its Stainless fingerprint), with the
# API version tinker_sync implements (User-Agent still names tinker-sync).
FINGERPRINT = {
    "X-Stainless-Package-Version": SDK_VERSION,
    "X-Stainless-OS": _OS.get(platform.system(), f"Other:{platform.system()}"),
    "X-Stainless-Arch": _ARCH.get(platform.machine().lower(), f"other:{platform.machine()}"),
    "X-Stainless-Runtime": platform.python_implementation(),
    "X-Stainless-Runtime-Version": platform.python_version(),
    "X-Stainless-Async": "false",
    "X-SDK-Version": SDK_VERSION,
}


class ClientCore:
    """The core of a client under ``BaseClient`` (which documents the arguments): its settings, the
    requests it builds, the one send path, logical calls. No verbs, no resources."""

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
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        archive_limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
        proxy: str | None = None,
        proxy_tunnel: bool = False,
        verify: Verify = True,
        trust_env: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        handshake: bool = True,
    ) -> None:
        setup_logging()
        credentials = resolve_credentials(api_key)
        self.api_key = credentials.key  # None when TINKER_CREDENTIAL_CMD is the only source
        self.base_url = resolve_base_url(base_url)
        # The handshake (client/config) and the JWTs: lazily, once for this client and its copies.
        self._auth = Auth(credentials, SDK_VERSION, handshake=handshake)
        self._api_prefix = urlsplit(self.base_url).path.rstrip("/") + "/api/"
        self._origin = origin_of(self.base_url)
        self.timeout = Timeout.coerce(timeout)
        for name, value, least in (
            ("max_retries", max_retries, 0),
            ("pool_maxsize", pool_maxsize, 1),
            ("max_response_size", max_response_size, 1),
        ):
            if type(value) is not int or value < least:  # now, not after a connect
                raise ValueError(f"{name} must be an integer of {least} or more, got {value!r}")
        self.max_retries = max_retries
        # Read once, as every environment setting (TINKER_*, CLOUDFLARE_ACCESS_*).
        self.default_headers = {**cloudflare_headers(), **(default_headers or {})}
        check_request("GET", self.default_headers)
        self.event_hooks = check_hooks(event_hooks)
        self.dump_headers = dump_headers_default() if dump_headers is None else dump_headers
        self.max_event_size = max_event_size
        self.max_response_size = max_response_size
        self.archive_limits = archive_limits
        self._sleep = sleep
        self.trust_env = trust_env
        self._transport = Transport(
            pool_maxsize=pool_maxsize,
            proxies=proxy_rules(proxy, trust_env),
            proxy_tunnel=proxy_tunnel,
            verify=verify,
            ca=ca_locations(trust_env),
        )

    def __repr__(self) -> str:
        return f"<tinker_sync.{type(self).__name__} base_url={mask_url(self.base_url)!r}>"

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

    def build_request(self, options: RequestOptions) -> Request:
        """The request ``options`` describe, with the Tinker headers only when it goes to the API's origin.

        ``options.credentials=False`` leaves out the API key and every Tinker
        header whatever the origin: for signed URLs, which carry their own
        authorization. A body read whole (``options.read_body``) may travel
        compressed (``Accept-Encoding``); a streamed one keeps ``identity``,
        its bytes as stored.
        """
        method = options.method
        url = self.build_url(options.url, options.params)
        request_headers = Headers({"User-Agent": USER_AGENT})
        body: bytes | None = None
        if options.json is not None:
            body = msgspec.json.encode(options.json)
            request_headers["Content-Type"] = "application/json"
        elif options.content is not None:
            content = options.content
            body = content.encode() if isinstance(content, str) else bytes(content)
        if options.credentials and self.is_api_url(url):
            request_headers["Accept"] = options.accept
            request_headers.update(FINGERPRINT)
            if not options.headers or not any(name.lower() == "x-api-key" for name in options.headers):
                # the handshake's own calls give theirs; only /api/ paths wait for the handshake
                handshake = urlsplit(url).path.startswith(self._api_prefix)
                request_headers["X-API-Key"] = self._auth.header(self._exchange(options), handshake=handshake)
            request_headers.update(self.default_headers)
            if method != "GET":
                request_headers["X-Idempotency-Key"] = options.idempotency_key or str(uuid.uuid4())
        if options.read_body:
            request_headers["Accept-Encoding"] = ACCEPT_ENCODING
        if options.headers:
            check_request(method, options.headers)
            for name, value in options.headers.items():
                request_headers[name] = value  # the caller's value wins, its idempotency key too
        check_request(method, request_headers)
        return Request(method, url, request_headers, body)

    def _exchange(self, call: RequestOptions | None = None) -> Exchange:
        """How this client sends the handshake's requests for ``call`` (the call that needs them):
        with its timeout and max retries, so that the handshake is bounded as the call is. They
        belong to that call: no ``request``, ``response`` or ``stream_end`` hook of their own
        (their retries and errors are reported, and dumped with ``dump_headers``)."""
        timeout, max_retries = (None, None) if call is None else (call.timeout, call.max_retries)

        def exchange(path: str, credential: str, body: dict[str, Any]) -> Any:
            """POST ``body`` to ``/api/v1/<path>`` with ``credential`` as the key."""
            options = RequestOptions(
                "POST",
                f"/api/v1/{path}",
                headers={"X-API-Key": credential},
                json=body,
                timeout=timeout,
                max_retries=max_retries,
                read_body=True,
            )
            response = self.send(self.build_request(options), options, quiet=True)
            try:
                return decode_body(response, None)
            finally:
                response.close()

        return exchange

    # -- the one send path ---------------------------------------------------

    def _budget(self, options: RequestOptions) -> RetryBudget:
        """A new retry budget for the logical call of ``options`` (its deadline starts now): its
        max retries and total timeout, or the client's."""
        total = self._timeout(options.timeout).total
        deadline = None if total is None else time.monotonic() + total
        max_retries = options.max_retries
        return RetryBudget(self.max_retries if max_retries is None else max_retries, deadline=deadline)

    def _timeout(self, timeout: Timeoutish) -> Timeout:
        return self.timeout if timeout is None else Timeout.coerce(timeout)

    def send(
        self,
        request: Request,
        options: RequestOptions,
        budget: RetryBudget | None = None,
        *,
        quiet: bool = False,
        retry: bool = True,
        resumer: Sender | None = None,
    ) -> StreamedResponse:
        """Send ``request`` with retries, as ``options`` say (its timeout, max retries,
        ``read_body`` and ``final`` statuses); return the response once established.

        Retries connection errors, timeouts and retryable statuses, reading
        and releasing each error body first. A 4xx/5xx that is not retried
        raises the SDK's exception for it, body read. With ``options.read_body``
        the body is read too (a body cut short is then retried).

        Args:
            budget: the logical call's retry budget, when this send is part
                of a larger call (a resume, a reconnect, a redirect).
            quiet: skip the ``request`` and ``response`` hooks (the send
                belongs to a logical request already reported).
            retry: False makes one attempt (counted in ``budget``): the caller
                decides what to do with a failure.
            resumer: what resumes a broken body of the response (default:
                this client; a signed-URL signer re-signs first).
        """
        timeout = self._timeout(options.timeout)
        if budget is None:
            budget = self._budget(options)
        method, url = request.method, mask_url(request.url)
        if not quiet:
            emit(self.event_hooks, "request", RequestInfo(method, url))
        start = time.monotonic()
        replayed = False
        while True:
            request.headers["x-stainless-retry-count"] = str(budget.sent())
            if timeout.read is not None and "X-API-Key" in request.headers:
                request.headers["x-stainless-read-timeout"] = f"{timeout.read:g}"
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
                    options=options.for_resume(),
                    max_event_size=self.max_event_size,
                )
                if self.dump_headers:
                    dump("<", f"{response.status_code} {url}", response.headers)
                if response.status_code >= 400:
                    error = status_error(response)
                    if not replayed and is_invalid_token(response.status_code, response.headers):
                        replayed = True  # once: the JWT was refused before its expiry
                        token = self._auth.replace(
                            request.headers.get("X-API-Key", ""), self._exchange(options)
                        )
                        if token is not None and self.is_api_url(request.url):
                            del error
                            request.headers["X-API-Key"] = token
                            continue
                    retryable = response.status_code not in options.final and should_retry_status(
                        response.status_code, response.headers
                    )
                    reason = f"HTTP {response.status_code}"
                    if (
                        retry
                        and retryable
                        and self.backoff(budget, request, reason, headers=response.headers)
                    ):
                        continue
                    try:
                        raise error
                    finally:
                        del error  # no frame <-> traceback cycle keeping the response alive
                if options.read_body:
                    response.read_bounded(self.max_response_size)
            except APIConnectionError as exc:
                if retry and self.backoff(budget, request, str(exc), cause=exc.cause):
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

    def backoff(
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
        info = RetryInfo(
            request.method, url, budget.attempts, reason, wait, budget.failures, budget.max_retries
        )
        emit(self.event_hooks, "retry", info)
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

    def _open(self, options: RequestOptions, budget: RetryBudget) -> StreamedResponse:
        """Build and send the request of ``options``; with ``follow_redirects``, follow up to
        MAX_REDIRECTS hops (see ``_redirects``), within the same retry budget."""
        request = self.build_request(options)
        for _ in range(MAX_REDIRECTS + 1):
            response = self.send(request, options, budget)
            if not options.follow_redirects or response.status_code not in REDIRECT_STATUSES:
                return response
            response.close()
            options = next_hop(options, request, response.status_code, response.headers.get("location"))
            request = self.build_request(options)
        raise APIConnectionError(
            f"Too many redirects (more than {MAX_REDIRECTS}) from {mask_url(request.url)}",
            request,
            cause="redirect",
        )

    @contextmanager
    def _call(
        self,
        options: RequestOptions,
        *,
        budget: RetryBudget | None = None,
        opener: Callable[[RetryBudget, Timeout], StreamedResponse] | None = None,
    ) -> Iterator[StreamedResponse]:
        """One logical call as a ``with`` block: the response once established, closed at the end.

        The call gets its own retry budget and deadline, or spends ``budget``
        when it is part of a larger call. ``opener`` replaces the plain send
        (a polled future, a signed archive): it gets the budget and timeout.
        The ``stream_end`` hook reports the call when the block ends.
        """
        timeout = self._timeout(options.timeout)
        if budget is None:
            budget = self._budget(options)
        start = time.monotonic()
        try:
            response = opener(budget, timeout) if opener is not None else self._open(options, budget)
        except BaseException as exc:
            request = Request(options.method, self.build_url(options.url, options.params))
            self._stream_end(None, request, budget, 0, exc, start)
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
