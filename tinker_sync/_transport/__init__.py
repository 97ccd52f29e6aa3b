"""The one package that imports urllib3: ``Transport`` (pools, proxies, TLS, sending) and what it hands up.

Rules:
1. Every urllib3 or socket error is mapped in this package, once, to the
   most specific tinker_sync exception (``_errors``); nothing above it sees
   a urllib3 exception.
2. Bodies are never preloaded (``preload_content=False``) and redirects are
   never followed here: the client decides, so that credentials never cross
   origins. A body is read by ``Body`` (``_body``) into the caller's buffers.
3. A deadline (``Timeout.total``) covers connecting, the response head and
   the body: ``send`` caps each wait to the time left (``Timeout.within``)
   and hands the deadline to the pool on the urllib3 timeout, whose watchdog
   cuts the socket when it passes (``_pools``).
4. Through a proxy, https:// URLs go through a ``CONNECT`` tunnel and http://
   URLs in absolute form (or tunnelled too, with ``proxy_tunnel``) (``_pools``).
   One pool manager per proxy URL; the proxy for each request is chosen by
   ``_config.ProxyRules``. A proxy's 407 to a forwarded request is the
   proxy's refusal, raised as such, never a status of the API.
5. No ``ssl.SSLContext`` until an ``https://`` connection needs one; then the
   one of the client's trust setting, shared by every client of the process
   (``_tls.shared_context``); certificate errors become one line naming the host.
6. A forked child never shares a connection with its parent: an at-fork handler
   gives every transport (direct, proxied, TLS) fresh pools and TLS contexts in
   the child, and a pid check where the pools are used catches a fork that ran
   no handler. No lock a parent's thread may have held at the fork is taken.

The rooms, along urllib3's own lines: ``_request`` (what is sent, URL and
header checks), ``_errors`` (error mapping), ``_tls`` (the TLS context),
``_pools`` (pool managers, connections, tunnels, the watchdog), ``_body``
(the body reader), and here the ``Transport`` that holds them together.
"""

from __future__ import annotations

# urllib3 encodes every host with the "idna" codec, whose module Python imports on first use: a
# thread doing that at a fork leaves the module's import lock held for ever in the child (Python
# resets only the global import lock), and the child's first connection waits on it. Imported now.
import encodings.idna  # noqa: F401
import os
import ssl
import threading
import time
import warnings
import weakref
from typing import Any

from urllib3.util.request import ACCEPT_ENCODING

from .._config import TLS, CALocations, ProxyRules, Timeout, Verify
from .._exceptions import APIConnectionError, APITimeoutError, InsecureRequestWarning, InvalidRequestError
from .._observe import mask_url
from ._body import Body
from ._errors import CONNECTING, mapped_errors
from ._pools import DeadlineTimeout, PoolManager, Tunnel, make_tunnel, watchdog
from ._request import Headers, RawResponse, Request, check_request, check_url, origin_of
from ._tls import check_path, shared_context, ssl_context

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_POOL_MAXSIZE",
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

# Connections kept per host. Extra concurrent requests still get a connection
# (the pool does not block); only this many are kept alive afterwards.
DEFAULT_POOL_MAXSIZE = 32


# Every live transport, so that a forked child gives each fresh pools before it sends anything.
_transports: weakref.WeakSet[Transport] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    watchdog.reset()
    for transport in list(_transports):
        transport.forked()


os.register_at_fork(after_in_child=lambda: _after_fork_in_child())  # looked up at each fork: tests replace it


