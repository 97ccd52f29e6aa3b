"""Redirects, followed by hand: which may be followed, and the request of the next hop.

Rules:
1. Only http(s) URLs that parse unambiguously, and never from https down to
   plain http (a signed URL, and anything sent with it, would travel in the clear).
2. Each hop is a new request built for its own origin (``RequestOptions``
   with the hop's URL): the API key never crosses to another origin, nor
   does any header the caller gave (``extra_headers``, ``headers=``: they were
   meant for the origin named, a cookie or a token as much as the key). Only
   the transfer's own headers (``TRANSFER_HEADERS``) go on.
3. 303 (and 301/302 answering a POST) turn the next hop into a GET without a body.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin

from ._exceptions import APIConnectionError, InvalidRequestError
from ._observe import mask_url, shown_url
from ._options import RequestOptions
from ._transport import Request, origin_of

__all__ = ["MAX_REDIRECTS", "REDIRECT_STATUSES", "TRANSFER_HEADERS", "check_redirect", "next_hop"]

log = logging.getLogger("tinker_sync")

MAX_REDIRECTS = 10
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# What a hop to another origin keeps of the call's headers: how the bytes are asked for (lower case).
TRANSFER_HEADERS = frozenset({"accept-encoding", "range", "if-range"})


def next_hop(options: RequestOptions, request: Request, status: int, location: str | None) -> RequestOptions:
    """The options of the hop a ``status`` redirect to ``location`` leads to, from ``request`` (sent
    with ``options``).

    Raises:
        APIConnectionError: no Location, or a redirect that may not be followed (``check_redirect``).
    """
    if not location:
        raise APIConnectionError(
            f"Redirect {status} without a Location from {mask_url(request.url)}", request, cause="redirect"
        )
    try:
        target = urljoin(request.url, location.strip())
    except ValueError:
        target = location  # refused just below, as a URL that does not parse
    check_redirect(request.url, target, request)
    log.info("Following redirect %d from %s to %s", status, mask_url(request.url), mask_url(target))
    # the hop: its own URL (its own query), a GET after a 303 (and a 301/302 to a POST)
    hop = options.replace(url=target, params=None)
    if options.headers and origin_of(target) != origin_of(request.url):
        kept = {name: value for name, value in options.headers.items() if name.lower() in TRANSFER_HEADERS}
        hop = hop.replace(headers=kept)
    if status == 303 or (status in (301, 302) and request.method == "POST"):
        hop = hop.replace(method="GET", json=None, content=None)
    return hop


def _why(target: str) -> str | None:
    """What is wrong with a redirect's http(s) target, in the user's terms (None: not http(s))."""
    scheme, sep, rest = target.partition("://")
    if "\\" in target:
        return "its target holds a backslash, which parsers read differently"
    if sep and "@" in rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]:
        return "its target holds credentials (user@host), which are never followed"
    return None


def check_redirect(source: str, target: str, request: Request | None = None) -> None:
    """Raise APIConnectionError (never retried) unless a redirect to ``target`` may be followed.

    Only http(s) URLs that parse unambiguously, and never from https down to
    plain http (the signed URL, and anything sent with it, would travel in the clear).
    """
    try:
        old, new = origin_of(source)[0], origin_of(target)[0]
    except InvalidRequestError as exc:
        why = _why(target)
        message = (
            f"Refusing redirect to {shown_url(target)}: {why}"
            if why is not None
            else f"Refusing redirect to a non-HTTP URL: {shown_url(target)} ({exc})"
        )
        raise APIConnectionError(message, request, cause="redirect") from None
    if old == "https" and new == "http":
        raise APIConnectionError(
            f"Refusing redirect from https to plain http: {shown_url(source)} -> {shown_url(target)}",
            request,
            cause="redirect",
        )
