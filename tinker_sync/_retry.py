"""Retry policy: which failures to retry, and how long to wait. Pure, no I/O.

Rules (the official SDK's): retry connection errors, timeouts and the statuses
408, 409, 429 and >= 500; an ``x-should-retry: true|false`` header overrides
the status rule. Wait ``retry-after-ms`` / ``retry-after`` (seconds or an
HTTP-date) when it lies in (0, 60] seconds, else ``min(0.5 * 2**n, 10)``
shortened by up to 25% of jitter (jitter only ever shortens).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping

__all__ = ["INITIAL_RETRY_DELAY", "MAX_RETRY_DELAY", "retry_delay", "should_retry_status"]

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 10.0
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({408, 409, 429})


def should_retry_status(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a response with this status (and headers) is worth another attempt."""
    override = headers.get("x-should-retry")
    if override == "true":
        return True
    if override == "false":
        return False
    return status in RETRY_STATUSES or status >= 500


def _retry_after(headers: Mapping[str, str], now: Callable[[], float]) -> float | None:
    """The server's requested wait in seconds, if it sent a usable one."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return email.utils.mktime_tz(parsed) - now()


def retry_delay(
    retries_taken: int,
    headers: Mapping[str, str] | None = None,
    *,
    rand: Callable[[], float] = random.random,
    now: Callable[[], float] = time.time,
) -> float:
    """Seconds to wait before retry number ``retries_taken + 1``.

    Args:
        retries_taken: retries already made for this request (0 before the first retry).
        headers: the failed response's headers, if there was a response.
        rand, now: injectable for tests.
    """
    if headers is not None:
        wanted = _retry_after(headers, now)
        if wanted is not None and 0 < wanted <= MAX_RETRY_AFTER:
            return wanted
    delay = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries_taken, 1000), MAX_RETRY_DELAY)
    return max(delay * (1 - 0.25 * rand()), 0.0)