class Transport:
    """urllib3 pool managers, thread-safe, one transport per client: one for direct
    connections and one per proxy URL (made on first use), sharing one TLS context.

    Args:
        pool_maxsize: connections kept alive per host.
        proxies: which proxy each request goes through (``_config.proxy_rules``).
        proxy_tunnel: tunnel http:// URLs through the proxy too (``CONNECT``), instead of
            sending them to it in absolute form.
        verify: see ``ssl_context``; ca: the default trust's locations.
    """

    def __init__(
        self,
        *,
        pool_maxsize: int = DEFAULT_POOL_MAXSIZE,
        proxies: ProxyRules | None = None,
        proxy_tunnel: bool = False,
        verify: Verify = True,
        ca: CALocations | None = None,
    ) -> None:
        self.proxies = proxies or ProxyRules()
        self.proxy_tunnel = proxy_tunnel
        self.verify = verify
        self._ca = ca or CALocations(None, None)
        self._pool_maxsize = pool_maxsize
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._managers: dict[str | None, PoolManager] = {}
        # Direct URLs already sent: their manager, pool and request target (see ``_direct``).
        self._direct: dict[str, tuple[PoolManager, Any, str]] = {}
        self._pid = os.getpid()
        _transports.add(self)
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
        elif isinstance(verify, TLS) and verify.extra_ca is not None:
            check_path(os.fspath(verify.extra_ca), "TLS(extra_ca=...)")
        elif not isinstance(verify, (bool, ssl.SSLContext, TLS)):
            check_path(os.fspath(verify), "verify")

    def _tunnel(self, proxy: str, scheme: str) -> Tunnel:
        """The tunnel through ``proxy``, checked (see ``make_tunnel``)."""
        return make_tunnel(proxy, f"{self.proxies.source(scheme)}={mask_url(proxy)}", self._ssl_context)

    def _ssl_context(self) -> ssl.SSLContext:
        """The client's TLS context: built (or shared) on the first https:// connection."""
        context = self._context
        if context is None:
            context = self._context = shared_context(self.verify, self._ca)
        return context

    @property
    def pool_maxsize(self) -> int:
        """Connections kept alive per host."""
        return self._pool_maxsize

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through (credentials included: mask before showing), or None."""
        scheme, host, port = origin_of(url)
        return self.proxies.select(scheme, host, port)

    def forked(self) -> None:
        """Start afresh in a forked child: new pools, a new lock, a TLS context of the child's own.
        The parent's connections are left alone (neither used nor shut down: the parent may be
        reading from them right now); its lock, and its TLS context's locks in OpenSSL, which
        another of its threads may have held at the fork, are not taken. (A context given as
        ``verify=ssl.SSLContext`` is the caller's: it is used as given.)"""
        self._lock = threading.Lock()
        self._managers = {}
        self._direct = {}
        self._context = None
        self._pid = os.getpid()

    def _manager(self, url: str) -> tuple[PoolManager, str | None]:
        if self._pid != os.getpid():  # forked by a path that ran no at-fork handler (a C fork())
            self.forked()
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
        created = PoolManager(
            tunnel,
            self._ssl_context,
            tunnel_http=self.proxy_tunnel,
            maxsize=self._pool_maxsize,
            block=False,
            retries=False,
        )
        with self._lock:
            manager = self._managers.setdefault(proxy, created)
        if manager is not created:
            created.clear()
        return manager, proxy

    def _direct_pool(self, manager: PoolManager, url: str) -> tuple[Any, str]:
        """The pool serving a URL sent without a proxy, and the URL's request target.

        urllib3's ``PoolManager.urlopen`` parses the URL and looks its pool up on every
        request; the training engine sends the same two URLs thousands of times, so both are
        kept per URL (a few dozen URLs at most). A pool the manager has closed since (evicted,
        cleared) is looked up again.
        """
        kept = self._direct.get(url)
        if kept is not None and kept[0] is manager and kept[1].pool is not None:
            return kept[1], kept[2]
        pool = manager.connection_from_url(url)
        target = check_url(url).request_uri
        if len(self._direct) >= 64:
            self._direct.clear()
        self._direct[url] = (manager, pool, target)
        return pool, target

    def send(self, request: Request, timeout: Timeout, deadline: float | None = None) -> RawResponse:
        """Send ``request`` and return the response with its body unread.

        With a ``deadline``, connecting and waiting for the head each wait at
        most the time left, and the watchdog cuts the socket when it passes
        (``Body`` then raises APITimeoutError).
        """
        capped = timeout.within(deadline)
        manager, proxy = self._manager(request.url)
        with mapped_errors(request, CONNECTING, deadline, proxy):
            if proxy is None:  # what PoolManager.urlopen does for a direct URL, without its URL parse
                pool, target = self._direct_pool(manager, request.url)
                urlopen, extra = pool.urlopen, {"assert_same_host": False}
            else:
                urlopen, target, extra = manager.urlopen, request.url, {}
            raw: RawResponse = urlopen(
                request.method,
                target,
                body=request.body,
                headers=request.headers,
                redirect=False,
                retries=False,
                preload_content=False,
                timeout=DeadlineTimeout(capped.connect, capped.read, deadline),
                **extra,
            )
        if deadline is not None and time.monotonic() >= deadline:
            # The watchdog cut the socket while header lines trickled in: http.client takes
            # the end of the stream for the end of the head. Whatever arrived is no answer.
            watchdog.disarm(raw.connection)
            raw.close()
            raw.release_conn()
            raise APITimeoutError(
                "Request timed out while waiting for the response head: the total deadline passed",
                request,
                cause="deadline",
            )
        if raw.status == 407 and proxy is not None and not self.proxy_tunnel:
            scheme, host, port = origin_of(request.url)
            if scheme == "http":  # forwarded: the proxy answered, not the API (a tunnel's 407 raised)
                raw.close()
                raw.release_conn()
                raise APIConnectionError(
                    f"The proxy {mask_url(proxy)} refused to forward the request to {host}:{port}: "
                    f"407 {raw.reason or 'Proxy Authentication Required'} (check the proxy's user and password)",
                    request,
                    cause="proxy",
                )
        return raw

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
