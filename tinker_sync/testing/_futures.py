"""Futures: the answers behind each request id, and ``POST /api/v1/retrieve_future``.

A future is a queue of answers, one per poll; the last one repeats. An answer is
- a dict, answered 200 as JSON: the result, ``{"type": "try_again", ...}`` (poll
  again) or ``{"error", "category"}`` (failed for good);
- a ``Fault`` with a ``status``: that status instead; 408 carries a try_again body
  (as the real server's queue timeout does), any other status the JSON error and
  ``Retry-After`` when the fault has ``retry_after``;
- a callable (for the server's own futures): called once, on first delivery, its dict
  answered from then on. Side effects of an operation (the export checkpoint of
  save_weights_external, say) happen there, so a future scripted to fail has none.

The server's own calls (create_model, load_weights, ...) make futures with ``create``:
``state.future_polls`` try_again answers, then the result; or, when a test queued
answers with ``script(kind, ...)``, those answers first (a failure among them ends the queue, so it repeats).
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from ._types import Fault, HTTPError, Request, ServerState
from ._validate import decode, method_not_allowed

__all__ = ["Answer", "Futures", "RetrieveFutureRequest"]

Answer = dict[str, Any] | Fault | Callable[[], dict[str, Any]]

FUTURE_KINDS = ("create_model", "load_weights", "save_weights_external", "unload_model", "sample")


class RetrieveFutureRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /retrieve_future`` (the SDK's FutureRetrieveRequest)."""

    request_id: str
    allow_metadata_only: bool = False
    model_id: str | None = None
    type: str | None = None


def try_again(request_id: str, queue_state: str = "active") -> dict[str, Any]:
    """The answer telling a poller to poll again."""
    return {"type": "try_again", "request_id": request_id, "queue_state": queue_state}


def _is_failure(answer: Answer) -> bool:
    return isinstance(answer, dict) and "error" in answer


class Futures:
    """The futures of one server, by request id."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.lock = threading.Lock()
        self.queues: dict[str, list[Answer]] = {}
        self.scripts: dict[str, collections.deque[list[Answer]]] = collections.defaultdict(collections.deque)
        self.counter = itertools.count(1)

    def add(self, request_id: str, *answers: Answer) -> None:
        """Set the answers of ``request_id`` (replacing any)."""
        if not answers:
            raise ValueError("a future needs at least one answer")
        with self.lock:
            self.queues[request_id] = list(answers)

    def script(self, kind: str, *answers: Answer) -> None:
        """Queue answers for the next future the server creates for ``kind``."""
        if kind not in FUTURE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FUTURE_KINDS)}, got {kind!r}")
        with self.lock:
            self.scripts[kind].append(list(answers))

    def create(self, kind: str, result: Answer) -> str:
        """A new future for one of the server's operations; returns its request id."""
        with self.lock:
            request_id = f"req-{kind.replace('_', '-')}-{next(self.counter):05d}"
            scripted = self.scripts[kind].popleft() if self.scripts[kind] else None
            if scripted is None:
                answers: list[Answer] = [try_again(request_id) for _ in range(self.state.future_polls)]
            else:
                answers = scripted
            if not any(_is_failure(a) for a in answers):
                answers.append(result)
            self.queues[request_id] = answers
        return request_id

    def next(self, request_id: str) -> dict[str, Any] | Fault:
        """The answer to the next poll of ``request_id``; HTTPError 404 if unknown."""
        with self.lock:
            queue = self.queues.get(request_id)
            if not queue:
                raise HTTPError(404, f"unknown request_id {request_id!r}", "not_found")
            answer = queue[0]
            if callable(answer):
                answer = queue[0] = answer()
            if len(queue) > 1:
                queue.pop(0)
            return answer

    def route(self, request: Request) -> None:
        """``POST /retrieve_future``."""
        if request.command != "POST":
            raise method_not_allowed(request, ["POST"])
        body = decode(request, RetrieveFutureRequest)
        answer = self.next(body.request_id)
        if isinstance(answer, Fault):
            status = answer.status or 500
            if status == 408:
                return request.send_json(408, try_again(body.request_id))
            headers = []
            if answer.retry_after is not None:
                seconds = answer.retry_after
                headers.append(
                    ("Retry-After", str(int(seconds)) if float(seconds).is_integer() else str(seconds))
                )
            return request.send_error_json(status, f"injected status {status}", "fault", headers)
        request.send_json(200, answer)
