"""The training engine: the few threads that resolve futures (no asyncio), and ``post_future``.

One ``Engine`` per ``ServiceClient`` holds a bounded submit pool (the POSTs that
create futures) and a fixed set of poll threads sharing one schedule of pending
futures: never a thread or an open poll per future. Each poll is one
``POST /retrieve_future`` (``max_retries=0``, held by the server until the result is
ready or its hold ends), and every answer is handled as the official SDK does:

- a protobuf body is the result; a JSON body is the result, or
  ``{"type": "try_again", "queue_state"}`` (polled again at once; a new queue state
  goes to the log and to ``on_queue_state``), or ``{"status": "complete_metadata"}``
  (polled again for the payload), or ``{"error", "category"}`` (``RequestFailedError``);
- 408 and 5xx: polled again at once; 429, a bare 400 (3 tries) and connection
  errors: backed off ``min(2**n, 30)`` s; 402: the session's billing pause (5 s
  waits, for at most the server's ``billing_exception_max_pause_duration_sec``); 410: the request is sent again when it can
  be (a sample), else it fails;
- our own poll timing out while the server holds the result is not a loss: the
  future is polled again at once, and a 404 then is retried within the budget
  (``NOT_FOUND_RETRIES``), never fatal at once (the SkyRL#2162 case).
- no future waits past its deadline (``Future``'s; ``APITimeoutError`` then).

Pollers: ``FLOOR`` from the start; one more (up to ``poll_workers``) when a future is due and every
poller is busy, if the round trip calls for it (``_train_pace``) or every poller has been held for
``STUCK`` seconds (a ready result must not wait out the server's holds of futures that are not done).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ._base_client import BaseClient
from ._decode import decode_body
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    RequestFailedError,
)
from ._options import RequestOptions
from ._retry import should_retry_status
from ._train_future import DEFAULT_RESULT_TIMEOUT, BillingPause, Future, resolve
from ._train_pace import (
    DEFAULT_POLL_WORKERS,
    DEFAULT_SUBMIT_WORKERS,
    FLOOR,
    Pace,
    SubmitPool,
    check_workers,
)
from ._train_wire import Wire, new_key
from .resources.types import FutureHandle

__all__ = [
    "DEFAULT_POLL_TIMEOUT",
    "Engine",
    "Pending",
    "QueueStateCallback",
    "post_future",
]

log = logging.getLogger("tinker_sync")

DEFAULT_POLL_TIMEOUT = 45.0  # one retrieve_future poll's read timeout (the server holds ~30 s at most)
STUCK = 1.0  # seconds every poller may be held before one more starts (see _more_pollers)
NOT_FOUND_RETRIES = 8
BAD_REQUEST_RETRIES = 3
PROTOBUF = "application/x-protobuf"
QueueStateCallback = Callable[[str, str, "str | None"], None]
Clone = tuple[str, int]  # a sample's sampling session and the clone id of its client (0: the original)


class Pending:
    """One future being polled: what to ask for, how to decode it, how to re-send it."""

    def __init__(
        self,
        future: Future[Any],
        request_type: str,
        decode: Callable[[bytes, bool], Any],
        *,
        protobuf: bool = False,
        resend: Callable[[], str] | None = None,
        deadline: float,
        session: Clone | None = None,
    ) -> None:
        self.future, self.request_type, self.decode = future, request_type, decode
        self.protobuf, self.resend, self.deadline = protobuf, resend, deadline
        self.session = session  # a sample's sampling session and clone (the retrieve_futures long poll)
        self.metadata_only = True
        self.failures = 0
        self.not_found = 0
        self.bad_requests = 0


def _status(error: APIStatusError) -> int:
    return int(error.status_code)


class Completion(msgspec.Struct):
    request_id: str
    state: str = "finished"


class FuturesPage(msgspec.Struct):
    """The answer of ``retrieve_futures``: completions after the cursor, and the new cursor."""

    completions: list[Completion] = []
    cursor: int | None = None


_PAGE: msgspec.json.Decoder[FuturesPage] = msgspec.json.Decoder(FuturesPage)


def _page(raw: bytes) -> FuturesPage:
    """A ``retrieve_futures`` answer, read as the wire's hot path hands it over."""
    try:
        return _PAGE.decode(raw)
    except msgspec.DecodeError as error:
        raise APIResponseValidationError(f"FuturesPage: {error}") from None


