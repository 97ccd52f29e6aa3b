"""``client.futures``: wait for the result of an asynchronous API call (a future).

``POST /retrieve_future`` answers the result, ``{"type": "try_again",
"queue_state"}`` (not yet), or ``{"error", "category"}`` (failed for good).

Rules:
1. One deadline over everything (``timeout``; by default the client's
   ``Timeout.total``, else ``DEFAULT_FUTURE_TIMEOUT``): when it passes,
   ``APITimeoutError`` names the request id and how long it waited. A
   result that arrives is never dropped, whatever the time.
2. Waiting is not failing: a ``try_again`` is waited out with
   ``client._wait`` (short polls, growing to ``MAX_POLL_INTERVAL``), a 408
   (the server's long poll ran out) and a first 5xx are polled again at
   once. Failures spend the call's one retry budget: 429 and connection
   errors back off (Retry-After first), and 5xx in a row back off too, so a
   server that keeps failing is given up on.
3. The queue state is logged (INFO) when it changes, and given to
   ``on_queue_state`` if the caller passed one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, Unpack

import msgspec

from .._base_client import BaseClient
from .._config import Timeout
from .._decode import decode_json
from .._exceptions import APIConnectionError, APIStatusError, APITimeoutError, RequestFailedError
from .._options import BodyOverrides, RequestOptions, Timeoutish
from .._response import StreamedResponse
from .._retry import NEVER_RETRIED, RetryBudget
from ._resource import M, Raw, Streamed, SyncAPIResource, endpoint, json_parser, view
from .types import FutureHandle

__all__ = [
    "DEFAULT_FUTURE_TIMEOUT",
    "Futures",
    "QueueStateCallback",
    "future_timeout",
    "poll",
    "submit",
]

log = logging.getLogger("tinker_sync")

T = TypeVar("T")
QueueStateCallback = Callable[[str], None]

RETRIEVE_PATH = "/api/v1/retrieve_future"
# How long a future may take when neither the call nor the client says: long enough for a
# queue paused for capacity to move on, short enough that a stuck script notices.
DEFAULT_FUTURE_TIMEOUT = 600.0
# Waits between try_again answers: from POLL_INTERVAL, doubling up to MAX_POLL_INTERVAL.
POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 2.0


class _Answer(msgspec.Struct):
    """What tells a result from a try_again or a failure (any other field is the result's)."""

    type: str | None = None
    queue_state: str | None = None
    error: Any = None
    category: str | None = None


class Futures(SyncAPIResource[M]):
    """``client.futures``."""

    with_raw_response: Futures[Raw] = view(Raw)
    with_streaming_response: Futures[Streamed] = view(Streamed)

    @endpoint
    def retrieve(
        self,
        request_id: str,
        *,
        cast_to: type[T],
        on_queue_state: QueueStateCallback | None = None,
        **overrides: Unpack[BodyOverrides],
    ) -> T:
        """Poll the future ``request_id`` until its result, decoded into ``cast_to`` (``dict`` for JSON).

        Args:
            on_queue_state: called with the queue state (``active``,
                ``paused_capacity``, ...) each time it changes.
            timeout: the most seconds to wait in all (default: the client's
                ``Timeout.total``, else ``DEFAULT_FUTURE_TIMEOUT``); 0 polls
                once and raises ``APITimeoutError`` unless the result is there.
                A ``Timeout``: its ``total`` is that wait, its connect and read
                each poll's.
            extra_headers, extra_query, extra_body, max_retries: per-call
                overrides, for every poll.

        Raises:
            RequestFailedError: the future failed (``.category``: user, server or unknown).
            APITimeoutError: no result before the deadline (the message names the id).
            APIStatusError, APIConnectionError: polling failed beyond the retry budget.
        """
        client = self._client
        seconds, call_timeout = future_timeout(client, overrides.get("timeout"))
        options = RequestOptions("POST", RETRIEVE_PATH, json={"request_id": request_id})
        options = options.overridden({**overrides, "timeout": call_timeout})

        def opener(budget: RetryBudget, timeout: Timeout) -> StreamedResponse:
            deadline = budget.deadline if budget.deadline is not None else time.monotonic() + seconds
            return poll(client, request_id, options, budget, deadline, on_queue_state)

        return self._request(options, json_parser(cast_to), opener=opener)


def future_timeout(client: BaseClient, timeout: Timeoutish) -> tuple[float, Timeout]:
    """A future's whole wait in seconds, and the call's ``Timeout`` (its ``total`` that wait, unless
    0: one poll), from a call's ``timeout=``: seconds, a ``Timeout`` or None (the client's)."""
    base = timeout if isinstance(timeout, Timeout) else client.timeout
    if isinstance(timeout, Timeout) or timeout is None:
        seconds = base.total or client.timeout.total or DEFAULT_FUTURE_TIMEOUT
    else:
        seconds = float(timeout)
    # timeout=0 asks "is it done?": one poll, with the client's own connect and read timeouts
    return seconds, Timeout(base.connect, base.read, total=seconds if seconds > 0 else None)


def submit(
    client: BaseClient,
    options: RequestOptions,
    budget: RetryBudget,
    deadline: float,
    on_queue_state: QueueStateCallback | None = None,
    on_handle: Callable[[FutureHandle], None] | None = None,
) -> StreamedResponse:
    """POST ``options`` (a future-returning call) and poll the future: its result's response. The
    polls carry the call's headers and timeout.

    ``on_handle`` sees the future's handle before polling (a created model's id, say).
    """
    with client._open(options.replace(read_body=True), budget) as response:
        handle = decode_json(response.read(), FutureHandle, response)
    if on_handle is not None:
        on_handle(handle)
    polls = options.replace(url=RETRIEVE_PATH, params=None, json={"request_id": handle.request_id})
    return poll(client, handle.request_id, polls, budget, deadline, on_queue_state, announce=False)


def poll(
    client: BaseClient,
    request_id: str,
    options: RequestOptions,
    budget: RetryBudget,
    deadline: float,
    on_queue_state: QueueStateCallback | None = None,
    *,
    announce: bool = True,
) -> StreamedResponse:
    """Poll ``request_id`` (``options``: the poll's request) until its result (the response, body
    read), within ``deadline`` (``time.monotonic()``) and ``budget``; see the module docstring
    for each answer.

    The first poll is reported to the ``request``/``response`` hooks when it
    starts the logical call (``announce``); the others never are.
    """
    timeout = client._timeout(options.timeout)
    start = time.monotonic()
    polls = waits = 0
    state: str | None = None
    fresh = True  # nothing failed since the last answer: a 5xx is polled again at once

    def report(new: str | None) -> None:
        nonlocal state
        if new and new != state:
            state = new
            log.info("Future %s: queue state %s", request_id, new)
            if on_queue_state is not None:
                try:
                    on_queue_state(new)
                except Exception:
                    log.exception("The on_queue_state callback of future %s raised", request_id)

    def timed_out() -> APITimeoutError:
        waited = time.monotonic() - start
        return APITimeoutError(
            f"Future {request_id} had no result after {waited:.1f} s ({polls} polls"
            f"{f', last queue state {state}' if state else ''})",
            None,
            cause="deadline",
        )

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 and polls:
            raise timed_out()
        request = client.build_request(options)
        polls += 1
        try:
            # each poll waits at most the time left (a zero timeout's one poll: the timeouts as they are)
            waits_at_most = timeout.within(deadline if remaining > 0 else None)
            response = client.send(
                request,
                options.replace(timeout=waits_at_most, read_body=True),
                budget,
                quiet=polls > 1 or not announce,
                retry=False,
            )
        except APIStatusError as exc:
            status = exc.status_code
            if status == 408:  # the server's long poll ran out: a try_again
                report(_queue_state(exc.body))
                fresh = True
                continue
            if status != 429 and status < 500:
                raise
            headers = exc.response.headers if exc.response is not None else None
            progress = None
            if status >= 500 and fresh:  # the first 5xx since an answer: poll again at once
                progress, headers = polls, None
            fresh = False
            reason = f"HTTP {status} polling future {request_id}"
            if client.backoff(budget, request, reason, headers=headers, progress=progress):
                continue
            if _out_of_time(budget, exc):
                raise timed_out() from exc
            raise
        except APIConnectionError as exc:
            fresh = False
            reason = f"{exc} polling future {request_id}"
            if exc.cause != "deadline" and client.backoff(budget, request, reason, cause=exc.cause):
                continue
            if _out_of_time(budget, exc):
                raise timed_out() from exc
            raise
        answer = decode_json(response.read(), _Answer, response)
        if answer.type == "try_again":
            report(answer.queue_state)
            fresh = True
            wait = min(POLL_INTERVAL * 2**waits, MAX_POLL_INTERVAL, max(0.0, deadline - time.monotonic()))
            waits += 1
            if wait > 0:  # else the deadline has come: the loop's top raises
                client._wait(wait, f"future {request_id} not ready ({answer.queue_state or 'queued'})")
            continue
        if answer.error is not None:
            category = answer.category or "unknown"
            raise RequestFailedError(
                f"Future {request_id} failed ({category}): {answer.error}", request_id, category
            )
        if polls > 1:
            log.info("Future %s: result after %d polls, %.1f s", request_id, polls, time.monotonic() - start)
        return response


def _queue_state(body: object) -> str | None:
    if isinstance(body, dict):
        value = body.get("queue_state")
        return value if isinstance(value, str) else None
    return None


def _out_of_time(budget: RetryBudget, exc: Exception) -> bool:
    """Whether the retry was refused for the deadline (not for the failures in a row, nor a cause no
    retry mends)."""
    cause = getattr(exc, "cause", None)
    if cause == "deadline":
        return True
    return not (cause in NEVER_RETRIED or cause == "dns" or budget.failures >= budget.max_retries)
