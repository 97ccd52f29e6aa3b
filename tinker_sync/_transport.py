"""The one module that imports urllib3: pools, proxies, TLS, sending, reading bodies, error mapping.

Rules:
1. Every urllib3 or socket error is mapped here, once, to the most specific
   tinker_sync exception (``raise ... from``), with a ``cause`` the retry
   policy reads; nothing above this module sees a urllib3 exception.
2. Bodies are never preloaded (``preload_content=False``) and redirects are
   never followed here: the client decides, so that credentials never cross
   origins.
3. Bodies are read into the caller's buffers (``Body.readinto``), straight
   from the socket: no read allocates, so a 16 KiB TLS record costs a copy,
   not a 256 KiB allocation.
4. A connection whose body was not read to its end is closed before its pool
   slot is given back: a half-read connection is never reused.
5. A deadline (``Timeout.total``) covers connecting, the response head and
   the body: a watchdog shuts the socket down when it passes, so even a
   server trickling its headers a byte at a time is cut on time.
6. Through a proxy every request goes through a ``CONNECT`` tunnel, for
   http and https URLs alike: the proxy sees ``CONNECT host:port`` and
   its own credentials, never a path, a query (a signed URL), a header (the
   API key) or a body. One pool manager per proxy URL; the proxy for each
   request is chosen by ``_config.ProxyRules``.
7. One ``ssl.SSLContext`` per transport (so per client), built on first use
   from ``verify``; certificate errors become one line naming the host.
"""

from __future__ import annotations

import heapq
import http.client
import io
import itertools
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection, ProxyConfig
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
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
from urllib3.util import Url, make_headers, parse_url
from urllib3.util.request import ACCEPT_ENCODING
from urllib3.util.ssl_ import create_urllib3_context

from ._config import TLS, CALocations, ProxyRules, Timeout, Verify
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    InsecureRequestWarning,
    InvalidRequestError,
    TinkerError,
)
from ._observe import mask_url, shown_url

__all__ = [
    "ACCEPT_ENCODING",
    "Body",
    "Headers",
    "RawResponse",
    "Request",
    "Transport",
    "check_request",
    "check_url",
    "mapped_errors",
    "origin_of",
    "ssl_context",
]

log = logging.getLogger("tinker_sync")

# Case-insensitive, multi-valued header mapping (re-exported so that no other
# module imports urllib3).
Headers = urllib3.HTTPHeaderDict
RawResponse = urllib3.BaseHTTPResponse

# Connections kept per host. Extra concurrent requests still get a connection
# (the pool does not block); only this many are kept alive afterwards.
DEFAULT_POOL_MAXSIZE = 32
_DEFAULT_PORTS = {"http": 80, "https": 443}
# While the socket file's own buffer may hold bytes (after the head, a chunk
# header), reads ask for at most its size, so that they never wait for more
# after copying what is already there.
_SMALL_READ = io.DEFAULT_BUFFER_SIZE
_MAX_LINE = 65536


@dataclass
class Request:
    """What was (or will be) sent: kept on responses, errors and hook records."""

    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    body: bytes | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {mask_url(self.url)}>"


