"""The training engine's futures: ``Future[T]``, settling one, the billing pause, result decoders.

``Future`` is what every training and sampling call returns (a ``concurrent.futures.Future``
with the server's request id and queue state); the ``Engine`` (``_train_engine``) resolves it.
No silent hang: every future has a deadline (``result_timeout``, by default
``DEFAULT_RESULT_TIMEOUT`` seconds from submission) after which it fails with
``APITimeoutError`` naming the request id, the time waited, the polls and the last
queue state; ``Future.result(timeout)`` says the same when the caller's own timeout
ends first.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic

import msgspec

from ._exceptions import APIResponseValidationError, APIStatusError
from ._typing import T

__all__ = [
    "BILLING_PAUSE",
    "DEFAULT_RESULT_TIMEOUT",
    "BillingPause",
    "Future",
    "json_result",
    "proto_result",
    "resolve",
]

log = logging.getLogger("tinker_sync")

DEFAULT_RESULT_TIMEOUT = 3600.0  # seconds from submission to result, for any future
BILLING_PAUSE = 5.0  # seconds between tries while the account is paused for billing (402)
BILLING_RESET = 300.0  # seconds without a 402 that end a billing incident


class Future(concurrent.futures.Future[T], Generic[T]):
    """The result of a training or sampling call: a ``concurrent.futures.Future``.

    ``concurrent.futures.wait`` and ``as_completed`` work on it as they are.
    ``request_id`` is the server's id once the request is accepted;
    ``queue_state`` the last queue state the server reported (``active``,
    ``paused_capacity``, ``paused_rate_limit``), or None.
    """

    def __init__(self) -> None:
        super().__init__()
        self.request_id: str | None = None
        self.queue_state: str | None = None
        self._submitted = time.monotonic()
        self._polls = 0
        self._followers: list[Future[Any]] = []  # futures made from this one: they show its queue state

    def _follow(self, source: Future[Any]) -> None:
        """Show ``source``'s request id, queue state and polls (a merged or stamped result)."""
        source._followers.append(self)

    def describe(self) -> str:
        """One line: the request id, time waited, polls, last queue state (what a timeout says)."""
        waited = time.monotonic() - self._submitted
        return (
            f"request {self.request_id or '(not yet accepted)'}: no result after {waited:.1f} s, "
            f"{self._polls} polls, last queue state {self.queue_state or 'unknown'}"
        )

    def result(self, timeout: float | None = None) -> T:
        """The result, waiting at most ``timeout`` seconds (None: up to the future's own deadline)."""
        try:
            return super().result(timeout)
        except TimeoutError:
            if self.done():
                raise
            raise TimeoutError(self.describe()) from None


def resolve(
    future: concurrent.futures.Future[Any], value: Any = None, error: BaseException | None = None
) -> None:
    """Settle ``future`` unless it is already done (cancelled by its owner, say)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass


class BillingPause:
    """The session's billing pause, as the SDK keeps it: a 402 is waited out (``BILLING_PAUSE`` s,
    then the same request again) for at most ``limit`` seconds of one incident, then it fails; an
    incident ends after ``BILLING_RESET`` s without a 402. Logged once a minute while it lasts."""

    def __init__(self, limit: float = 3600.0) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._first: float | None = None
        self._last: float | None = None
        self._logged = float("-inf")

    def wait(self, error: APIStatusError) -> float | None:
        """The wait before trying again after ``error`` (a 402), or None: paused too long, fail."""
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last > BILLING_RESET:
                self._first = None  # a new incident
            self._first = now if self._first is None else self._first
            self._last = now
            if now - self._first > self.limit:
                log.error(
                    "Paused for billing for %.0f s (more than %g s): giving up", now - self._first, self.limit
                )
                return None
            if now - self._logged > 60.0:
                self._logged = now
                log.warning("The job is paused for billing (402): %s", error.message)
        return BILLING_PAUSE


def json_result(cast_to: type[T]) -> Callable[[bytes, bool], T]:
    """A decoder of a JSON-only result into ``cast_to``."""
    decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(cast_to)

    def decode(raw: bytes, protobuf: bool) -> T:
        if protobuf:
            raise APIResponseValidationError(f"a protobuf body for {cast_to.__name__}, which is JSON only")
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as error:
            raise APIResponseValidationError(f"{cast_to.__name__}: {error}") from None

    return decode


def proto_result(decode_proto: Callable[[bytes], T], name: str) -> Callable[[bytes, bool], T]:
    """A decoder of a protobuf-only result (``ForwardBackwardOutput``, ``SampleResponse``)."""

    def decode(raw: bytes, protobuf: bool) -> T:
        if not protobuf:
            raise APIResponseValidationError(f"a JSON body for {name}, which the API sends as protobuf only")
        return decode_proto(raw)

    return decode
