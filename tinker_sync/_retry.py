"""Retry policy: which failures to retry, how long to wait, and the one retry budget. Pure, no I/O.

Rules (the official SDK's): retry connection errors, timeouts and the statuses
408, 409, 429 and >= 500; an ``x-should-retry: true|false`` header overrides
the status rule. Wait ``retry-after-ms`` / ``retry-after`` (seconds or an
HTTP-date) when it lies in (0, 60] seconds, else ``min(0.5 * 2**n, 10)``
shortened by up to 25% of jitter (jitter only ever shortens).

One ``RetryBudget`` per logical call is shared by every kind of recovery
(plain retries, byte resume, SSE reconnect, re-signing a URL, each file of a
checkpoint): there is never a budget inside a budget. See its docstring for
the bound on sends.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypedDict, Unpack

__all__ = [
    "DNS_RETRIES",
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_DELAY",
    "NEVER_RETRIED",
    "RetryBudget",
    "RetryHints",
    "retry_delay",
    "should_retry_status",
]


class RetryHints(TypedDict, total=False):
    """What a failure tells ``RetryBudget.retry`` besides that it happened; every ``backoff`` on
    the way (the client's, a URL signer's, a ranged download's) passes them on.

    cause: what failed, as ``APIConnectionError.cause`` says (None for a status).
    headers: the failed response's headers (Retry-After).
    progress: how far the call (or its ``stream``) had got (bytes or events delivered).
    min_wait: the least wait (an SSE stream's reconnection time).
    stream: which of the call's streams failed, when it has several at once.
    """

    cause: str | None
    headers: Mapping[str, str] | None
    progress: int | None
    min_wait: float
    stream: Hashable


INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 10.0
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({408, 409, 429})
# Failures no retry can mend: a certificate the client does not trust, a URL it
# cannot parse, a redirect it refuses, a proxy refusing the tunnel (its 403 or
# 407: wrong credentials, a forbidden host). They raise at once.
NEVER_RETRIED = frozenset({"tls", "url", "redirect", "proxy"})
# Resolvers do fail transiently, but a name that does not resolve twice in a
# row is almost always a typo: retry briefly, never for a silent minute.
DNS_RETRIES = 2


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


class RetryBudget:
    """What one logical call may still spend on recovery, and when it must give up.

    Rules:
    1. At most ``max_retries`` failures in a row without progress; the waits
       between them follow ``retry_delay`` (the server's Retry-After first).
    2. Progress renews the budget: a failure reported with a ``progress``
       mark (bytes or events delivered) past the mark of the failure before
       it starts the count and the backoff again from the bottom, and its
       retry goes at once (a cut after data is a transient, not an outage).
       A call made of several streams at once (a download over several
       connections) names the ``stream`` that failed: each stream's progress
       is measured against its own last failure, so a blip that cuts every
       connection after data resumes them all at once.
    3. ``deadline`` (``time.monotonic()``, from ``Timeout.total``): no retry
       whose wait would end past it.
    4. A cause in ``NEVER_RETRIED`` is never retried; ``"dns"`` at most
       ``DNS_RETRIES`` times in the whole call.

    Worst case: a call makes at most ``max_retries + 1`` sends between two
    points of progress, so at most ``(max_retries + 1) * (1 + renewals)``
    sends in all, each renewal needing new bytes or events; ``Timeout.total``
    bounds the time.

    Thread-safe: the connections of one download over several connections
    spend one budget (their failures count together).

    Attributes:
        attempts: sends made so far (the caller counts each with ``sent()``).
        retries: retries granted so far (sent as ``x-stainless-retry-count``).
        failures: failures since the last progress.
    """

    def __init__(
        self,
        max_retries: int,
        *,
        deadline: float | None = None,
        rand: Callable[[], float] = random.random,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_retries = max_retries
        self.deadline = deadline
        self.attempts = 0
        self.retries = 0
        self.failures = 0
        self._marks: dict[Hashable, int] = {}
        self._step = 0  # backoff steps taken since the last progress
        self._dns = 0
        self._rand = rand
        self._now = now
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RetryBudget {self.failures}/{self.max_retries} failures, {self.attempts} sends>"

    def sent(self) -> int:
        """Count one send; returns the retry count to put on it."""
        with self._lock:
            self.attempts += 1
            return self.retries

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._now())

    def retry(self, **hints: Unpack[RetryHints]) -> float | None:
        """Count one failure; the seconds to wait before the next send, or None to give up.

        ``hints``: see ``RetryHints`` (each may be left out).
        """
        with self._lock:
            return self._retry(
                hints.get("cause"),
                hints.get("headers"),
                hints.get("progress"),
                hints.get("min_wait", 0.0),
                hints.get("stream"),
            )

    def _retry(
        self,
        cause: str | None,
        headers: Mapping[str, str] | None,
        progress: int | None,
        min_wait: float,
        stream: Hashable,
    ) -> float | None:
        if cause in NEVER_RETRIED:
            return None
        if cause == "dns":
            if self._dns >= DNS_RETRIES:
                return None
            self._dns += 1
        advanced = False
        if progress is not None and progress > self._marks.get(stream, 0):
            self._marks[stream], self.failures, self._step, advanced = progress, 0, 0, True
        if self.failures >= self.max_retries:
            return None
        backoff = not (advanced and headers is None)
        wait = max(retry_delay(self._step, headers, rand=self._rand) if backoff else 0.0, min_wait)
        if self.deadline is not None and self._now() + wait >= self.deadline:
            return None
        self._step += backoff
        self.failures += 1
        self.retries += 1
        return wait
