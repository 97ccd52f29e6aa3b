"""Pools and proxies: urllib3's pool manager, pools and connections, tunnels, and the deadline watchdog.

Rules:
1. Through a proxy, as curl, requests and httpx do it: an ``https://`` URL
   goes through a ``CONNECT`` tunnel (the proxy sees ``CONNECT host:port`` and
   its own credentials, never a path, a header or a body); a plain ``http://``
   URL is sent to the proxy in absolute form (``GET http://host:port/path``,
   with ``Proxy-Authorization``), which the proxy reads and forwards: that is
   what ``http://`` means, and what a stock squid allows (it tunnels to port
   443 only). ``proxy_tunnel=True`` tunnels ``http://`` URLs too (curl's
   ``--proxytunnel``). ``make_tunnel`` checks a proxy URL once, when the
   client is built.
2. A deadline (``Timeout.total``) covers connecting, the response head and
   the body: the call's deadline rides down to the connection on the
   ``DeadlineTimeout`` urllib3 is given (no thread-local), the pool arms the
   watchdog as the request goes out, and the watchdog shuts the socket down
   when the deadline passes, so even a server trickling its headers a byte at
   a time is cut on time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection, ProxyConfig
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import LocationParseError
from urllib3.util import Url, make_headers, parse_url

from .._exceptions import InvalidRequestError
from .._observe import mask_url
from ._heads import RequestHeads
from ._tls import tls_pool_options

__all__ = ["DeadlineTimeout", "PoolManager", "Tunnel", "make_tunnel", "watchdog"]

log = logging.getLogger("tinker_sync")


class _Watchdog:
    """Shuts down the sockets of calls past their deadline. One thread, started on first use.

    A forked child starts with a watchdog of its own (``reset``): the parent's thread is not
    there, and the sockets it armed are the parent's, never to be shut down from the child.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._heap: list[tuple[float, int, HTTPConnection]] = []
        self._armed: dict[int, int] = {}  # id(conn) -> the entry's sequence number
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def arm(self, conn: HTTPConnection, deadline: float) -> None:
        if self._pid != os.getpid():  # forked by a path that ran no at-fork handler
            self.reset()
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


watchdog = _Watchdog()


class DeadlineTimeout(urllib3.Timeout):
    """urllib3's connect and read timeouts, carrying the call's deadline (``time.monotonic()``) down
    to the pool, which arms the watchdog with it as the request goes out."""

    def __init__(self, connect: float | None, read: float | None, deadline: float | None) -> None:
        super().__init__(connect=connect, read=read)
        self.connect_seconds, self.read_seconds, self.deadline = connect, read, deadline

    def clone(self) -> DeadlineTimeout:
        # urllib3 clones the timeout for each request: keep the deadline on the copy.
        return DeadlineTimeout(self.connect_seconds, self.read_seconds, self.deadline)


@dataclass(frozen=True)
class Tunnel:
    """Where a proxied connection connects, and what its ``CONNECT`` carries."""

    url: Url  # the proxy (credentials removed)
    headers: dict[str, str]  # Proxy-Authorization, when the proxy URL had credentials
    config: ProxyConfig | None  # TLS to an https:// proxy


class _ConnectionMixin:
    """Arms the watchdog as the request goes out, for calls with a deadline; tunnels through a proxy.

    With ``tunnel``, the socket goes to the proxy and ``CONNECT host:port``
    opens the tunnel (http.client's ``set_tunnel``, which urllib3's
    connections complete with TLS for https): the proxy never sees a request
    line or a header. urllib3 forgets the tunnel
    on ``close()``: it is set again, so that a reconnect tunnels too.
    """

    _target: tuple[str, int | None] | None = None
    _tunnel_via: Tunnel | None = None
    _released_sock: socket.socket | None = None

    def __init__(self, host: str, port: int | None = None, *, tunnel: Tunnel | None = None, **kw: Any):
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
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_ConnectionMixin, RequestHeads, HTTPConnection):
    pass


class _HTTPSConnection(_ConnectionMixin, RequestHeads, HTTPSConnection):
    pass


