"""Observability: hook records, hook dispatch, logging setup and masked request dumps.

Rules:
1. Hooks see one ``request``, one ``response`` (or ``error``) and one
   ``stream_end`` per logical request, plus one ``retry`` per retry, for
   plain and streaming calls alike.
2. A hook that raises is logged and ignored: it never breaks a request.
3. Dumps and logs never show a secret: API keys, authorization, Cloudflare
   secrets, cookies, signed-URL signatures and proxy passwords are masked.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

from ._exceptions import mask_credentials

__all__ = [
    "HOOK_NAMES",
    "ErrorInfo",
    "EventHooks",
    "RequestInfo",
    "ResponseInfo",
    "RetryInfo",
    "StreamEndInfo",
    "dump",
    "emit",
    "MaskCredentials",
    "mask_headers",
    "mask_url",
    "redact",
    "setup_logging",
    "shown_url",
]

log = logging.getLogger("tinker_sync")

HOOK_NAMES = ("request", "response", "retry", "stream_end", "error")
SECRET_HEADERS = frozenset(
    {
        "x-api-key",
        "authorization",
        "proxy-authorization",
        "cf-access-client-secret",
        "cookie",
        "set-cookie",
        "x-tinker-weights-access-token",
    }
)
# Query parameters that carry a signature or credential in signed URLs
# (our own, S3's X-Amz-*, GCS's X-Goog-*, Azure's sig).
_SECRET_QUERY = re.compile(r"(sig|signature|token|credential|key|x-amz-security-token)", re.IGNORECASE)
MASK = "***"


@dataclass(frozen=True)
class RequestInfo:
    """Hook ``request``: a logical request is about to be sent (once, before its first attempt)."""

    method: str
    url: str


@dataclass(frozen=True)
class ResponseInfo:
    """Hook ``response``: the final response's status and headers arrived."""

    method: str
    url: str
    status_code: int
    attempts: int
    elapsed: float


@dataclass(frozen=True)
class RetryInfo:
    """Hook ``retry``: attempt number ``attempt`` failed and will be retried after ``wait`` seconds.

    ``failures``: the failures in a row since the last progress (this one included), of the
    ``max_retries`` the call may spend before giving up (progress renews them).
    """

    method: str
    url: str
    attempt: int
    reason: str
    wait: float
    failures: int = 1
    max_retries: int = 0


@dataclass(frozen=True)
class StreamEndInfo:
    """Hook ``stream_end``: the body was read to its end, closed early or failed."""

    method: str
    url: str
    status_code: int
    attempts: int
    bytes: int
    events: int
    duration: float
    error: str | None = None


@dataclass(frozen=True)
class ErrorInfo:
    """Hook ``error``: the logical request failed for good."""

    method: str
    url: str
    attempts: int
    error: BaseException


class EventHooks(TypedDict, total=False):
    """``event_hooks``: for each hook name, the callables that receive its records."""

    request: Sequence[Callable[[RequestInfo], object]]
    response: Sequence[Callable[[ResponseInfo], object]]
    retry: Sequence[Callable[[RetryInfo], object]]
    stream_end: Sequence[Callable[[StreamEndInfo], object]]
    error: Sequence[Callable[[ErrorInfo], object]]


def check_hooks(
    event_hooks: EventHooks | Mapping[str, Sequence[Callable[[Any], object]]] | None,
) -> dict[str, list[Callable[[Any], object]]]:
    """Validate ``event_hooks`` (a name that is no hook raises ValueError) and copy it into lists."""
    hooks: dict[str, list[Callable[[Any], object]]] = {name: [] for name in HOOK_NAMES}
    given: Mapping[str, Sequence[Callable[[Any], object]]] = event_hooks or {}  # type: ignore[assignment]  # to mypy a TypedDict is only a Mapping[str, object]
    for name, funcs in given.items():
        if name not in hooks:
            raise ValueError(f"Unknown event hook {name!r}; expected one of {', '.join(HOOK_NAMES)}")
        hooks[name].extend(funcs)
    return hooks


def emit(hooks: Mapping[str, Iterable[Callable[[Any], object]]], name: str, record: object) -> None:
    """Call every hook registered for ``name``; a hook that raises is logged, never propagated."""
    for hook in hooks.get(name, ()):
        try:
            hook(record)
        except Exception:
            log.exception("tinker_sync %s hook %r raised; ignored", name, hook)


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with every secret value replaced by ``***``."""
    return {k: (MASK if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def mask_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***``: signature-like query values and everything
    between ``scheme://`` and the last ``@`` but a user name (``mask_credentials``: a proxy's
    password may hold an unencoded ``/ # ? @ :``); a URL that does not parse loses its whole query."""
    url = mask_credentials(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        base, sep, _ = url.partition("?")
        return base + (f"?{MASK}" if sep else "")
    if not parts.query:
        return url
    query = [
        (k, MASK if _SECRET_QUERY.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


class MaskCredentials(logging.Filter):
    """A filter for the ``tinker_sync`` logger: no log line shows a URL's credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


log.addFilter(MaskCredentials())  # once, when the package first logs through this module


def shown_url(url: str, limit: int = 300) -> str:
    """``url`` masked (``mask_url``) and cut to ``limit`` characters, for a message: a URL a server
    sent (a redirect's Location) can be as long as a header, and messages stay small."""
    masked = mask_url(url)
    return masked if len(masked) <= limit else f"{masked[:limit]}... ({len(masked)} characters)"


def redact(text: str, headers: Mapping[str, str] | None = None, url: str | None = None) -> str:
    """``text`` with a request's secrets replaced by ``***``: the values of its secret headers (the
    API key, authorization, Cloudflare secret, cookies) and its URL's signature-like query values.

    For messages that quote what a server sent back: an echoing server must not put a secret
    into an exception, a log line or a hook record.
    """
    secrets = {v for k, v in (headers or {}).items() if k.lower() in SECRET_HEADERS}
    if url and "?" in url:
        # Each value as it travelled (percent-encoded: what a server echoes back) and decoded.
        for pair in url.split("?", 1)[1].split("#", 1)[0].split("&"):
            name, _, raw = pair.partition("=")
            if _SECRET_QUERY.search(unquote_plus(name)):
                secrets |= {raw, unquote(raw), unquote_plus(raw)}
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def dump(direction: str, first_line: str, headers: Mapping[str, str]) -> None:
    """Log a request or response head at INFO, secrets masked."""
    lines = "".join(f"\n    {k}: {v}" for k, v in mask_headers(headers).items())
    log.info("%s %s%s", direction, first_line, lines)


def setup_logging() -> None:
    """Honour ``TINKER_LOG=debug|info`` (as the SDK does) by adding a stderr handler once."""
    level = os.environ.get("TINKER_LOG", "").lower()
    if level not in ("debug", "info") or getattr(setup_logging, "_done", False):
        return
    setup_logging._done = True  # type: ignore[attr-defined]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s - %(name)s:%(lineno)d - %(levelname)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
