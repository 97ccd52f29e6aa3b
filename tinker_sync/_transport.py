"""The one module that imports urllib3: the pool, sending, reading, error mapping.

Rules:
1. Every urllib3 or socket error is mapped here, once, to the most specific
   tinker_sync exception (``raise ... from``); nothing above this module sees
   a urllib3 exception.
2. Bodies are never preloaded (``preload_content=False``) and redirects are
   never followed here: the client decides, so that credentials never cross
   origins.
3. A connection whose body was not read to its end is closed before its pool
   slot is given back: a half-read connection is never reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from ._config import Timeout
from ._exceptions import APIConnectionError, APITimeoutError

__all__ = ["Headers", "RawResponse", "Request", "Transport", "mapped_errors", "origin_of"]

# Case-insensitive, multi-valued header mapping (re-exported so that no other
# module imports urllib3).
Headers = urllib3.HTTPHeaderDict
RawResponse = urllib3.BaseHTTPResponse

# Connections kept per host. Extra concurrent requests still get a connection
# (the pool does not block); only this many are kept alive afterwards.
DEFAULT_POOL_MAXSIZE = 32
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class Request:
    """What was (or will be) sent: kept on responses, errors and hook records."""

    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    body: bytes | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"Invalid port in URL {url!r}") from exc
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


@contextmanager
def mapped_errors(request: Request | None, during: str = "") -> Iterator[None]:
    """Map urllib3, socket and http.client errors to APIConnectionError / APITimeoutError."""
    where = f" {during}" if during else ""
    try:
        yield
    except NewConnectionError as exc:  # first: urllib3 makes it a ConnectTimeoutError subclass
        raise APIConnectionError(f"Connection failed{where}: {exc}", request) from exc
    except (TimeoutError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise APITimeoutError(f"Request timed out{where}: {exc}", request) from exc
    except ProtocolError as exc:
        raise APIConnectionError(f"Connection broken{where}: {exc}", request) from exc
    except LocationParseError as exc:
        raise APIConnectionError(f"Invalid URL: {exc}", request) from exc
    except (HTTPError, OSError) as exc:
        raise APIConnectionError(f"Connection error{where}: {exc}", request) from exc


class Transport:
    """A urllib3 PoolManager: thread-safe, one per client."""

    def __init__(self, *, pool_maxsize: int = DEFAULT_POOL_MAXSIZE) -> None:
        self._pool = urllib3.PoolManager(maxsize=pool_maxsize, block=False, retries=False)

    def send(self, request: Request, timeout: Timeout) -> urllib3.BaseHTTPResponse:
        """Send ``request`` and return the response with its body unread."""
        read = timeout.read
        if timeout.total is not None:
            read = timeout.total if read is None else min(read, timeout.total)
        with mapped_errors(request, "while connecting"):
            return self._pool.urlopen(
                request.method,
                request.url,
                body=request.body,
                headers=request.headers,
                redirect=False,
                retries=False,
                preload_content=False,
                timeout=urllib3.Timeout(connect=timeout.connect, read=read),
            )

    def pool_stats(self, url: str) -> dict[str, Any]:
        """Open and idle connection counts of the pool serving ``url`` (for tests and debugging)."""
        pool = self._pool.connection_from_url(url)
        # The pool's queue is padded with None placeholders: count real connections only.
        idle = sum(conn is not None for conn in list(pool.pool.queue)) if pool.pool else 0
        return {"num_connections": pool.num_connections, "idle": idle}

    def close(self) -> None:
        self._pool.clear()


def read_chunk(raw: urllib3.BaseHTTPResponse, amt: int, request: Request | None) -> bytes:
    """Up to ``amt`` bytes, as soon as any have arrived; b"" at the end of the body.

    A body shorter than its Content-Length, or a broken chunked encoding,
    raises APIConnectionError (never a quiet b"").
    """
    with mapped_errors(request, "while reading the body"):
        return raw.read1(amt, decode_content="content-encoding" in raw.headers)


def discard(raw: urllib3.BaseHTTPResponse) -> None:
    """Close the connection under an unfinished body, then free its pool slot."""
    raw.close()
    raw.release_conn()