class Engine:
    """The threads of one ``ServiceClient``: at most ``submit_workers`` submitters and
    ``poll_workers`` pollers, ``FLOOR`` of each until the server's round trip calls for more
    (``_train_pace``)."""

    def __init__(
        self,
        client: BaseClient,
        *,
        submit_workers: int = DEFAULT_SUBMIT_WORKERS,
        poll_workers: int = DEFAULT_POLL_WORKERS,
        result_timeout: float = DEFAULT_RESULT_TIMEOUT,
        poll_timeout: float = DEFAULT_POLL_TIMEOUT,
        on_queue_state: QueueStateCallback | None = None,
    ) -> None:
        check_workers(submit_workers, poll_workers)
        self.client = client
        self.wire = Wire(client)
        self.billing = BillingPause()
        self.result_timeout = result_timeout
        self.poll_timeout = poll_timeout
        self.on_queue_state = on_queue_state
        self.pace = Pace(submit_workers)
        self.pool = SubmitPool(self.pace)
        self.poll_workers = poll_workers
        self._cond = threading.Condition()
        self._ready: list[tuple[float, int, Pending]] = []  # a heap by due time
        self._order = itertools.count()
        self._closed = False
        self.stopping = threading.Event()  # set by close(): a submitter waiting out a billing pause stops
        self._pollers: list[threading.Thread] = []
        self._idle_pollers = 0
        self._poll_started = time.monotonic()  # when the last poll began
        with self._cond:
            for _ in range(min(FLOOR, poll_workers)):
                self._add_poller()
        # retrieve_futures (when the server's flag says so): samples wait, parked, for their
        # session's long poll to report them complete, then one poll fetches each.
        self.retrieve_futures = False
        self.cancel_enabled = (
            False  # client/dynamic_config's sample_cancel_enabled: abandoned samples are cancelled
        )
        self._park = threading.Condition()
        self._parked: dict[Clone, dict[str, Pending]] = {}
        self._early: dict[Clone, set[str]] = {}  # completions reported before their future was parked
        self._soonest = float("inf")  # the earliest deadline of a parked sample (none passes before it)
        self._acks: dict[Clone, list[str]] = {}
        self._session_thread: threading.Thread | None = None

    # -- submitting ---------------------------------------------------------------------------------

    def submit(self, fn: Callable[[], Any], drop: Callable[[], Any] | None = None) -> None:
        """Run ``fn`` on the submit pool (it settles its own future: exceptions are only logged);
        ``drop`` settles that future instead if the engine closes before ``fn`` started."""
        self.pool.submit(fn, drop)

    def track(self, pending: Pending) -> None:
        """Start polling a future whose request was accepted (``future.request_id`` is set)."""
        if pending.session is not None and self.retrieve_futures:
            self._park_pending(pending)
        else:
            self._schedule(pending, 0.0)

    def _schedule(self, pending: Pending, delay: float) -> None:
        with self._cond:
            if self._closed:
                resolve(pending.future, error=RuntimeError("the ServiceClient is closed"))
                return
            heapq.heappush(self._ready, (time.monotonic() + delay, next(self._order), pending))
            if self._idle_pollers:
                self._cond.notify()
            elif delay <= 0:
                self._more_pollers()

    def _more_pollers(self) -> None:
        """Every poller is busy (lock held): one more, within ``poll_workers``, when the round trip
        is long (``pace``), or when each poller has been held for ``STUCK`` seconds (on futures
        that are not done: one more keeps a ready result from waiting out their holds)."""
        count = len(self._pollers)
        if count < self.poll_workers and (
            count < self.pace.limit or time.monotonic() - self._poll_started > STUCK
        ):
            self._add_poller()

    def check_pollers(self) -> None:
        """Start one more poller if due futures wait while every poller is held (``_more_pollers``);
        called now and then (the heartbeat), as no future may be scheduled while they wait."""
        with self._cond:
            if not self._closed and not self._idle_pollers and self._ready:
                if self._ready[0][0] <= time.monotonic():
                    self._more_pollers()

    def _add_poller(self) -> None:
        """Start one more poller (lock held); it stays until ``close``."""
        thread = threading.Thread(
            target=self._poll_loop, name=f"tinker-sync-poll-{len(self._pollers)}", daemon=True
        )
        self._pollers.append(thread)
        thread.start()

    def close(self) -> None:
        """Fail what is still pending, stop the pollers and the pool, join every thread.

        A poll the server is holding ends first (its hold, at most ``poll_timeout``).
        """
        with self._cond:
            self._closed = True
            self.stopping.set()
            left = [item[2] for item in self._ready]
            self._ready.clear()
            self._cond.notify_all()
        with self._park:
            left += [p for parked in self._parked.values() for p in parked.values()]
            self._parked.clear()
            self._park.notify_all()
            session_thread = self._session_thread
        if session_thread is not None:
            session_thread.join()
        for pending in left:
            resolve(
                pending.future, error=RuntimeError("the ServiceClient was closed before this result arrived")
            )
        self.pool.close()
        with self._cond:
            pollers = list(self._pollers)
        for thread in pollers:
            thread.join()

    # -- polling ------------------------------------------------------------------------------------

    def _next(self) -> Pending | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                wait = None
                if self._ready:
                    wait = self._ready[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._ready)[2]
                self._idle_pollers += 1
                try:
                    self._cond.wait(wait)
                finally:
                    self._idle_pollers -= 1

    def _poll_loop(self) -> None:
        while (pending := self._next()) is not None:
            if pending.future.done():  # cancelled by its owner
                if self.cancel_enabled and pending.session is not None:
                    self._cancel(pending)
                continue
            try:
                delay = self._poll(pending)
            except BaseException as error:  # a decode failure, a bug: the future says so, the poller lives
                resolve(pending.future, error=error)
                continue
            if delay is None:
                continue
            if time.monotonic() + delay > pending.deadline:
                resolve(pending.future, error=APITimeoutError(pending.future.describe(), cause="timeout"))
                continue
            self._schedule(pending, delay)

    def _cancel(self, pending: Pending) -> None:
        """Tell the server a sample's future was abandoned (it may stop the work); best effort."""
        try:
            self.client.post(
                "/api/v1/cancel_future",
                json={"request_id": pending.future.request_id},
                timeout=10.0,
                max_retries=0,
            )
        except Exception as error:
            log.info("cancel_future of %s failed: %r", pending.future.request_id, error)

    def _queue_state(self, future: Future[Any], body: dict[str, Any]) -> None:
        state = body.get("queue_state")
        if not isinstance(state, str) or state == future.queue_state:
            return
        for shown in (future, *future._followers):
            shown.queue_state = state
        reason = body.get("queue_state_reason")
        log.info("Request %s queue state: %s%s", future.request_id, state, f" ({reason})" if reason else "")
        if self.on_queue_state is not None:
            try:
                self.on_queue_state(str(future.request_id), state, reason)
            except Exception:
                log.exception("on_queue_state callback failed")

    def _poll(self, pending: Pending) -> float | None:
        """One poll: None when the future is settled, else the delay before the next poll."""
        future = pending.future
        future._polls += 1
        self._poll_started = time.monotonic()
        for shown in future._followers:
            shown._polls, shown.request_id = future._polls, future.request_id
        headers = {
            "X-Tinker-Request-Iteration": str(future._polls - 1),
            "X-Tinker-Request-Type": pending.request_type,
            "Accept": PROTOBUF if pending.protobuf else "application/json",
        }
        body = {"request_id": future.request_id, "allow_metadata_only": pending.metadata_only}
        try:
            content_type, raw = self.wire.post("/api/v1/retrieve_future", body, headers, self.poll_timeout)
        except APIStatusError as error:
            return self._status(pending, error)
        except APITimeoutError:
            return 0.0  # our poll ended while the server held it: ask again at once, the result is not lost
        except APIConnectionError:
            pending.failures += 1
            return min(2.0**pending.failures, 30.0)
        pending.failures = pending.not_found = 0
        if PROTOBUF in content_type:
            resolve(future, pending.decode(raw, True))
            self._ack(pending)
            return None
        answer = msgspec.json.decode(raw) if raw else None
        if isinstance(answer, dict):
            if answer.get("type") == "try_again":
                self._queue_state(future, answer)
                return 0.0
            if answer.get("status") == "complete_metadata":
                pending.metadata_only = False
                return 0.0
            if "error" in answer and "category" in answer:
                message = str(answer.get("error"))
                resolve(
                    future, error=RequestFailedError(message, str(future.request_id), str(answer["category"]))
                )
                return None
        resolve(future, pending.decode(raw, False))
        self._ack(pending)
        return None

    def _status(self, pending: Pending, error: APIStatusError) -> float | None:
        status = _status(error)
        future = pending.future
        if status == 408 or status >= 500:
            if isinstance(error.body, dict):
                self._queue_state(future, error.body)
            return 0.0
        if status == 402:
            wait = self.billing.wait(error)
            if wait is not None:
                return wait
        elif status == 429:
            pending.failures += 1
            return min(2.0**pending.failures, 30.0)
        if status == 404 and pending.not_found < NOT_FOUND_RETRIES:
            pending.not_found += 1  # a late result may not be registered yet: retried, never lost at once
            return min(0.25 * 2.0**pending.not_found, 5.0)
        if status == 400 and pending.bad_requests < BAD_REQUEST_RETRIES - 1:
            pending.bad_requests += 1
            return min(2.0**pending.bad_requests, 30.0)
        if status == 410 and pending.resend is not None:
            future.request_id = pending.resend()  # the promise is gone: the request is sent again
            pending.metadata_only = True
            if pending.session is not None and self.retrieve_futures:
                self._park_pending(pending)
                return None
            return 0.0
        resolve(future, error=error)
        return None

    # -- retrieve_futures ---------------------------------------------------------------------------

    def _park_pending(self, pending: Pending) -> None:
        session, request_id = pending.session, str(pending.future.request_id)
        assert session is not None
        with self._park:
            early = self._early.get(session, set())
            if request_id not in early:
                if self._closed:
                    resolve(pending.future, error=RuntimeError("the ServiceClient is closed"))
                    return
                self._parked.setdefault(session, {})[request_id] = pending
                self._soonest = min(self._soonest, pending.deadline)
                if self._session_thread is None:
                    self._session_thread = threading.Thread(
                        target=self._session_loop, name="tinker-sync-futures", daemon=True
                    )
                    self._session_thread.start()
                self._park.notify_all()
                return
            early.discard(request_id)
        self._schedule(pending, 0.0)

    def _ack(self, pending: Pending) -> None:
        session = pending.session
        if session is not None and self.retrieve_futures:
            with self._park:
                self._acks.setdefault(session, []).append(str(pending.future.request_id))

    def _session_loop(self) -> None:
        """One long poll at a time over the sampling sessions (each clone its own) with parked samples
        (one thread in all)."""
        cursors: dict[Clone, int | None] = {}
        failures = 0
        while True:
            with self._park:
                while not self._closed and not any(self._parked.values()):
                    self._park.wait()
                if self._closed:
                    return
                sessions = [session for session, parked in self._parked.items() if parked]
                self._expire_parked()
            for session in sessions:
                with self._park:
                    acks = self._acks.pop(session, [])
                body = {
                    "target": {
                        "type": "sampling_session",
                        "sampling_session_id": session[0],
                        "cloned_sampler_id": session[1],
                    },
                    "prev_cursor": cursors.get(session),
                    "timeout": None if len(sessions) == 1 else 0,
                    "retrieved_request_ids": acks,
                }
                try:
                    _, raw = self.wire.post("/api/v1/retrieve_futures", body, {}, self.poll_timeout)
                    page = _page(raw)
                except Exception as error:
                    with self._park:
                        self._acks.setdefault(session, [])[:0] = acks
                    if not isinstance(error, APITimeoutError):
                        failures += 1
                        log.info("retrieve_futures of %s (clone %d) failed: %r", *session, error)
                        with self._park:
                            self._park.wait(min(2.0**failures, 30.0))
                    continue
                failures = 0
                cursors[session] = page.cursor
                for completion in page.completions:
                    with self._park:
                        pending = self._parked.get(session, {}).pop(completion.request_id, None)
                        if pending is None:
                            self._early.setdefault(session, set()).add(completion.request_id)
                    if pending is not None:
                        self._schedule(pending, 0.0)
            if len(sessions) > 1:
                with self._park:
                    self._park.wait(0.05)

    def _expire_parked(self) -> None:
        """Fail the parked samples past their deadline (lock held). Every answer of the long poll
        comes here (hundreds a second in a burst): the parked samples are looked over only once
        the soonest deadline among them has passed, not each time."""
        now = time.monotonic()
        if now <= self._soonest:
            return
        soonest = float("inf")
        for parked in self._parked.values():
            for request_id, pending in list(parked.items()):
                if now > pending.deadline:
                    del parked[request_id]
                    resolve(pending.future, error=APITimeoutError(pending.future.describe(), cause="timeout"))
                else:
                    soonest = min(soonest, pending.deadline)
        self._soonest = soonest


