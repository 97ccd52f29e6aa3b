"""Sessions and models: the routes a checkpoint export goes through.

Routes (relative to ``/api/v1``): ``POST create_session``, ``POST session_heartbeat``,
``GET sessions``, ``GET sessions/{id}``, ``POST sessions/{id}/finish``, ``PUT
sessions/{id}/project`` (a 204; the session's ``project_id`` is what a search shows),
``POST weights_info``, ``POST get_info``, and the future-returning
``POST create_model``, ``load_weights``, ``save_weights_external``, ``unload_model``.

Rules: request bodies are decoded into Structs that mirror the SDK's request
types (unknown fields are violations, as the SDK's StrictBase forbids them); an
operation's side effect (a load, an export checkpoint, an unload) happens when
its future's result is first delivered, so a future scripted to fail has none;
a model's id is ``SESSION:train:SEQ`` and doubles as its training run's id.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from typing import Any, Literal

import msgspec

from ._checkpoints import OWNER, Registry, parse_tinker_path
from ._futures import Futures
from ._types import HTTPError, Request, ServerState
from ._validate import decode, method_not_allowed, page_size, query_choice, query_int, violation

__all__ = ["ModelRecord", "SessionRecord", "Sessions"]

SCOPES = ("owned", "accessible")
EXPORT_TTL_MIN, EXPORT_TTL_MAX = 3600, 10 * 366 * 86400


class SessionRecord(msgspec.Struct, kw_only=True):
    """A session as the server keeps it; ``finished`` is the finish reason (success, errored,
    interrupted) or None while it is open."""

    session_id: str
    created_at: float
    tags: list[str] = []
    user_metadata: dict[str, Any] | None = None
    sdk_version: str = ""
    project_id: str | None = None
    display_name: str | None = None
    owner: str = OWNER
    training_run_ids: list[str] = []
    sampler_ids: list[str] = []
    finished: str | None = None
    finish_detail: str | None = None
    heartbeats: int = 0


class ModelRecord(msgspec.Struct, kw_only=True):
    """A model (a training client's run) as the server keeps it."""

    model_id: str
    session_id: str
    model_seq_id: int
    base_model: str
    lora_rank: int | None = 32
    optimizer_config: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "adamw"})
    loaded_path: str | None = None
    exports: list[str] = []
    unloaded: bool = False


# -- request bodies (the SDK's request types) -------------------------------------------------------


class CreateSessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    sdk_version: str
    tags: list[str] = []
    user_metadata: dict[str, Any] | None = None
    project_id: str | None = None
    display_name: str | None = None
    type: Literal["create_session"] = "create_session"


class SessionHeartbeatRequest(msgspec.Struct, forbid_unknown_fields=True):
    session_id: str
    type: Literal["session_heartbeat"] = "session_heartbeat"


