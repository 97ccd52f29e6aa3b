"""Promises: the futures of training and sampling, as the real server keeps them.

A promise becomes ready at a time (``ready_at``), with a JSON result, a protobuf
result, or an error. ``POST /retrieve_future`` on one of them:
- holds the poll until the result is ready, at most ``hold`` seconds, then answers
  ``{"type": "try_again", "queue_state": ...}`` (200, or 408 when ``timeout_status``
  is 408, as the real server's queue timeout does);
- answers ``complete_metadata`` first to an ``allow_metadata_only`` poll when
  ``metadata_first`` is on;
- negotiates the body: ``Accept: application/x-protobuf`` gets the protobuf form,
  anything else the JSON form (a protobuf-only result asked as JSON is a client
  mistake, answered 406);
- carries ``X-Tinker-Completed-At`` (the wall time the result became ready), so a
  client can measure completion-to-result latency;
- plays a promise's scripted answers first, one per poll: a status (404, 408, 410,
  429, 500), or ``("stall", seconds)``: hold the poll that long and close the
  connection without an answer (the client's own poll timeout fires first: the late
  result case, which the next poll must still get), or ``("error", category)``: the
  request failed (``{"error", "category"}``).

``POST /retrieve_futures`` is the per-sampling-session long poll: completions in
the order they became ready, from a cursor, acknowledged by id on the next poll; each
clone of a sampling session (``cloned_sampler_id``, ``seq_id // 1e9``) has its own.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from typing import Any

import msgspec

from ._types import ABORT, HTTPError, Request, ServerState
from ._validate import decode, violation

__all__ = ["Promise", "Promises", "clone_queue"]

PROTOBUF = "application/x-protobuf"
Scripted = int | tuple[str, float] | tuple[str, str]


class Promise:
    """One future: its kind (the SDK's request type name), its result and when it is ready."""

    def __init__(self, request_id: str, kind: str, session: str | None) -> None:
        self.request_id, self.kind, self.session = request_id, kind, session
        # Waited on by a poll held for the result: made by the first such poll (under Promises.lock),
        # as most promises are never waited on (a burst's results are ready before their poll).
        self.ready: threading.Condition | None = None
        self.ready_at: float | None = None  # monotonic; None while not processed
        self.completed_at: float | None = None  # wall time it became (or becomes) ready
        self.json: dict[str, Any] | None = None
        self.proto: bytes | None = None
        self.error: dict[str, Any] | None = None
        self.polls = 0
        self.metadata_sent = False
        self.retrieved = False
        self.cancelled = False
        self.script: collections.deque[Scripted] = collections.deque()


def clone_queue(sampling_session_id: str, cloned_sampler_id: int) -> str:
    """The completion queue of one client of a sampling session: the original (clone 0) and each
    unpickled copy (``seq_id // 1e9``) are kept apart, as the server keeps them."""
    return (
        sampling_session_id if cloned_sampler_id == 0 else f"{sampling_session_id}#clone{cloned_sampler_id}"
    )


class RetrieveFutureRequest(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    allow_metadata_only: bool = False
    model_id: str | None = None
    type: str | None = None


class FuturesTarget(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    sampling_session_id: str
    cloned_sampler_id: int = 0


class RetrieveFuturesRequest(msgspec.Struct, forbid_unknown_fields=True):
    target: FuturesTarget
    prev_cursor: int | None = None
    timeout: float | None = None
    retrieved_request_ids: list[str] = []


class CancelFutureRequest(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str


class Promises:
    """Every promise of one server, by request id; the knobs tests turn."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.lock = threading.Lock()
        self.items: dict[str, Promise] = {}
        self.counter = itertools.count(1)
        self.hold = 2.0  # the longest a retrieve_future poll is held when the result is not ready
        self.futures_hold = 5.0  # the longest a retrieve_futures poll is held without completions
        self.timeout_status = 200  # 408: a held poll that times out says so with a 408
        self.queue_state = "active"
        self.metadata_first = False
        self.scripts: collections.deque[list[Scripted]] = collections.deque()
        self.sessions: dict[str, list[str]] = collections.defaultdict(list)  # completions in order
        self.session_pending: dict[str, set[str]] = collections.defaultdict(set)
        # Each session's pending promises that have a ready time, as a heap of (ready_at, request_id):
        # a held retrieve_futures poll, woken by every resolve, finds what is due without a scan.
        self.session_due: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
        self.session_changed = threading.Condition(self.lock)
        self.acked: list[str] = []
        self.cancelled: list[str] = []
        self.closed = False

    # -- making and resolving -----------------------------------------------------------------------

    def script_next(self, *answers: Scripted) -> None:
        """Scripted answers for the next promise created (played before its real answers)."""
        with self.lock:
            self.scripts.append(list(answers))

    def create(self, kind: str, session: str | None = None) -> Promise:
        with self.lock:
            request_id = f"req-{kind.lower()}-{next(self.counter):06d}"
            promise = Promise(request_id, kind, session)
            if self.scripts:
                promise.script.extend(self.scripts.popleft())
            self.items[request_id] = promise
            if session is not None:
                self.session_pending[session].add(request_id)
        return promise

    def resolve(
        self,
        promise: Promise,
        *,
        json: dict[str, Any] | None = None,
        proto: bytes | None = None,
        error: dict[str, Any] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Set the result, ready ``delay`` seconds from now."""
        now = time.monotonic()
        with self.lock:
            promise.json, promise.proto, promise.error = json, proto, error
            promise.ready_at = now + delay
            promise.completed_at = time.time() + delay
            if promise.ready is not None:
                promise.ready.notify_all()
            if promise.session is not None:
                if promise.request_id in self.session_pending[promise.session]:
                    heapq.heappush(self.session_due[promise.session], (promise.ready_at, promise.request_id))
                self.session_changed.notify_all()

    def close(self) -> None:
        """Wake every held poll (the server is stopping)."""
        with self.lock:
            self.closed = True
            for promise in self.items.values():
                if promise.ready is not None:
                    promise.ready.notify_all()
            self.session_changed.notify_all()

    def _wait_ready(self, promise: Promise, hold: float) -> bool:
        deadline = time.monotonic() + hold
        with self.lock:
            while True:
                now = time.monotonic()
                if promise.ready_at is not None and now >= promise.ready_at:
                    return True
                wait = deadline - now
                if promise.ready_at is not None:
                    wait = min(wait, promise.ready_at - now)
                if wait <= 0 or self.closed:
                    return promise.ready_at is not None and now >= promise.ready_at
                if promise.ready is None:
                    promise.ready = threading.Condition(self.lock)
                promise.ready.wait(wait)

    # -- routes -------------------------------------------------------------------------------------

    def owns(self, request_id: str) -> bool:
        with self.lock:
            return request_id in self.items

    def retrieve_future(self, request: Request) -> bool:
        """Answer ``POST /retrieve_future`` for one of our promises; False when the id is not ours."""
        body = decode(request, RetrieveFutureRequest)
        with self.lock:
            promise = self.items.get(body.request_id)
            if promise is None:
                return False
            promise.polls += 1
            scripted = promise.script.popleft() if promise.script else None
        if isinstance(scripted, tuple) and scripted[0] == "error":
            request.send_json(
                200, {"error": f"scripted failure of {promise.request_id}", "category": scripted[1]}
            )
            return True
        if isinstance(scripted, tuple):
            self.state.wait(float(scripted[1]))
            request.emit([ABORT], "length")  # no answer at all: the connection is reset
            return True
        if scripted is not None:
            self._status(request, scripted, promise)
            return True
        if not self._wait_ready(promise, self.hold):
            request.send_json(self.timeout_status, self._try_again(promise))
            return True
        if promise.error is not None:
            request.send_json(200, promise.error)
            return True
        if (
            body.allow_metadata_only
            and self.metadata_first
            and promise.proto is not None
            and not promise.metadata_sent
        ):
            promise.metadata_sent = True
            request.send_json(
                200, {"status": "complete_metadata", "response_payload_size": len(promise.proto)}
            )
            return True
        completed = [("X-Tinker-Completed-At", f"{promise.completed_at:.6f}")]
        promise.retrieved = True
        if promise.proto is not None and PROTOBUF in request.headers.get("accept", ""):
            request.send_body(200, [("Content-Type", PROTOBUF), *completed], promise.proto)
        elif promise.json is not None:
            request.send_json(200, promise.json, completed)
        else:
            raise violation(406, f"the result of {promise.kind} is protobuf only: send Accept: {PROTOBUF}")
        return True

    def _try_again(self, promise: Promise) -> dict[str, Any]:
        return {"type": "try_again", "request_id": promise.request_id, "queue_state": self.queue_state}

    def _status(self, request: Request, status: int, promise: Promise) -> None:
        if status == 408:
            request.send_json(408, self._try_again(promise))
        elif status == 429:
            request.send_error_json(429, "rate limited", "rate_limit", [("Retry-After", "0")])
        else:
            request.send_error_json(status, f"scripted status {status}", "scripted")

    def retrieve_futures(self, request: Request) -> None:
        """``POST /retrieve_futures``: completions of one sampling session after ``prev_cursor``."""
        body = decode(request, RetrieveFuturesRequest)
        session = clone_queue(body.target.sampling_session_id, body.target.cloned_sampler_id)
        hold = self.futures_hold if body.timeout is None else min(body.timeout, self.futures_hold)
        cursor = body.prev_cursor or 0
        deadline = time.monotonic() + hold
        with self.lock:
            for request_id in body.retrieved_request_ids:
                self.acked.append(request_id)
                promise = self.items.get(request_id)
                if promise is not None:
                    promise.proto = promise.json = None  # acknowledged: the payload may go
            while True:
                next_due = self._collect(session)
                done = self.sessions[session]
                now = time.monotonic()
                if len(done) > cursor or now >= deadline or self.closed:
                    break
                wait = deadline - now
                if next_due is not None:
                    wait = min(wait, max(0.0, next_due - now))
                self.session_changed.wait(wait)
            completions: list[dict[str, Any]] = []
            for request_id in done[cursor:]:
                promise = self.items[request_id]
                if promise.error is not None:
                    completions.append({"state": "failed", "request_id": request_id})
                else:
                    size = len(promise.proto) if promise.proto is not None else None
                    completions.append(
                        {
                            "state": "finished",
                            "request_id": request_id,
                            "response_payload_uncompressed_size": size,
                        }
                    )
            request.send_json(200, {"completions": completions, "cursor": len(done)})

    def _collect(self, session: str) -> float | None:
        """Move the session's promises that are ready now to its completion list, in the order they
        became ready (lock held); returns when the next pending one becomes ready (None: none has a
        time yet)."""
        now = time.monotonic()
        due, pending = self.session_due[session], self.session_pending[session]
        while due:
            ready_at, request_id = due[0]
            if request_id not in pending or self.items[request_id].ready_at != ready_at:
                heapq.heappop(due)  # collected already, or resolved again since (its new time is in)
            elif ready_at <= now:
                heapq.heappop(due)
                pending.discard(request_id)
                self.sessions[session].append(request_id)
            else:
                return ready_at
        return None

    def cancel_future(self, request: Request) -> None:
        """``POST /cancel_future``: the client gave up on a sample."""
        body = decode(request, CancelFutureRequest)
        with self.lock:
            promise = self.items.get(body.request_id)
            if promise is None:
                raise HTTPError(404, f"unknown request_id {body.request_id!r}", "not_found")
            promise.cancelled = True
            self.cancelled.append(body.request_id)
        request.send_json(200, None)

    def completion_times(self) -> dict[str, float]:
        """The wall time each ready promise became ready, by request id."""
        with self.lock:
            return {r: p.completed_at for r, p in self.items.items() if p.completed_at is not None}