_HANDLE: msgspec.json.Decoder[FutureHandle] = msgspec.json.Decoder(FutureHandle)


BACKPRESSURE = (429, 402)  # what a sample's caller backs off from itself (``backpressure``)


def _submit(
    engine: Engine,
    path: str,
    json: Any,
    content: bytes | None,
    headers: dict[str, str] | None,
    backpressure: bool = False,
) -> FutureHandle:
    """POST a request that answers a future handle; a 402 (billing) is waited out as ``BillingPause``
    says. A JSON body's first attempt takes the wire's hot path; when it fails in a way the client
    retries, the client's own path sends it again, with the same idempotency key, and goes on
    retrying as it always does. With ``backpressure``, a 429 or 402 is raised at once, never
    retried here: the caller backs off (a sample)."""
    final = BACKPRESSURE if backpressure else ()
    while True:
        try:
            with engine.pace.measure():  # the round trip and CPU of a submission: how many to send at once
                return _submit_once(engine, path, json, content, headers, final)
        except APIStatusError as error:
            if _status(error) in final:
                raise
            wait = engine.billing.wait(error) if _status(error) == 402 else None
            if wait is None or engine.stopping.wait(wait):
                raise


def _post(
    engine: Engine,
    path: str,
    json: Any,
    content: bytes | None,
    headers: dict[str, str] | None,
    final: tuple[int, ...],
) -> FutureHandle:
    """The client's own path, with its retries (``final`` statuses never retried)."""
    options = RequestOptions("POST", path, None, headers, json, content, read_body=True, final=final)
    with engine.client._call(options) as response:
        handle: FutureHandle = decode_body(response, FutureHandle)
    return handle