class FinishReason(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["success", "errored", "interrupted"]


class FinishSessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: FinishReason
    detail: str | None = None


class WeightsInfoRequest(msgspec.Struct, forbid_unknown_fields=True):
    tinker_path: str


class LoraConfig(msgspec.Struct, forbid_unknown_fields=True):
    rank: int
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class CreateModelRequest(msgspec.Struct, forbid_unknown_fields=True):
    session_id: str
    model_seq_id: int
    base_model: str
    user_metadata: dict[str, Any] | None = None
    lora_config: LoraConfig | None = None
    optimizer_config: dict[str, Any] | None = None
    type: Literal["create_model"] = "create_model"


class GetInfoRequest(msgspec.Struct, forbid_unknown_fields=True):
    model_id: str
    type: Literal["get_info"] = "get_info"


class LoadWeightsRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    optimizer: bool
    model_id: str | None = None
    seq_id: int | None = None
    session_id: str | None = None
    model_seq_id: int | None = None
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None
    optimizer_config: dict[str, Any] | None = None
    weights_access_token: str | None = None
    type: Literal["load_weights"] = "load_weights"


class SaveWeightsExternalRequest(msgspec.Struct, forbid_unknown_fields=True):
    model_id: str
    path: str
    seq_id: int | None = None
    ttl_seconds: int | None = None
    age_encryption_recipients: list[str] | None = None
    type: Literal["save_weights_external"] = "save_weights_external"


class CopyWeightsRequest(msgspec.Struct, forbid_unknown_fields=True):
    source_path: str
    session_id: str | None = None
    model_seq_id: int | None = None
    destination_project_id: str | None = None
    ttl_seconds: int | None = None
    weights_access_token: str | None = None


class AssignProjectRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT sessions/{id}/project`` (the SDK's ``assign_session_project``)."""

    project_id: str


class UnloadModelRequest(msgspec.Struct, forbid_unknown_fields=True):
    model_id: str
    type: Literal["unload_model"] = "unload_model"


def _failed(message: str, category: str = "user") -> dict[str, Any]:
    return {"error": message, "category": category}


class Sessions:
    """The sessions and models of one server."""

    def __init__(self, state: ServerState, registry: Registry, futures: Futures) -> None:
        self.state = state
        self.registry = registry
        self.futures = futures
        self.lock = threading.Lock()
        self.sessions: dict[str, SessionRecord] = {}
        self.models: dict[str, ModelRecord] = {}
        self.counter = itertools.count(1)

    # -- registration ------------------------------------------------------------------------------

    def add_session(self, session_id: str | None = None, **fields: Any) -> SessionRecord:
        """Register a session (fields as ``SessionRecord``); a new id when ``session_id`` is None."""
        with self.lock:
            if session_id is None:
                session_id = self._new_session_id()
            fields.setdefault("created_at", time.time())
            record = self.sessions[session_id] = SessionRecord(session_id=session_id, **fields)
            return record

    def _new_session_id(self) -> str:
        while True:
            session_id = f"session-{next(self.counter):03d}"
            if session_id not in self.sessions:
                return session_id

    def _session(self, session_id: str) -> SessionRecord:
        with self.lock:
            record = self.sessions.get(session_id)
        if record is None:
            raise HTTPError(404, f"session {session_id!r} not found", "not_found")
        return record

    def _open_session(self, session_id: str) -> SessionRecord:
        record = self._session(session_id)
        if record.finished is not None:
            raise violation(400, f"session {session_id!r} is finished ({record.finished})")
        return record

    def _model(self, model_id: str) -> ModelRecord:
        with self.lock:
            model = self.models.get(model_id)
        if model is None:
            raise HTTPError(404, f"model {model_id!r} not found", "not_found")
        if model.unloaded:
            raise violation(400, f"model {model_id!r} is unloaded")
        return model

    def _new_model(
        self,
        session: SessionRecord,
        seq: int,
        base_model: str,
        lora_rank: int | None,
        optimizer_config: dict[str, Any] | None,
    ) -> ModelRecord:
        model_id = f"{session.session_id}:train:{seq}"
        with self.lock:
            model = self.models.get(model_id)
            if model is None:
                model = self.models[model_id] = ModelRecord(
                    model_id=model_id,
                    session_id=session.session_id,
                    model_seq_id=seq,
                    base_model=base_model,
                    lora_rank=lora_rank,
                    optimizer_config=optimizer_config or {"type": "adamw"},
                )
                session.training_run_ids.append(model_id)
        self.registry.add_run(
            model_id, base_model=base_model, lora_rank=lora_rank, is_lora=lora_rank is not None
        )
        return model

    def _check_base_model(self, base_model: str) -> None:
        if base_model not in self.state.supported_models:
            raise HTTPError(400, f"base model {base_model!r} is not supported", "invalid_request_error")

    # -- REST --------------------------------------------------------------------------------------

    ROUTES = (
        "create_session",
        "session_heartbeat",
        "sessions",
        "weights_info",
        "get_info",
        "create_model",
        "load_weights",
        "save_weights_external",
        "unload_model",
        "copy_weights",
    )

    def route(self, request: Request, parts: list[str]) -> None:
        """Answer a request whose path (after ``/api/v1``, split on ``/``) starts with one of ROUTES."""
        if parts[0] == "sessions":
            return self._sessions_route(request, parts)
        if len(parts) != 1:
            raise violation(404, f"no route for {request.command} {request.path}", "not_found")
        if request.command != "POST":
            raise method_not_allowed(request, ["POST"])
        handler = getattr(self, "_" + parts[0])
        handler(request)

    def _sessions_route(self, request: Request, parts: list[str]) -> None:
        method = request.command
        if len(parts) == 3 and parts[2] == "finish":
            if method != "POST":
                raise method_not_allowed(request, ["POST"])
            body = decode(request, FinishSessionRequest)
            record = self._session(parts[1])
            with self.lock:
                if record.finished is None:  # first wins
                    record.finished, record.finish_detail = body.reason.type, body.detail
            return request.send_empty(204)
        if len(parts) == 3 and parts[2] == "project":
            if method != "PUT":
                raise method_not_allowed(request, ["PUT"])
            project = decode(request, AssignProjectRequest).project_id
            if not project:
                raise HTTPError(400, "project_id is required", "invalid_request_error")
            record = self._session(parts[1])
            if record.owner != OWNER:
                raise HTTPError(404, f"session {parts[1]!r} not found", "not_found")
            with self.lock:
                record.project_id = project
            return request.send_empty(204)
        if len(parts) > 2:
            raise violation(404, f"no route for {method} {request.path}", "not_found")
        if method != "GET":
            raise method_not_allowed(request, ["GET"])
        scope = query_choice(request, "access_scope", SCOPES, "owned")
        if len(parts) == 1:
            limit = page_size(self.state, query_int(request, "limit", 20))
            offset = query_int(request, "offset", 0)
            with self.lock:
                ids = [s for s, r in self.sessions.items() if scope == "accessible" or r.owner == OWNER]
            return request.send_json(200, {"sessions": ids[offset : offset + limit]})
        record = self._session(parts[1])
        if scope == "owned" and record.owner != OWNER:
            raise HTTPError(404, f"session {parts[1]!r} not found", "not_found")
        with self.lock:
            return request.send_json(
                200,
                {
                    "training_run_ids": list(record.training_run_ids),
                    "sampler_ids": list(record.sampler_ids),
                    "user_metadata": record.user_metadata,
                    "display_name": record.display_name,
                },
            )

    def _create_session(self, request: Request) -> None:
        body = decode(request, CreateSessionRequest)
        record = self.add_session(
            tags=list(body.tags),
            user_metadata=body.user_metadata,
            sdk_version=body.sdk_version,
            project_id=body.project_id,
            display_name=body.display_name,
        )
        request.send_json(
            200,
            {
                "type": "create_session",
                "info_message": None,
                "warning_message": None,
                "error_message": None,
                "session_id": record.session_id,
            },
        )

    def _session_heartbeat(self, request: Request) -> None:
        body = decode(request, SessionHeartbeatRequest)
        record = self._open_session(body.session_id)
        with self.lock:
            record.heartbeats += 1
        request.send_json(200, {"type": "session_heartbeat"})

    def _weights_info(self, request: Request) -> None:
        body = decode(request, WeightsInfoRequest)
        try:
            run_id, _, _ = parse_tinker_path(body.tinker_path)
        except ValueError as error:
            raise violation(400, str(error)) from None
        if self.registry.find(body.tinker_path) is None:
            raise HTTPError(404, f"checkpoint {body.tinker_path} not found", "not_found")
        with self.registry.lock:
            run = self.registry.runs[run_id]
            info = {
                "base_model": run.base_model,
                "optimizer_config": {"type": "adamw"},
                "is_lora": run.is_lora,
                "lora_rank": run.lora_rank,
                "train_unembed": True if run.is_lora else None,
                "train_mlp": True if run.is_lora else None,
                "train_attn": True if run.is_lora else None,
            }
        request.send_json(200, info)

    def _get_info(self, request: Request) -> None:
        body = decode(request, GetInfoRequest)
        with self.lock:
            model = self.models.get(body.model_id)
        if model is None:
            raise HTTPError(404, f"model {body.model_id!r} not found", "not_found")
        arch = "qwen3" if "qwen" in model.base_model.lower() else "llama"
        request.send_json(
            200,
            {
                "type": "get_info",
                "model_data": {
                    "arch": arch,
                    "model_name": model.base_model,
                    "tokenizer_id": model.base_model,
                },
                "model_id": model.model_id,
                "optimizer_config": model.optimizer_config,
                "is_lora": model.lora_rank is not None,
                "lora_rank": model.lora_rank,
                "model_name": model.base_model,
            },
        )

    def _create_model(self, request: Request) -> None:
        body = decode(request, CreateModelRequest)
        session = self._open_session(body.session_id)
        self._check_base_model(body.base_model)
        rank = body.lora_config.rank if body.lora_config is not None else None
        model = self._new_model(session, body.model_seq_id, body.base_model, rank, body.optimizer_config)
        result = {"model_id": model.model_id, "type": "create_model"}
        request_id = self.futures.create("create_model", result)
        request.send_json(200, {"request_id": request_id, "model_id": model.model_id})

    def _load_weights(self, request: Request) -> None:
        body = decode(request, LoadWeightsRequest)
        by_model = body.model_id is not None
        by_session = body.session_id is not None or body.model_seq_id is not None
        if by_model == by_session or (by_session and (body.session_id is None or body.model_seq_id is None)):
            raise violation(
                422,
                "load_weights needs either model_id (after create_model) or session_id and model_seq_id",
                "validation_error",
            )
        try:
            _, kind, _ = parse_tinker_path(body.path)
        except ValueError as error:
            raise violation(400, f"load_weights path: {error}") from None
        if kind != "weights":
            raise violation(
                400, f"load_weights loads training weights (tinker://RUN/weights/NAME), not {body.path}"
            )
        source = self.registry.find(body.path)
        if body.model_id is not None:
            model = self._model(body.model_id)
        else:
            assert body.session_id is not None and body.model_seq_id is not None
            session = self._open_session(body.session_id)
            base_model = body.base_model
            lora_rank: int | None = 32
            if source is not None:
                with self.registry.lock:
                    run = self.registry.runs[source.run]
                base_model, lora_rank = base_model or run.base_model, run.lora_rank
            model = self._new_model(
                session,
                body.model_seq_id,
                base_model or self.registry.default_base_model(),
                lora_rank,
                body.optimizer_config,
            )
        path, model_id = body.path, model.model_id

        def load() -> dict[str, Any]:
            if source is None:
                return _failed(f"checkpoint {path} not found")
            with self.lock:
                model.loaded_path = path
            return {"path": path, "model_id": model_id, "type": "load_weights"}

        request_id = self.futures.create("load_weights", load)
        request.send_json(200, {"request_id": request_id, "model_id": model_id})

    def _save_weights_external(self, request: Request) -> None:
        body = decode(request, SaveWeightsExternalRequest)
        name = body.path
        if not name or "/" in name or name.startswith("tinker:"):
            raise violation(400, f"save_weights_external path is a plain name, not {name!r}")
        ttl = body.ttl_seconds
        if ttl is not None and not EXPORT_TTL_MIN <= ttl <= EXPORT_TTL_MAX:
            raise HTTPError(
                400,
                f"ttl_seconds must be between {EXPORT_TTL_MIN} and {EXPORT_TTL_MAX}",
                "invalid_request_error",
            )
        model = self._model(body.model_id)
        registry = self.registry

        def export() -> dict[str, Any]:
            source = registry.find(model.loaded_path) if model.loaded_path else None
            if source is not None:
                seed, size, n_files = source.seed, source.size, source.n_files
            else:  # fresh weights: content from the model id
                seed, size, n_files = zlib.crc32(model.model_id.encode()), 1 << 20, 4
            now = time.time()
            checkpoint = registry.add(
                f"tinker://{model.model_id}/external_weights/{name}",
                size=size,
                seed=seed,
                n_files=n_files,
                created=now,
                expires_at=None if ttl is None else now + ttl,
            )
            with self.lock:
                model.exports.append(checkpoint.tinker_path)
            return {
                "path": checkpoint.tinker_path,
                "size_bytes": checkpoint.size,
                "type": "save_weights_external",
            }

        request_id = self.futures.create("save_weights_external", export)
        request.send_json(200, {"request_id": request_id, "model_id": model.model_id})

    def _copy_weights(self, request: Request) -> None:
        """A copy of a checkpoint in a new run that cannot be trained on (direct, not a future)."""
        body = decode(request, CopyWeightsRequest)
        by_session = body.session_id is not None and body.model_seq_id is not None
        if by_session == (body.destination_project_id is not None):
            raise violation(
                422,
                "copy_weights needs destination_project_id, or session_id and model_seq_id",
                "validation_error",
            )
        try:
            _, kind, name = parse_tinker_path(body.source_path)
        except ValueError as error:
            raise violation(400, f"copy_weights source_path: {error}") from None
        ttl = body.ttl_seconds
        if ttl is not None and not EXPORT_TTL_MIN <= ttl <= EXPORT_TTL_MAX:
            raise HTTPError(
                400,
                f"ttl_seconds must be between {EXPORT_TTL_MIN} and {EXPORT_TTL_MAX}",
                "invalid_request_error",
            )
        source = self.registry.find(body.source_path)
        if source is None:
            raise HTTPError(404, f"checkpoint {body.source_path} not found", "not_found")
        with self.lock:
            run_id = f"copy-{next(self.counter):03d}"
        with self.registry.lock:
            base = self.registry.runs[source.run]
            base_model, lora_rank = base.base_model, base.lora_rank
        self.registry.add_run(run_id, base_model=base_model, lora_rank=lora_rank)
        now = time.time()
        copy = self.registry.add(
            f"tinker://{run_id}/{kind}/{name}",
            size=source.size,
            seed=source.seed,
            n_files=source.n_files,
            created=now,
            expires_at=None if ttl is None else now + ttl,
        )
        request.send_json(200, {"tinker_path": copy.tinker_path})

    def _unload_model(self, request: Request) -> None:
        body = decode(request, UnloadModelRequest)
        with self.lock:
            model = self.models.get(body.model_id)
        if model is None:
            raise HTTPError(404, f"model {body.model_id!r} not found", "not_found")

        def unload() -> dict[str, Any]:
            with self.lock:
                model.unloaded = True
            return {"model_id": model.model_id, "type": "unload_model"}

        request_id = self.futures.create("unload_model", unload)
        request.send_json(200, {"request_id": request_id, "model_id": model.model_id})
