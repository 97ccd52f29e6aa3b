"""Every exception tinker_sync raises, with the official SDK's names.

    TinkerError
    +-- APIError(message, request, body)
    |   +-- APIStatusError(message, response, body)    .status_code, .response
    |   |   +-- BadRequestError            400
    |   |   +-- AuthenticationError        401
    |   |   +-- BillingError               402
    |   |   +-- PermissionDeniedError      403
    |   |   +-- NotFoundError              404
    |   |   +-- ConflictError              409
    |   |   +-- UnprocessableEntityError   422
    |   |   +-- RateLimitError             429
    |   |   +-- InternalServerError        >= 500
    |   +-- APIConnectionError            connect, reset, truncated body
    |   |   +-- APITimeoutError           connect / read / idle / total timeout
    |   +-- APIResponseValidationError    body does not fit ``cast_to``
    |   +-- ResponseTooLargeError         a non-streamed body over ``max_response_size``
    |   +-- CheckpointNotReadyError       archive not prepared within the deadline
    +-- RequestFailedError(message, request_id, category)
    +-- InvalidRequestError               a request refused before sending (bad URL, CR/LF/NUL)
    +-- StreamAlreadyConsumed             a body read twice
    +-- SSEDecodeError                    line or event over the decoder's limit
    +-- DownloadIntegrityError            size or checksum mismatch
    +-- DownloadLockedError               another run holds the target's lock
    +-- UnsafeArchiveError                hostile tar member

    UserWarning
    +-- InsecureRequestWarning            Client(verify=False), warned once per client

Rules: every class is picklable (the live ``response`` and ``request``
objects, which hold sockets, are dropped on the way); ``status_error_class``
is the one status -> class table. No message holds a URL's credentials: every
string argument and ``message`` pass ``mask_credentials`` when the error is made,
so ``str()``, ``repr()``, tracebacks and pickles show ``user:***@host``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BillingError",
    "CheckpointNotReadyError",
    "ConflictError",
    "DownloadIntegrityError",
    "DownloadLockedError",
    "InsecureRequestWarning",
    "InternalServerError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestFailedError",
    "ResponseTooLargeError",
    "SSEDecodeError",
    "StreamAlreadyConsumed",
    "TinkerError",
    "UnprocessableEntityError",
    "UnsafeArchiveError",
    "mask_credentials",
    "status_error_class",
]

# Attributes holding live objects (sockets, pools): never pickled.
_UNPICKLABLE = ("request", "response")


def _restore(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    exc = cls.__new__(cls)
    BaseException.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def mask_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: from ``scheme://`` to the last ``@``
    before the next whitespace (a proxy password may hold an unencoded ``/ # ? @ :``), all becomes
    ``***`` but a plain user name before a ``:`` (``user:***@host``, or ``***@host``)."""
    if "@" not in text:
        return text
    out: list[str] = []
    done = 0
    for match in _SCHEME.finditer(text):
        start = match.end()
        if match.start() < done:
            continue
        end = start
        while end < len(text) and not text[end].isspace():
            end += 1
        at = text.rfind("@", start, end)
        if at < 0:
            continue
        user, colon, _ = text[start:at].partition(":")
        plain = colon and not any(c in user for c in "/#?@")  # else the "user" holds password bytes
        out += [text[done:start], f"{user}:***" if plain else "***"]
        done = at
    return "".join(out) + text[done:]


class TinkerError(Exception):
    """Base class of every error raised by tinker_sync."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask_credentials(a) if isinstance(a, str) else a for a in args))

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: (None if k in _UNPICKLABLE else v) for k, v in self.__dict__.items()}
        return (_restore, (type(self), self.args, state))


class APIError(TinkerError):
    """An error tied to one API request.

    Attributes:
        message: the text of the error.
        request: the request (method, URL, headers) that failed, if any.
        body: the decoded error body (JSON when it was JSON, else text), or None.
    """

    def __init__(self, message: str, request: Any = None, *, body: object | None = None) -> None:
        super().__init__(message)
        self.message = mask_credentials(message)
        self.request = request
        self.body = body


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status.

    Raised before any streaming starts, with the error body already read.
    """

    status_code: int = 0

    def __init__(self, message: str, response: Any, body: object | None = None) -> None:
        super().__init__(message, getattr(response, "request", None), body=body)
        self.response = response
        self.status_code = getattr(response, "status_code", type(self).status_code)


class BadRequestError(APIStatusError):
    """HTTP 400: the request was invalid or malformed."""

    status_code = 400


class AuthenticationError(APIStatusError):
    """HTTP 401: the API key is missing or invalid."""

    status_code = 401