def check_url(url: str) -> Url:
    """``url`` parsed by urllib3's parser (the one that connects), or InvalidRequestError.

    Only an unambiguous absolute http(s) URL with a host passes: no whitespace
    or control characters, no backslash (parsers disagree on it), no userinfo
    (``user:pw@``: the API key travels in a header, and ``a@b@c`` reads
    differently to different parsers), no percent-encoding in the host. The
    origin check (``origin_of``) and the connection then read the same parts.
    """
    shown = repr(shown_url(url)) if isinstance(url, str) else repr(url)[:300]
    if not isinstance(url, str) or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise InvalidRequestError(f"Invalid URL {shown}: it contains whitespace or control characters")
    if "\\" in url:
        raise InvalidRequestError(f"Invalid URL {shown}: it contains a backslash")
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        # urllib3 may quote the whole URL (a signature in it too): say why without it
        detail = str(exc)
        if url in detail or len(detail) > 200:
            detail = "Failed to parse: a host or port that is not valid"
        raise InvalidRequestError(f"Invalid URL {shown}: {detail}") from None
    if (parts.scheme or "").lower() not in _DEFAULT_PORTS:
        raise InvalidRequestError(f"Invalid URL {shown}: only http and https URLs can be requested")
    authority = (
        url.split("//", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0] if "//" in url else ""
    )
    if not parts.host or not authority:
        raise InvalidRequestError(f"Invalid URL {shown}: no host")
    if parts.auth is not None or "@" in authority:
        raise InvalidRequestError(
            f"Invalid URL {shown}: credentials in the URL (user@host) are not supported"
        )
    if "%" in authority:
        raise InvalidRequestError(f"Invalid URL {shown}: percent-encoding in the host")
    return parts


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, as urllib3 will connect to it: lower case, the scheme's default
    port filled in, a trailing dot dropped (``host.`` is ``host``)."""
    parts = check_url(url)
    scheme = (parts.scheme or "").lower()
    host = (parts.host or "").lower().removesuffix(".")
    return scheme, host, parts.port or _DEFAULT_PORTS[scheme]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but the tab


def check_request(method: str, headers: Mapping[str, object]) -> None:
    """InvalidRequestError unless the method is a token and every header name a token and value a
    string without CR, LF or NUL (which would split the request on the wire), or any other control
    character but a tab, and with no character Latin-1 cannot encode (which http.client would raise
    deep inside the send as a UnicodeEncodeError). Values never appear in the message: they may be
    secrets."""
    if not _TOKEN.fullmatch(method):
        raise InvalidRequestError(f"Invalid HTTP method {method[:40]!r}")
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidRequestError(f"Invalid header name {str(name)[:40]!r}")
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"Invalid value for header {name}: a str is needed, not {type(value).__name__}"
            )
        if "\r" in value or "\n" in value or "\x00" in value:
            raise InvalidRequestError(f"Invalid value for header {name}: it contains CR, LF or NUL")
        if _CONTROL.search(value):
            raise InvalidRequestError(f"Invalid value for header {name}: it contains a control character")
        if not value.isascii():
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise InvalidRequestError(
                    f"Invalid value for header {name}: only Latin-1 characters can be sent in a header"
                ) from None


@contextmanager
def mapped_errors(
    request: Request | None, during: str = "", deadline: float | None = None, proxy: str | None = None
) -> Iterator[None]:
    """Map urllib3, socket and http.client errors to APIConnectionError / APITimeoutError.

    Past ``deadline`` (the watchdog shut the socket down), any error is the
    deadline's. ``proxy``: the proxy the request went through (named, masked,
    in proxy errors).
    """
    where = f" {during}" if during else ""
    try:
        yield
    except (HTTPError, OSError, http.client.HTTPException) as exc:
        if deadline is not None and time.monotonic() >= deadline:
            raise APITimeoutError(
                f"Request timed out{where}: the total deadline passed", request, cause="deadline"
            ) from exc
        raise _mapped(exc, request, where, proxy) from exc


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


def _target(request: Request | None) -> str:
    """``host:port`` of the request's URL, for messages."""
    if request is None:
        return "the server"
    try:
        scheme, host, port = origin_of(request.url)
    except InvalidRequestError:
        return "the server"
    return f"{host}:{port}"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _tls_error(exc: BaseException, request: Request | None, where: str) -> APIConnectionError:
    """One line naming the host: an untrusted, expired or mismatched certificate, or another TLS failure."""
    host = _target(request)
    verify = next((e for e in _chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is None:
        reason = next((e for e in _chain(exc) if isinstance(e, ssl.SSLError)), exc)
        return APIConnectionError(
            f"TLS handshake with {host} failed{where}: {_one_line(reason)}", request, cause="tls"
        )
    code = getattr(verify, "verify_code", None)
    detail = _one_line(getattr(verify, "verify_message", "") or verify)
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
                f"Could not resolve the {named}{where}: {_one_line(original._reason)}", request, cause="dns"
            )
        if isinstance(original, (TimeoutError, ConnectTimeoutError)) and not isinstance(
            original, NewConnectionError
        ):
            return APITimeoutError(f"Timed out connecting to the {named}{where}", request, cause="timeout")
        reason = getattr(original, "__cause__", None) or original
        return APIConnectionError(
            f"Could not connect to the {named}{where}: {_one_line(reason)}", request, cause="connect"
        )
    return None


def _mapped(
    exc: BaseException, request: Request | None, where: str, proxy: str | None = None
) -> APIConnectionError:
    if proxy is not None and (mapped := _proxy_error(exc, request, where, proxy)) is not None:
        return mapped
    if isinstance(exc, NameResolutionError):  # a NewConnectionError: first
        host = exc._host if proxy is None else _target(request)
        return APIConnectionError(
            f"Could not resolve host {host!r}{where}: {_one_line(exc._reason)}", request, cause="dns"
        )
    if isinstance(exc, NewConnectionError):  # a ConnectTimeoutError subclass: before it
        reason = exc.__cause__ or exc
        return APIConnectionError(
            f"Could not connect to {_target(request)}{where}: {_one_line(reason)}", request, cause="connect"
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


# -- the deadline watchdog ------------------------------------------------------------------------


class _Watchdog:
    """Shuts down the sockets of calls past their deadline. One thread, started on first use."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, HTTPConnection]] = []
        self._armed: dict[int, int] = {}  # id(conn) -> the entry's sequence number
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, conn: HTTPConnection, deadline: float) -> None:
        with self._cond:
            seq = next(self._seq)
            self._armed[id(conn)] = seq
            heapq.heappush(self._heap, (deadline, seq, conn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tinker-sync-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, conn: Any) -> None:
        with self._cond:
            self._armed.pop(id(conn), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._armed.get(id(self._heap[0][2])) != self._heap[0][1]:
                    heapq.heappop(self._heap)  # disarmed
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, conn = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                del self._armed[id(conn)]
                # A response that closes its connection (``Connection: close``, a body ended by
                # the close) keeps reading from a socket its connection has already let go of.
                sock = conn.sock or getattr(conn, "_released_sock", None)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


_watchdog = _Watchdog()
_deadline = threading.local()  # the deadline of the call this thread is sending


@dataclass(frozen=True)
class _Tunnel:
    """Where a proxied connection connects, and what its ``CONNECT`` carries."""

    url: Url  # the proxy (credentials removed)
    headers: dict[str, str]  # Proxy-Authorization, when the proxy URL had credentials
    config: ProxyConfig | None  # TLS to an https:// proxy


class _ConnectionMixin:
    """Arms the watchdog as the request goes out, for calls with a deadline; tunnels through a proxy.

    With ``tunnel``, the socket goes to the proxy and ``CONNECT host:port``
    opens the tunnel (http.client's ``set_tunnel``, which urllib3's
    connections complete with TLS for https), for http and https alike: the
    proxy never sees a request line or a header. urllib3 forgets the tunnel
    on ``close()``: it is set again, so that a reconnect tunnels too.
    """

    _target: tuple[str, int | None] | None = None
    _tunnel_via: _Tunnel | None = None
    _released_sock: socket.socket | None = None

    def __init__(self, host: str, port: int | None = None, *, tunnel: _Tunnel | None = None, **kw: Any):
        if tunnel is None:
            super().__init__(host, port, **kw)  # type: ignore[call-arg]
            return
        proxy = tunnel.url
        super().__init__(proxy.host, proxy.port, proxy=proxy, proxy_config=tunnel.config, **kw)  # type: ignore[call-arg]
        self._target = (host, port)
        self._tunnel_via = tunnel
        self._set_tunnel()

    def _set_tunnel(self) -> None:
        assert self._target is not None and self._tunnel_via is not None
        host, port = self._target
        scheme = self._tunnel_via.url.scheme or "http"
        self.set_tunnel(host, port, headers=self._tunnel_via.headers, scheme=scheme)  # type: ignore[attr-defined]

    def close(self) -> None:
        # http.client closes the connection as soon as the head of a response that will close it
        # arrived, and the response goes on reading from the socket: the watchdog still has to be
        # able to cut it (the socket object outlives close() while the response's file holds it).
        self._released_sock = getattr(self, "sock", None)
        super().close()  # type: ignore[misc]
        if self._target is not None:
            self._set_tunnel()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._released_sock = None
        deadline = getattr(_deadline, "value", None)
        if deadline is not None:
            _watchdog.arm(self, deadline)  # type: ignore[arg-type]
            _deadline.conn = self
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_ConnectionMixin, HTTPConnection):
    pass


class _HTTPSConnection(_ConnectionMixin, HTTPSConnection):
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection
    verified = True  # False: verify=False, whose one warning the client gave already

    def _validate_conn(self, conn: Any) -> None:
        if self.verified:
            super()._validate_conn(conn)
        elif conn.is_closed:  # urllib3 would warn on every request: connect without it
            conn.connect()


class _PoolManager(urllib3.PoolManager):
    """urllib3's PoolManager with our pools; with ``tunnel``, every pool's connections tunnel through it."""

    def __init__(self, tunnel: _Tunnel | None, verified: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
        self._tunnel = tunnel
        self._verified = verified

    def _new_pool(self, scheme: str, host: str, port: int, request_context: Any = None) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        if self._tunnel is not None:
            pool.conn_kw["tunnel"] = self._tunnel
            log.debug(
                "Connecting to %s://%s:%s through proxy %s",
                scheme,
                host,
                port,
                mask_url(self._tunnel.url.url),
            )
        if isinstance(pool, _HTTPSConnectionPool):
            pool.verified = self._verified
        return pool


# -- TLS ------------------------------------------------------------------------------------------


def _check_path(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise TinkerError(f"{what}: {path!r} does not exist")
    return path


def _load(context: ssl.SSLContext, path: str, what: str) -> None:
    """Trust the CAs in ``path``: a PEM file, or a directory of hashed certificates."""
    _check_path(path, what)
    try:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TinkerError(f"{what}: cannot load CA certificates from {path!r}: {_one_line(exc)}") from exc


def ssl_context(verify: Verify, ca: CALocations) -> ssl.SSLContext:
    """The one TLS context of a client, from ``Client(verify=...)``.

    ``True``: the default trust (``ca``: OpenSSL's default file and directory,
    or the environment's). A path: only the CAs there. ``TLS(extra_ca=...)``:
    the default trust and those CAs; ``TLS(system=True)``: the operating
    system's store (``truststore``). ``False``: no verification. An
    ``ssl.SSLContext``: used as it is.

    Raises:
        TinkerError: a CA path that does not exist or does not load, or
            ``TLS(system=True)`` without the ``truststore`` package.
    """
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True or isinstance(verify, TLS):
        tls = verify if isinstance(verify, TLS) else TLS()
        if tls.system:
            try:
                import truststore
            except ImportError:
                raise TinkerError(
                    "TLS(system=True) needs the truststore package: pip install 'tinker-sync[truststore]'"
                ) from None
            context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        else:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        locations = [(ca.cafile, ca.cafile_from), (ca.capath, ca.capath_from)]
        locations.append((ca.extra, "REQUESTS_CA_BUNDLE"))
        if tls.extra_ca is not None:
            locations.append((os.fspath(tls.extra_ca), "TLS(extra_ca=...)"))
        for path, source in locations:
            if not path or (source is None and (tls.system or not os.path.exists(path))):
                continue  # OpenSSL's compiled-in default: the OS store replaces it, or this system lacks it
            _load(context, path, source or "the default CA locations")
        return context
    path = os.fspath(verify)
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    _load(context, path, "verify")
    return context


def _tls_pool_options(context: ssl.SSLContext) -> dict[str, Any]:
    """What urllib3 must be told of ``context`` (it sets the verify mode on it at each connect)."""
    options: dict[str, Any] = {"ssl_context": context, "cert_reqs": context.verify_mode}
    if not context.check_hostname:
        options["assert_hostname"] = False
    return options


# -- the transport --------------------------------------------------------------------------------


class Transport:
    """urllib3 pool managers, thread-safe, one transport per client: one for direct
    connections and one per proxy URL (made on first use), sharing one TLS context.

    Args:
        pool_maxsize: connections kept alive per host.
        proxies: which proxy each request goes through (``_config.proxy_rules``).
        verify: see ``ssl_context``; ca: the default trust's locations.
    """

    def __init__(
        self,
        *,
        pool_maxsize: int = DEFAULT_POOL_MAXSIZE,
        proxies: ProxyRules | None = None,
        verify: Verify = True,
        ca: CALocations | None = None,
    ) -> None:
        self.proxies = proxies or ProxyRules()
        self.verify = verify
        self._ca = ca or CALocations(None, None)
        self._pool_maxsize = pool_maxsize
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._managers: dict[str | None, _PoolManager] = {}
        for scheme in ("http", "https"):  # refuse a bad proxy now, not at the first request
            proxy = getattr(self.proxies, scheme)
            if proxy is not None:
                self._tunnel(proxy, scheme)
        if verify is False or (isinstance(verify, ssl.SSLContext) and verify.verify_mode == ssl.CERT_NONE):
            warnings.warn(
                "Client(verify=False): TLS certificates are not verified, so anyone on the network "
                "path can read and change this client's traffic, API key included",  # (or a CERT_NONE context)
                InsecureRequestWarning,
                stacklevel=3,
            )
        elif not isinstance(verify, (bool, ssl.SSLContext, TLS)):
            _check_path(os.fspath(verify), "verify")

    def _tunnel(self, proxy: str, scheme: str) -> _Tunnel:
        """The tunnel through ``proxy`` (checked: http or https, a host, no path)."""
        named = f"{self.proxies.source(scheme)}={mask_url(proxy)}"
        try:
            url = parse_url(proxy)
        except LocationParseError:
            raise InvalidRequestError(f"Invalid proxy URL {named}") from None
        if (url.scheme or "").lower() not in ("http", "https"):
            raise InvalidRequestError(
                f"Unsupported proxy {named}: only http:// and https:// proxies are supported"
            )
        if not url.host:
            raise InvalidRequestError(f"Invalid proxy URL {named}: no host")
        headers = {}
        if url.auth:
            user, _, password = url.auth.partition(":")
            headers = make_headers(proxy_basic_auth=f"{unquote(user)}:{unquote(password)}")
        scheme = (url.scheme or "http").lower()
        bare = Url(scheme=scheme, host=url.host, port=url.port or (443 if scheme == "https" else 80))
        config = None
        if bare.scheme == "https":
            config = ProxyConfig(self._ssl_context(), False, None, None)
        return _Tunnel(bare, headers, config)

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = ssl_context(self.verify, self._ca)
            return self._context

    @property
    def pool_maxsize(self) -> int:
        """Connections kept alive per host."""
        return self._pool_maxsize

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through (credentials included: mask before showing), or None."""
        scheme, host, port = origin_of(url)
        return self.proxies.select(scheme, host, port)

    def _manager(self, url: str) -> tuple[_PoolManager, str | None]:
        scheme, host, port = origin_of(url)
        proxy = self.proxies.select(scheme, host, port)
        with self._lock:
            manager = self._managers.get(proxy)
        if manager is not None:
            return manager, proxy
        tunnel = None
        if proxy is not None:
            tunnel = self._tunnel(proxy, scheme)
            if tunnel.url.scheme == "https" and scheme == "http":
                raise InvalidRequestError(
                    f"Cannot send {mask_url(url)} through the https:// proxy {mask_url(proxy)}: "
                    "an https:// proxy carries https:// URLs only"
                )
        context = self._ssl_context()
        verified = context.verify_mode != ssl.CERT_NONE
        created = _PoolManager(
            tunnel,
            verified,
            maxsize=self._pool_maxsize,
            block=False,
            retries=False,
            **_tls_pool_options(context),
        )
        with self._lock:
            manager = self._managers.setdefault(proxy, created)
        if manager is not created:
            created.clear()
        return manager, proxy

    def send(self, request: Request, timeout: Timeout, deadline: float | None = None) -> RawResponse:
        """Send ``request`` and return the response with its body unread.

        With a ``deadline``, connecting and waiting for the head each wait at
        most the time left, and the watchdog cuts the socket when it passes
        (``Body`` then raises APITimeoutError).
        """
        connect, read = timeout.connect, timeout.read
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.001)
            connect = left if connect is None else min(connect, left)
            read = left if read is None else min(read, left)
        manager, proxy = self._manager(request.url)
        _deadline.value = deadline
        try:
            with mapped_errors(request, "while connecting", deadline, proxy):
                raw = manager.urlopen(
                    request.method,
                    request.url,
                    body=request.body,
                    headers=request.headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    timeout=urllib3.Timeout(connect=connect, read=read),
                )
            if deadline is not None and time.monotonic() >= deadline:
                # The watchdog cut the socket while header lines trickled in: http.client takes
                # the end of the stream for the end of the head. Whatever arrived is no answer.
                raw.close()
                raw.release_conn()
                raise APITimeoutError(
                    "Request timed out while waiting for the response head: the total deadline passed",
                    request,
                    cause="deadline",
                )
            return raw
        except BaseException:
            conn = getattr(_deadline, "conn", None)
            if conn is not None:
                _watchdog.disarm(conn)
            raise
        finally:
            _deadline.value = _deadline.conn = None

    def pool_stats(self, url: str) -> dict[str, Any]:
        """Open and idle connection counts of the pool serving ``url`` (for tests and debugging)."""
        pool = self._manager(url)[0].connection_from_url(url)
        # The pool's queue is padded with None placeholders: count real connections only.
        idle = sum(conn is not None for conn in list(pool.pool.queue)) if pool.pool else 0
        return {"num_connections": pool.num_connections, "idle": idle}

    def close(self) -> None:
        with self._lock:
            managers = list(self._managers.values())
        for manager in managers:
            manager.clear()


# -- bodies ---------------------------------------------------------------------------------------


class Body:
    """One response's body, read into the caller's buffers as bytes arrive.

    ``readinto(view)`` returns as soon as any bytes are there (never waiting
    to fill ``view``: a trickle is handed on as it comes) and 0 at the end. A
    body cut short (fewer bytes than Content-Length, a broken chunked
    encoding, a reset) raises APIConnectionError, never a quiet 0.

    Bytes are read straight from the socket's file into ``view`` (plain,
    chunked and close-delimited framing alike), TLS or not. A body with a
    Content-Encoding is decoded (through urllib3's decoders: gzip, deflate,
    and br / zstd when their packages are installed) unless ``raw_bytes()``
    asks for the bytes as served (a download stores them so).

    Attributes:
        encoding: the Content-Encoding ("identity" when none).
        decode: whether reads hand out decoded bytes.
        close_delimited: the body has neither a Content-Length nor chunked
            framing: it ends when the server closes the connection, so its
            end cannot be told from a cut (downloads confirm it otherwise).
    """

    def __init__(self, raw: RawResponse, request: Request, deadline: float | None = None) -> None:
        self.raw = raw
        self.request = request
        self.deadline = deadline
        self.complete = False
        self.closed = False
        self.close_delimited = False
        response = getattr(raw, "_fp", None)
        self._response: http.client.HTTPResponse | None = None
        self._file: Any = None
        self._left: int | None = None  # bytes left of a Content-Length body or of the current chunk
        self._chunked = False
        self._small = True
        self._started = False
        self.encoding = raw.headers.get("content-encoding", "").strip().lower() or "identity"
        self.decode = self.encoding != "identity"
        self._tls: ssl.SSLSocket | None = None
        self._poll: Any = None
        if isinstance(response, http.client.HTTPResponse) and response.fp:
            self._response, self._file = response, response.fp
            self._chunked = bool(response.chunked)
            self._left = 0 if self._chunked else response.length
            self.close_delimited = not self._chunked and self._left is None
            if self._left == 0 and not self._chunked:
                self._finish()
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if isinstance(sock, ssl.SSLSocket):
                self._tls = sock

    def raw_bytes(self) -> None:
        """Hand out the body as served, without decoding its Content-Encoding.

        Only before the first read (after it, nothing changes: a second reader
        of the body is refused by its response anyway).
        """
        if not self._started and (self._file is not None or self.complete):
            self.decode = False

    def readinto(self, view: memoryview) -> int:
        """Read the next bytes into ``view``; the count, 0 at the end of the body."""
        if self.complete:
            return 0
        self._started = True
        try:
            if self._file is None or self.decode:
                return self._readinto_decoded(view)
            if self._chunked:
                return self._readinto_chunked(view)
            return self._readinto_plain(view)
        except (HTTPError, OSError, http.client.HTTPException, APIConnectionError) as exc:
            error = self._error(exc)
            try:
                if error is exc:
                    raise
                raise error from exc
            finally:
                del error  # no frame <-> traceback cycle keeping the caller's buffer alive

    def _error(self, exc: BaseException) -> APIConnectionError:
        """The error to raise for ``exc``: the deadline's once it passed (the watchdog cut the socket)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return APITimeoutError(
                "Request timed out while reading the body: the total deadline passed",
                self.request,
                cause="deadline",
            )
        if isinstance(exc, APIConnectionError):
            return exc
        return _mapped(exc, self.request, " while reading the body")

    def _read(self, view: memoryview, limit: int | None) -> int:
        size = len(view) if limit is None else min(len(view), limit)
        if self._small:
            size = min(size, _SMALL_READ)
        n: int = self._file.readinto1(view[:size])
        if self._tls is not None and not self._small and 0 < n < size:
            n += self._more_records(view[n:size])
        if self._small and (n < size or size == _SMALL_READ):
            # The file's own buffer is now empty: read big, straight from the socket. A short read
            # emptied it; so did a full-size one (the buffer holds at most _SMALL_READ bytes, and a
            # read of that size copies them all). A TLS read returns one record (16 KiB), so reads
            # of exactly _SMALL_READ would otherwise never end the small phase.
            self._small = False
        return n

    def _more_records(self, view: memoryview) -> int:
        """TLS records already here, read into ``view`` without waiting for any that are not.

        A TLS read returns one record (16 KiB); when the body is fast, the
        next records are already in the socket: reading them now hands out
        up to ``len(view)`` at once, for one pass of the caller's loop instead
        of sixteen. A slow body still gets each record as it arrives.
        """
        assert self._tls is not None
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._tls, select.POLLIN)
        got = 0
        while got < len(view) and (self._tls.pending() or self._poll.poll(0)):
            n: int = self._file.readinto1(view[got:])
            if not n:
                break
            got += n
        return got

    def _readinto_plain(self, view: memoryview) -> int:
        n = self._read(view, self._left)
        if self._left is None:  # ends with the connection
            if not n:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    # the watchdog closed it, not the server: a cut, not the end
                    raise APIConnectionError(
                        "the body was cut at the deadline", self.request, cause="deadline"
                    )
                self._finish()
            return n
        if not n:
            raise APIConnectionError(
                f"Connection broken while reading the body: it ended {self._left} bytes short of its Content-Length",
                self.request,
                cause="broken",
            )
        self._left -= n
        if not self._left:
            self._finish()
        return n

    def _readinto_chunked(self, view: memoryview) -> int:
        if not self._left:
            size = self._next_chunk_size()
            if size == 0:
                self._read_trailer()
                self._finish()
                return 0
            self._left = size
        assert self._left is not None
        n = self._read(view, self._left)
        if not n:
            raise APIConnectionError(
                "Connection broken while reading the body: it ended inside a chunk",
                self.request,
                cause="broken",
            )
        self._left -= n
        if not self._left and self._readline() not in (b"\r\n", b"\n"):
            raise APIConnectionError(
                "Connection broken: a chunk is not followed by CRLF", self.request, cause="broken"
            )
        return n

    def _readline(self) -> bytes:
        self._small = True  # the line's read may have buffered what follows it
        line: bytes = self._file.readline(_MAX_LINE)
        return line

    def _next_chunk_size(self) -> int:
        line = self._readline()
        if not line:
            raise APIConnectionError(
                "Connection broken while reading the body: it ended before its last chunk",
                self.request,
                cause="broken",
            )
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise APIConnectionError(
                f"Connection broken: invalid chunk size line {line[:40]!r}", self.request, cause="broken"
            ) from None

    def _read_trailer(self) -> None:
        while True:
            line = self._readline()
            if line in (b"\r\n", b"\n", b""):
                return

    def _readinto_decoded(self, view: memoryview) -> int:
        data = self.raw.read1(len(view), decode_content=True)
        if not data:
            self.complete = True
            return 0
        n = len(data)
        view[:n] = data
        return n

    def _finish(self) -> None:
        self.complete = True
        if self._response is not None:
            self._response.close()  # the socket's file only: the connection stays open for reuse

    def abort(self) -> None:
        """Shut the socket of an open body down, from any thread: a read blocked on it in another
        thread fails at once (the body is then incomplete, so its connection is never reused).
        The caller keeps ``close`` from running at the same time (a body read to its end goes
        back to the pool: another request may be using its socket once it is closed)."""
        sock = getattr(getattr(self.raw, "connection", None), "sock", None)
        if sock is None or self.closed or self.complete:  # complete: no read to break, a socket to keep
            return
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's: a read may be in its TLS
        except OSError:
            pass

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read to its end, else closed."""
        if self.closed:
            return
        self.closed = True
        _watchdog.disarm(self.raw.connection)
        if self.complete:
            self.raw.release_conn()
        else:
            self.raw.close()
            self.raw.release_conn()