def _submit_once(
    engine: Engine,
    path: str,
    json: Any,
    content: bytes | None,
    headers: dict[str, str] | None,
    final: tuple[int, ...] = (),
) -> FutureHandle:
    if json is None or not engine.wire.fast:
        return _post(engine, path, json, content, headers, final)
    key = new_key()
    try:
        _, raw = engine.wire.post(path, json, headers or {}, engine.client.timeout, idempotency_key=key)
    except APIStatusError as error:
        if _status(error) in final or not should_retry_status(_status(error), error.response.headers):
            raise
        raw = None
    except APIConnectionError:
        raw = None
    if raw is None:
        again = {**(headers or {}), "X-Idempotency-Key": key}
        return _post(engine, path, json, None, again, final)
    try:
        return _HANDLE.decode(raw)
    except msgspec.DecodeError as error:
        raise APIResponseValidationError(f"FutureHandle: {error}") from None


def post_future(
    engine: Engine,
    future: Future[Any],
    path: str,
    request_type: str,
    decode: Callable[[bytes, bool], Any],
    *,
    json: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    protobuf: bool = False,
    resend: Callable[[], str] | None = None,
    track: bool = True,
    on_handle: Callable[[FutureHandle], None] | None = None,
    session: Clone | None = None,
    backpressure: bool = False,
) -> FutureHandle:
    """POST a request that answers a future handle, then poll it into ``future`` (unless not ``track``:
    a request sent again, whose poller goes on with the new id). ``backpressure``: a 429 or 402
    is raised at once, for the caller to back off (``_submit``)."""
    handle = _submit(engine, path, json, content, headers, backpressure)
    future.request_id = handle.request_id
    for shown in future._followers:
        shown.request_id = handle.request_id
    if on_handle is not None:
        on_handle(handle)
    if not track:
        return handle
    deadline = future._submitted + engine.result_timeout
    engine.track(
        Pending(
            future, request_type, decode, protobuf=protobuf, resend=resend, deadline=deadline, session=session
        )
    )
    return handle