class BillingError(APIStatusError):
    """HTTP 402: the account has a billing issue."""

    status_code = 402


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the key may not access this resource."""

    status_code = 403


class NotFoundError(APIStatusError):
    """HTTP 404: the resource does not exist."""

    status_code = 404


class ConflictError(APIStatusError):
    """HTTP 409: the request conflicts with the resource's state."""

    status_code = 409


class UnprocessableEntityError(APIStatusError):
    """HTTP 422: well-formed but semantically wrong."""

    status_code = 422


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests."""

    status_code = 429


class InternalServerError(APIStatusError):
    """HTTP 500 or above: the server failed."""

    status_code = 500


class APIConnectionError(APIError):
    """The connection failed, or a body ended before it was complete.

    A body cut short (reset, truncated chunked encoding, fewer bytes than
    Content-Length) raises this, never ends a loop as if it were complete.

    Attributes:
        cause: what failed, for the retry policy and for callers: ``"connect"``
            (refused, unreachable), ``"dns"`` (the host does not resolve),
            ``"tls"`` (certificate or handshake), ``"timeout"``, ``"deadline"``
            (``Timeout.total``), ``"broken"`` (reset or cut mid-body),
            ``"url"`` (unusable URL), ``"redirect"`` (a refused redirect),
            ``"proxy"`` (the proxy refused the tunnel: 403, 407),
            ``"resume"`` (a body that cannot be continued), or None.
            ``tls``, ``url``, ``redirect`` and ``proxy`` are never retried.
    """

    def __init__(
        self, message: str = "Connection error.", request: Any = None, *, cause: str | None = None
    ) -> None:
        super().__init__(message, request)
        self.cause = cause


class APITimeoutError(APIConnectionError):
    """A connect, read, idle or total timeout expired."""

    def __init__(
        self, message: str = "Request timed out.", request: Any = None, *, cause: str | None = "timeout"
    ) -> None:
        super().__init__(message, request, cause=cause)


class APIResponseValidationError(APIError):
    """The response body does not fit the requested ``cast_to`` type.

    The message keeps msgspec's ``$.path`` text, saying where it failed.
    """

    def __init__(self, message: str, response: Any = None, body: object | None = None) -> None:
        super().__init__(message, getattr(response, "request", None), body=body)
        self.response = response
        self.status_code = getattr(response, "status_code", None)


class CheckpointNotReadyError(APIError):
    """The server did not finish preparing a checkpoint archive within ``prepare_timeout``.

    Distinct from a transfer failure: nothing was downloaded yet, and trying
    again later may succeed.
    """


class RequestFailedError(TinkerError):
    """An asynchronous request (a future) completed in a failed state."""

    def __init__(self, message: str, request_id: str, category: str) -> None:
        super().__init__(message)
        self.message = mask_credentials(message)
        self.request_id = request_id
        self.category = category


class InvalidRequestError(TinkerError, ValueError):
    """The client refused to send a request, before anything was sent.

    A URL it cannot parse unambiguously (or that is not http/https), or a CR,
    LF or NUL in a path, query, header name or header value: anything that
    could make the request mean something else on the wire.
    """


class StreamAlreadyConsumed(TinkerError):
    """A streamed body was read after it had been consumed or closed."""


class ResponseTooLargeError(APIError):
    """A non-streamed call's body (a typed or JSON answer) is larger than ``max_response_size``.

    Reading stopped at the limit and the connection was discarded. The message names the limit
    and the option that sets it: ``Client(max_response_size=...)`` or, for some calls,
    ``client.with_options(max_response_size=...)``; a body meant to be large is streamed.

    Attributes:
        limit: the limit, in bytes.
    """

    def __init__(self, message: str, request: Any = None, *, limit: int = 0) -> None:
        super().__init__(message, request)
        self.limit = limit


class SSEDecodeError(TinkerError, ValueError):
    """The event stream broke the decoder's rules (a line or event over ``max_size``)."""


class DownloadIntegrityError(TinkerError):
    """A download's size or checksum does not match what was promised."""


class DownloadLockedError(TinkerError):
    """Another download (an overlapping run) holds the lock of the same target."""


class UnsafeArchiveError(TinkerError):
    """A tar archive holds a member that may not be extracted (named in the message)."""


class InsecureRequestWarning(UserWarning):
    """A client was built with ``verify=False`` (or an ``ssl.SSLContext`` that does not verify):
    TLS certificates are not checked.

    Warned once, when the client is built (urllib3's warning on every
    request is silenced for it).
    """


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: BillingError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status_code, APIStatusError)
