"""Error mapping: every urllib3, socket and http.client error, once, to the most specific tinker_sync error.

Rules:
1. ``raise ... from``, with a ``cause`` the retry policy reads; nothing above
   the transport sees a urllib3 exception.
2. Past the call's deadline (the watchdog shut the socket down), any error is
   the deadline's.
3. Certificate, DNS and proxy errors are one line naming the host (or the
   proxy, its credentials masked).
4. A message names the phase the request was in (``CONNECTING``): connecting,
   the TLS handshake, or waiting for the response head once it was sent.
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from .._exceptions import APIConnectionError, APITimeoutError, InvalidRequestError
from .._observe import mask_url
from ._request import Request, origin_of

__all__ = ["CONNECTING", "mapped", "mapped_errors", "one_line"]

# The phase of a request until its response head arrives, which ``phase`` narrows from the error.
CONNECTING = "while connecting"
HANDSHAKE = "during the TLS handshake"
HEAD = "while waiting for the response head"


@contextmanager
def mapped_errors(
    request: Request | None, during: str = "", deadline: float | None = None, proxy: str | None = None
) -> Iterator[None]:
    """Map urllib3, socket and http.client errors to APIConnectionError / APITimeoutError.

    Past ``deadline`` (the watchdog shut the socket down), any error is the
    deadline's. ``proxy``: the proxy the request went through (named, masked,
    in proxy errors).
    """
    try:
        yield
    except (HTTPError, OSError, http.client.HTTPException) as exc:
        where = f" {phase(exc, during)}" if during else ""
        if deadline is not None and time.monotonic() >= deadline:
            raise APITimeoutError(
                f"Request timed out{where}: the total deadline passed", request, cause="deadline"
            ) from exc
        raise mapped(exc, request, where, proxy) from exc


# "Tunnel connection failed: 407 Proxy Authentication Required" (http.client's CONNECT)
_TUNNEL_FAILED = re.compile(r"Tunnel connection failed: (\d{3})\s*(.*)")
# OpenSSL's verify codes worth a sentence of their own.
_X509_EXPIRED, _X509_NOT_YET_VALID = 10, 9
_X509_NAME_MISMATCH = (62, 63, 64)  # host name, e-mail, IP address


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, and errors held in args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [e for e in (item.__cause__, item.__context__) if e is not None]
        todo += [a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]
        original = getattr(item, "original_error", None)
        if isinstance(original, BaseException):
            todo.append(original)


def phase(exc: BaseException, during: str) -> str:
    """Where ``exc`` stopped a request sent ``during`` a phase: ``CONNECTING`` is narrowed to the TLS
    handshake (urllib3 reports its timeout as a read timeout) or the wait for the response head
    (a read timeout, or the connection closed, once the request was sent)."""
    if during != CONNECTING:
        return during
    chain = list(_chain(exc))
    if any(isinstance(e, http.client.BadStatusLine) for e in chain):  # RemoteDisconnected too
        return HEAD
    if not any(isinstance(e, ReadTimeoutError) for e in chain):
        return during
    if any(isinstance(e, TimeoutError) and "handshake" in str(e) for e in chain):  # the ssl module's words
        return HANDSHAKE
    return HEAD


def _target(request: Request | None) -> str:
    """``host:port`` of the request's URL, for messages."""
    if request is None:
        return "the server"
    try:
        scheme, host, port = origin_of(request.url)
    except InvalidRequestError:
        return "the server"
    return f"{host}:{port}"


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _tls_error(exc: BaseException, request: Request | None, where: str) -> APIConnectionError:
    """One line naming the host: an untrusted, expired or mismatched certificate, or another TLS failure."""
    host = _target(request)
    verify = next((e for e in _chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is None:
        reason = next((e for e in _chain(exc) if isinstance(e, ssl.SSLError)), exc)
        return APIConnectionError(
            f"TLS handshake with {host} failed{where}: {one_line(reason)}", request, cause="tls"
        )
    code = getattr(verify, "verify_code", None)
    detail = one_line(getattr(verify, "verify_message", "") or verify)
    if code in _X509_NAME_MISMATCH:
        what = f"TLS certificate does not match the host {host} ({detail})"
    elif code == _X509_EXPIRED:
        what = f"TLS certificate of {host} has expired ({detail})"
    elif code == _X509_NOT_YET_VALID:
        what = f"TLS certificate of {host} is not valid yet ({detail})"
    else:
        what = (
            f"TLS certificate of {host} is not trusted ({detail}); trust its CA with "
            "Client(verify=tinker_sync.TLS(extra_ca=...)) or SSL_CERT_FILE"
        )
    return APIConnectionError(what, request, cause="tls")


def _proxy_error(
    exc: BaseException, request: Request | None, where: str, proxy: str | None
) -> APIConnectionError | None:
    """The error when the proxy failed: unreachable, or refused to open the tunnel; None otherwise."""
    named = f"proxy {mask_url(proxy)}" if proxy else "the proxy"
    for item in _chain(exc):
        match = _TUNNEL_FAILED.search(str(item)) if isinstance(item, OSError) else None
        if match is not None:
            status, reason = int(match.group(1)), match.group(2).strip()
            if status >= 500:  # the proxy could not reach the host: maybe transient
                return APIConnectionError(
                    f"The {named} could not open a tunnel to {_target(request)}: {status} {reason}",
                    request,
                    cause="connect",
                )
            hint = " (check the proxy's user and password)" if status == 407 else ""
            return APIConnectionError(
                f"The {named} refused to open a tunnel to {_target(request)}: {status} {reason}{hint}",
                request,
                cause="proxy",
            )
    if isinstance(exc, ProxyError):
        original = exc.original_error
        if isinstance(original, NameResolutionError):
            return APIConnectionError(
                f"Could not resolve the {named}{where}: {one_line(original._reason)}", request, cause="dns"
            )
        if isinstance(original, (TimeoutError, ConnectTimeoutError)) and not isinstance(
            original, NewConnectionError
        ):
            return APITimeoutError(f"Timed out connecting to the {named}{where}", request, cause="timeout")
        reason = getattr(original, "__cause__", None) or original
        return APIConnectionError(
            f"Could not connect to the {named}{where}: {one_line(reason)}", request, cause="connect"
        )
    return None


def mapped(
    exc: BaseException, request: Request | None, where: str, proxy: str | None = None
) -> APIConnectionError:
    if proxy is not None and (mapped := _proxy_error(exc, request, where, proxy)) is not None:
        return mapped
    if isinstance(exc, NameResolutionError):  # a NewConnectionError: first
        host = exc._host if proxy is None else _target(request)
        return APIConnectionError(
            f"Could not resolve host {host!r}{where}: {one_line(exc._reason)}", request, cause="dns"
        )
    if isinstance(exc, NewConnectionError):  # a ConnectTimeoutError subclass: before it
        reason = exc.__cause__ or exc
        return APIConnectionError(
            f"Could not connect to {_target(request)}{where}: {one_line(reason)}", request, cause="connect"
        )
    if isinstance(exc, (TimeoutError, ConnectTimeoutError, ReadTimeoutError)):
        return APITimeoutError(f"Request timed out{where}: {exc}", request, cause="timeout")
    if isinstance(exc, (SSLError, ssl.SSLError)) or any(
        isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc)
    ):
        return _tls_error(exc, request, where)
    if isinstance(exc, LocationParseError):
        return APIConnectionError(f"Invalid URL: {exc}", request, cause="url")
    if isinstance(exc, ProtocolError):
        return APIConnectionError(f"Connection broken{where}: {exc}", request, cause="broken")
    return APIConnectionError(f"Connection error{where}: {exc}", request, cause="broken")
