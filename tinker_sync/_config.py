"""Configuration: environment variables, base URL, API-key check, timeouts.

Rule: everything a user can set by environment is read here, once, when a
``Client`` is built; nothing else in the package reads ``os.environ`` for
client settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "ArchiveLimits",
    "DEFAULT_BASE_URL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_READ_TIMEOUT",
    "Timeout",
    "cloudflare_headers",
    "dump_headers_default",
    "resolve_api_key",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 10
API_KEY_PREFIXES = ("tml-", "eyJ")


@dataclass(frozen=True)
class Timeout:
    """Timeouts in seconds.

    Args:
        connect: to open the TCP (and TLS) connection.
        read: the longest wait for the next bytes; applied between chunks, so
            a stream that keeps sending is never cut by it.
        total: an overall deadline for the whole call, body included (for a
            stream: until its body ends), or None.
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT
    read: float | None = DEFAULT_READ_TIMEOUT
    total: float | None = None

    @classmethod
    def coerce(cls, value: float | Timeout | None) -> Timeout:
        """A Timeout from a float (read timeout; connect at most 5 s, as in the SDK), a Timeout or None (none)."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(connect=None, read=None)
        value = float(value)
        return cls(connect=min(DEFAULT_CONNECT_TIMEOUT, value), read=value)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what extracting one checkpoint archive may create (``Client(archive_limits=...)``).

    A checkpoint holds a handful of files; these bounds stop a hostile or
    broken archive early, in seconds and bounded memory, before it fills a
    disk or an inode table.

    Args:
        max_members: most members (files and directories). 10,000 leaves room
            for sharded, per-tensor layouts; a million-member archive is
            refused after 10,000, within a second or two.
        max_total_size: most bytes of file data; None means the checkpoint's
            ``size_bytes`` when the API lists it (or, for a plain tar, the
            archive's own size).
        max_name_length: the longest member name, in encoded bytes.
    """

    max_members: int = 10_000
    max_total_size: int | None = None
    max_name_length: int = 4096


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


def resolve_api_key(api_key: str | None) -> str:
    """The API key from the argument or ``TINKER_API_KEY``, checked for its format.

    Raises:
        TinkerError: no key, or one that does not start with ``tml-`` (or ``eyJ``, a JWT).
    """
    from ._exceptions import TinkerError

    key = api_key or _env("TINKER_API_KEY")
    if not key:
        raise TinkerError(
            "No API key: pass Client(api_key=...) or set the TINKER_API_KEY environment variable."
        )
    if not key.startswith(API_KEY_PREFIXES):
        raise TinkerError(
            f"Invalid API key: Tinker keys start with 'tml-' (or 'eyJ' for a JWT); got {key[:4]!r}..."
        )
    if not key.isprintable() or any(c.isspace() for c in key):
        # e.g. a trailing newline pasted into the variable: no header may carry it
        raise TinkerError("Invalid API key: it contains whitespace or control characters")
    return key


def resolve_base_url(base_url: str | None) -> str:
    """The base URL from the argument, ``TINKER_BASE_URL`` or the default, without a trailing '/'."""
    url = base_url or _env("TINKER_BASE_URL") or DEFAULT_BASE_URL
    return url.rstrip("/")


def dump_headers_default() -> bool:
    """``TINKER_SYNC_DUMP_HEADERS``: anything but empty, ``0`` or ``false`` turns header dumps on."""
    return os.environ.get("TINKER_SYNC_DUMP_HEADERS", "").strip().lower() not in ("", "0", "false")


def cloudflare_headers() -> dict[str, str]:
    """Optional Cloudflare Access headers from ``CLOUDFLARE_ACCESS_CLIENT_ID`` / ``_SECRET``."""
    headers = {}
    client_id = _env("CLOUDFLARE_ACCESS_CLIENT_ID")
    secret = _env("CLOUDFLARE_ACCESS_CLIENT_SECRET")
    if client_id:
        headers["CF-Access-Client-Id"] = client_id
    if secret:
        headers["CF-Access-Client-Secret"] = secret
    return headers
