"""Read-side routes over sessions: search, trace export, samplers.

Routes (relative to ``/api/v1``): ``POST sessions/search`` (the SDK's
SessionSearchRequest, newest first, a cursor per page), ``GET
sessions/{id}/trace_export`` (``trace_export_polls`` pending answers per session,
then ready with a signed URL of the session's trace file; a later call after ready
answers ready at once, with a fresh URL), ``GET samplers/{id}`` (the samplers the
sessions list, or those registered with ``Inspect.samplers``).

Rules: the search body is checked against the SDK's shape (unknown fields,
wrong types and out-of-range limits are violations); a trace file is
``_data.generate(seed of the session id, trace_size)``, served like every signed
file (ranges, ETag, checksums).
"""

from __future__ import annotations

import threading
import zlib
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from ._checkpoints import OWNER, Registry, iso
from ._files import GeneratedBody
from ._sessions import SessionRecord, Sessions
from ._types import HTTPError, Request
from ._validate import decode, method_not_allowed, violation

__all__ = ["Inspect"]

_FINISH_REASONS = Literal["success", "errored", "interrupted"]


class StatusQuery(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="client_finished"):
    reasons: list[_FINISH_REASONS] | None = None


class ActiveQuery(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="active"):
    pass


class CancelledQuery(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="cancelled"):
    pass


class FailedQuery(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="failed"):
    pass


class OwnOwner(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="own"):
    pass


class AccessibleOwner(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="accessible"):
    pass


class UserOwner(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="user"):
    owner_urns: list[str]


class Cursor(msgspec.Struct, forbid_unknown_fields=True):
    last_created_at: datetime
    last_session_id: str


class SessionSearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The SDK's SessionSearchRequest."""

    session_id: str | None = None
    project_ids: list[str] | None = None
    user_metadata: dict[str, str] = {}
    display_name: str | None = None
    owner: OwnOwner | AccessibleOwner | UserOwner = OwnOwner()
    statuses: list[ActiveQuery | CancelledQuery | FailedQuery | StatusQuery] | None = None
    limit: int = 50
    cursor: Cursor | None = None


def _status(record: SessionRecord) -> dict[str, Any]:
    if record.finished is None:
        return {"type": "active"}
    return {"type": "client_finished", "reason": {"type": record.finished}, "detail": record.finish_detail}


def _matches_status(record: SessionRecord, statuses: list[Any] | None) -> bool:
    if statuses is None:
        return True
    for query in statuses:
        if isinstance(query, ActiveQuery) and record.finished is None:
            return True
        if isinstance(query, StatusQuery) and record.finished is not None:
            if query.reasons is None or record.finished in query.reasons:
                return True
    return False


