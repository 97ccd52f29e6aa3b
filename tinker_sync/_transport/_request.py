"""What a request is, before it goes out: ``Request``, the header mapping, URL and header checks.

Rules:
1. A URL is parsed by urllib3's own parser (the one that connects), and only
   an unambiguous absolute http(s) URL passes: the origin check and the
   connection then read the same parts.
2. A method, a header name or a header value that would split or corrupt the
   request on the wire is refused here, before anything is sent; values never
   appear in the message (they may be secrets).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import urllib3
from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

from .._exceptions import InvalidRequestError
from .._observe import mask_url, shown_url

__all__ = ["DEFAULT_PORTS", "Headers", "RawResponse", "Request", "check_request", "check_url", "origin_of"]

# Case-insensitive, multi-valued header mapping (re-exported so that no module outside the
# transport imports urllib3).
Headers = urllib3.HTTPHeaderDict
RawResponse = urllib3.BaseHTTPResponse

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class Request:
    """What was (or will be) sent: kept on responses, errors and hook records.

    ``headers``: a ``Headers`` (case-insensitive); the training engine's hot path gives a plain
    dict of distinct names (no case-insensitive copy per request: urllib3 copies it once more).
    """

    method: str
    url: str
    headers: Headers | dict[str, str] = field(default_factory=Headers)
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
        # urllib3 may quote the whole URL (a signature in it too), or a piece of a password
        # holding a "/": say why without it
        detail = str(exc)
        if url in detail or len(detail) > 200 or "@" in url:
            detail = "Failed to parse: a host or port that is not valid"
        raise InvalidRequestError(f"Invalid URL {shown}: {detail}") from None
    if (parts.scheme or "").lower() not in DEFAULT_PORTS:
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
    port filled in, a trailing dot dropped (``host.`` is ``host``).

    Every request asks it (to pick its proxy and pool), and a client sends the same few URLs
    thousands of times (the training engine's polls): a valid ``str`` URL's answer is kept
    (a pure function of the string; a URL refused is checked again each time)."""
    if type(url) is str:
        return _origin(url)
    return _origin.__wrapped__(url)


@functools.lru_cache(maxsize=256)
def _origin(url: str) -> tuple[str, str, int]:
    parts = check_url(url)
    scheme = (parts.scheme or "").lower()
    host = (parts.host or "").lower().removesuffix(".")
    return scheme, host, parts.port or DEFAULT_PORTS[scheme]


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