class _DeadlineMixin:
    """Arms the watchdog for a request with a deadline (its ``DeadlineTimeout``) as it goes out;
    disarms it when no response comes of it (a response's body disarms it when closed)."""

    def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(kwargs.get("timeout"), "deadline", None)
        if deadline is not None:
            watchdog.arm(conn, deadline)
        try:
            return super()._make_request(conn, method, url, *args, **kwargs)  # type: ignore[misc]
        except BaseException:
            watchdog.disarm(conn)
            raise


class _HTTPConnectionPool(_DeadlineMixin, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(_DeadlineMixin, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection
    verified = True  # False: verify=False, whose one warning the client gave already

    def _validate_conn(self, conn: Any) -> None:
        if self.verified:
            super()._validate_conn(conn)
        elif conn.is_closed:  # urllib3 would warn on every request: connect without it
            conn.connect()


class PoolManager(urllib3.PoolManager):
    """urllib3's PoolManager with our pools; with ``tunnel``, requests go through that proxy:
    https:// URLs through a ``CONNECT`` tunnel, http:// URLs in absolute form to the proxy (one
    pool of connections to the proxy for every http:// host), or tunnelled too with ``tunnel_http``.

    ``context`` gives the TLS context, called for the first https:// pool
    only: a manager that only ever talks plain HTTP builds none.
    """

    def __init__(
        self,
        tunnel: Tunnel | None,
        context: Callable[[], ssl.SSLContext],
        *,
        tunnel_http: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
        self._tunnel = tunnel
        self._context = context
        # http:// URLs go to the proxy in absolute form (the proxy forwards them), unless tunnelled:
        # with ``proxy`` set, urllib3's PoolManager.urlopen sends those in absolute form.
        self._forward = tunnel if tunnel is not None and not tunnel_http else None
        if self._forward is not None:
            self.proxy, self.proxy_config = self._forward.url, self._forward.config

    def connection_from_host(
        self, host: str | None, port: int | None = None, scheme: str | None = "http", pool_kwargs: Any = None
    ) -> HTTPConnectionPool:
        """The pool for ``scheme://host:port``; for an http:// URL through a forwarding proxy, the one
        pool to the proxy, whose requests carry the proxy's credentials (``Proxy-Authorization``,
        which the proxy removes before forwarding) and whose failures to connect name the proxy."""
        forward = self._forward
        if forward is not None and scheme == "http":
            host, port = forward.url.host, forward.url.port
            proxied = {
                "_proxy": forward.url,
                "_proxy_headers": forward.headers,
                "_proxy_config": forward.config,
            }
            pool_kwargs = {**(pool_kwargs or {}), **proxied}
        return super().connection_from_host(host, port, scheme, pool_kwargs)

    def _new_pool(self, scheme: str, host: str, port: int, request_context: Any = None) -> HTTPConnectionPool:
        context = None
        if scheme == "https":
            context = self._context()
            request_context = {**(request_context or self.connection_pool_kw), **tls_pool_options(context)}
        pool = super()._new_pool(scheme, host, port, request_context)
        if self._forward is not None and scheme == "http":
            log.debug(
                "Sending http:// requests to proxy %s in absolute form", mask_url(self._forward.url.url)
            )
        elif self._tunnel is not None:
            pool.conn_kw["tunnel"] = self._tunnel
            log.debug(
                "Connecting to %s://%s:%s through proxy %s",
                scheme,
                host,
                port,
                mask_url(self._tunnel.url.url),
            )
        if isinstance(pool, _HTTPSConnectionPool) and context is not None:
            pool.verified = context.verify_mode != ssl.CERT_NONE
        return pool

    def clear(self) -> None:
        """Forget every pool and close its idle connections now.

        urllib3 2's ``clear()`` only forgets the pools (each closes when it is
        garbage collected): one still referenced, by a response an error's
        traceback holds say, would keep its idle sockets open after ``Client.close()``.
        """
        pools = [self.pools.get(key) for key in self.pools.keys()]
        super().clear()
        for pool in pools:
            if pool is not None:
                pool.close()


def make_tunnel(proxy: str, named: str, context: Callable[[], ssl.SSLContext]) -> Tunnel:
    """The tunnel through ``proxy`` (checked: http or https, a host, no path); ``named``: how errors
    name it (its source and masked URL); ``context``: the client's TLS context, for an https:// proxy."""
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
        config = ProxyConfig(context(), False, None, None)
    return Tunnel(bare, headers, config)