class Inspect:
    """Search, trace exports and samplers over one server's sessions."""

    def __init__(self, sessions: Sessions, registry: Registry) -> None:
        self.sessions = sessions
        self.registry = registry
        self.state = registry.state
        self.lock = threading.Lock()
        self.polls: dict[str, int] = {}  # session id -> trace_export polls answered
        self.samplers: dict[str, dict[str, Any]] = {}  # sampler id -> GetSamplerResponse JSON

    @staticmethod
    def handles(parts: list[str]) -> bool:
        """Whether the route ``parts`` (after ``/api/v1``) is one of this module's."""
        return (
            parts == ["sessions", "search"]
            or (len(parts) == 3 and parts[0] == "sessions" and parts[2] == "trace_export")
            or (len(parts) == 2 and parts[0] == "samplers")
        )

    def route(self, request: Request, parts: list[str]) -> None:
        """Answer a route ``handles`` accepted."""
        if parts == ["sessions", "search"]:
            if request.command != "POST":
                raise method_not_allowed(request, ["POST"])
            return self._search(request)
        if request.command != "GET":
            raise method_not_allowed(request, ["GET"])
        if parts[0] == "samplers":
            return self._sampler(request, parts[1])
        return self._trace_export(request, parts[1])

    def _search(self, request: Request) -> None:
        body = decode(request, SessionSearchRequest)
        if not 1 <= body.limit <= 200:
            raise violation(422, f"limit must be between 1 and 200, got {body.limit}", "validation_error")
        if body.display_name == "" or body.statuses == []:
            raise violation(422, "display_name and statuses may not be empty", "validation_error")
        with self.sessions.lock:
            records = sorted(
                self.sessions.sessions.values(), key=lambda r: (r.created_at, r.session_id), reverse=True
            )
        owner = body.owner
        found = []
        for record in records:
            if isinstance(owner, OwnOwner) and record.owner != OWNER:
                continue
            if isinstance(owner, UserOwner) and f"tml:user:{record.owner}" not in owner.owner_urns:
                continue
            if body.cursor is not None:
                after = (body.cursor.last_created_at.timestamp(), body.cursor.last_session_id)
                if (record.created_at, record.session_id) >= after:
                    continue
            named = body.display_name is not None and all(
                word in (record.display_name or "").lower() for word in body.display_name.lower().split()
            )
            if (body.session_id is not None or body.display_name is not None) and not (
                record.session_id == body.session_id or named
            ):
                continue
            metadata = record.user_metadata or {}
            if any(metadata.get(k) != v for k, v in body.user_metadata.items()):
                continue
            project = record.project_id or "proj-default"
            if body.project_ids is not None and project not in body.project_ids:
                continue
            if not _matches_status(record, body.statuses):
                continue
            found.append(record)
        page, more = found[: body.limit], len(found) > body.limit
        sessions = [self._summary(record) for record in page]
        cursor = None
        if more:
            last = page[-1]
            cursor = {"last_created_at": iso(last.created_at), "last_session_id": last.session_id}
        request.send_json(200, {"sessions": sessions, "next_cursor": cursor})

    def _summary(self, record: SessionRecord) -> dict[str, Any]:
        counts = sizes = 0
        for run in record.training_run_ids:
            for checkpoint in self.registry.run_checkpoints(run):
                counts += 1
                sizes += checkpoint.size
        return {
            "session_id": record.session_id,
            "created_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
            "owner": f"tml:user:{record.owner}",
            "project_id": record.project_id or "proj-default",
            "status": _status(record),
            "checkpoints_count": counts,
            "display_name": record.display_name,
            "user_metadata": {str(k): str(v) for k, v in (record.user_metadata or {}).items()},
            "checkpoint_storage_bytes": sizes,
        }

    def _trace_export(self, request: Request, session_id: str) -> None:
        with self.sessions.lock:
            record = self.sessions.sessions.get(session_id)
        if record is None or record.owner != OWNER:
            raise HTTPError(404, f"session {session_id!r} not found", "not_found")
        with self.lock:
            polls = self.polls[session_id] = self.polls.get(session_id, 0) + 1
        if polls <= self.state.trace_export_polls:
            return request.send_json(200, {"status": "pending"})
        seed = zlib.crc32(session_id.encode())
        body = GeneratedBody(("trace", session_id), seed, self.state.trace_size)
        url, _expires = self.registry.sign_body(f"trace-{session_id}", body, f"{session_id}.pftrace")
        request.send_json(200, {"status": "ready", "url": url})

    def _sampler(self, request: Request, sampler_id: str) -> None:
        with self.lock:
            known = self.samplers.get(sampler_id)
        if known is not None:
            return request.send_json(200, known)
        with self.sessions.lock:
            owners = [r for r in self.sessions.sessions.values() if sampler_id in r.sampler_ids]
        if not owners:
            raise HTTPError(404, f"sampler {sampler_id!r} not found", "not_found")
        base_model = self.registry.default_base_model()
        for run in owners[0].training_run_ids:
            with self.registry.lock:
                found = self.registry.runs.get(run)
            if found is not None:
                base_model = found.base_model
                break
        request.send_json(200, {"sampler_id": sampler_id, "base_model": base_model, "model_path": None})
