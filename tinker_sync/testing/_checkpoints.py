"""Training runs and checkpoints: their registry, REST routes, archives and signed download URLs.

Routes (paths relative to ``/api/v1``): ``GET training_runs``, ``GET training_runs/{run}``,
``GET training_runs/{run}/checkpoints``, ``GET checkpoints`` and, under
``training_runs/{run}/checkpoints/{kind}/{name}``: ``DELETE``, ``POST|DELETE publish``,
``PUT ttl``, ``GET archive``, ``GET external_weights_urls``. Signed URLs
(``/signed/<token>/...``) serve the archive and the external-weights files.

Rules: JSON shapes are the SDK's ``TrainingRun``, ``Checkpoint``, ``Cursor``; a
run owned by someone else (``owner`` other than ``OWNER``) is listed only with
``access_scope=accessible``; a missing run or checkpoint is a plain 404, a
malformed path or query a violation.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Hashable
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote

import msgspec

from . import _files
from ._types import HTTPError, Request, ServerState
from ._validate import decode, method_not_allowed, page_size, query_choice, query_int, violation

__all__ = ["KINDS", "OWNER", "Checkpoint", "Registry", "Run", "iso"]

KINDS = ("weights", "sampler_weights", "external_weights")
CHECKPOINT_TYPES = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}
OWNER = "mock-user"  # the owner of the API key's runs
SCOPES = ("owned", "accessible")
ARCHIVE_MODES = ("archive", "export", 404, 405, 501)


def iso(ts: float) -> str:
    """``ts`` as an ISO 8601 UTC time with microseconds and a Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Checkpoint:
    """One checkpoint and its content: ``archives.checkpoint_files(seed, size, n_files)``."""

    def __init__(self, run: str, kind: str, name: str, **options: Any) -> None:
        self.run, self.kind, self.name = run, kind, name
        self.size: int = options["size"]
        self.listed_size: int | None = options.get("size_bytes")  # what the listing claims, if not size
        self.seed: int = options.get("seed", 0)
        self.n_files: int = options.get("n_files", 4)
        self.compression: str | None = options.get("compression")
        self.prepare_seconds: float = options.get("prepare_seconds", 0.0)
        self.prepare_status: int = options.get("prepare_status", 503)
        self.public: bool = options.get("public", False)
        self.hostile: str | None = options.get("hostile")
        self.user_metadata: dict[str, str] | None = options.get("user_metadata")
        self.time: float = options.get("created") or time.time()
        self.expires_at: float | None = options.get("expires_at")
        self.prepare_started: float | None = None
        self.archive_path: str | None = None
        self.archive_size = 0
        self.token = secrets.token_hex(6)
        self.lock = threading.Lock()

    @property
    def checkpoint_id(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def tinker_path(self) -> str:
        return f"tinker://{self.run}/{self.kind}/{self.name}"

    def files(self) -> list[tuple[str, int, int]]:
        """``(relative path, size, seed)`` of each file, as in the archive."""
        from . import archives  # lazy: archives imports tarfile

        return archives.checkpoint_files(self.seed, self.size, self.n_files)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "checkpoint_type": CHECKPOINT_TYPES[self.kind],
            "tinker_path": self.tinker_path,
            "training_run_id": self.run,
            "size_bytes": self.size if self.listed_size is None else self.listed_size,
            "public": self.public,
            "time": iso(self.time),
            "expires_at": None if self.expires_at is None else iso(self.expires_at),
            "user_metadata": self.user_metadata,
        }


class Run(msgspec.Struct, kw_only=True):
    """One training run (the SDK's TrainingRun, less the last checkpoints, which are derived)."""

    training_run_id: str
    base_model: str
    model_owner: str = OWNER
    is_lora: bool = True
    lora_rank: int | None = 32
    corrupted: bool = False
    last_request_time: float = 0.0
    user_metadata: dict[str, str] | None = None


class TtlRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT .../ttl``."""

    ttl_seconds: int | None


TTL_MIN, TTL_MAX = 3600, 10 * 366 * 86400


def parse_tinker_path(tinker_path: str) -> tuple[str, str, str]:
    """``(run, kind, name)`` of ``tinker://RUN/KIND/NAME``; ValueError otherwise."""
    if not tinker_path.startswith("tinker://"):
        raise ValueError(f"not a tinker:// path: {tinker_path!r}")
    parts = tinker_path[len("tinker://") :].split("/")
    if len(parts) != 3 or parts[1] not in KINDS or not parts[0] or not parts[2]:
        raise ValueError(f"expected tinker://RUN/KIND/NAME with KIND in {KINDS}: {tinker_path!r}")
    return parts[0], parts[1], parts[2]


class Registry:
    """The training runs and checkpoints of one server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.lock = threading.Lock()
        self.secret = secrets.token_bytes(32)
        self.runs: dict[str, Run] = {}
        self.checkpoints: dict[tuple[str, str, str], Checkpoint] = {}
        self.deleted: list[str] = []
        self.bodies: dict[str, _files.Body] = {}  # signed token -> a body that is no checkpoint's (traces)

    # -- registration ------------------------------------------------------------------------------

    def add_run(self, run_id: str, **fields: Any) -> Run:
        """Register (or update) a training run; fields as ``Run``."""
        with self.lock:
            run = self.runs.get(run_id)
            if run is None:
                fields.setdefault("base_model", self.default_base_model())
                fields.setdefault("last_request_time", time.time())
                run = self.runs[run_id] = Run(training_run_id=run_id, **fields)
            else:
                for name, value in fields.items():
                    setattr(run, name, value)
            return run

    def default_base_model(self) -> str:
        models = self.state.supported_models
        return models[0] if models else "base"

    def add(self, tinker_path: str, **options: Any) -> Checkpoint:
        """Register a checkpoint (and its run, if new); options as ``Checkpoint``."""
        run, kind, name = parse_tinker_path(tinker_path)
        checkpoint = Checkpoint(run, kind, name, **options)
        with self.lock:
            known = run in self.runs
        if not known:
            self.add_run(run, last_request_time=checkpoint.time)
        with self.lock:
            self.checkpoints[(run, kind, name)] = checkpoint
            info = self.runs[run]
            info.last_request_time = max(info.last_request_time, checkpoint.time)
        return checkpoint

    def find(self, tinker_path: str) -> Checkpoint | None:
        """The checkpoint at ``tinker_path``, or None."""
        try:
            key = parse_tinker_path(tinker_path)
        except ValueError:
            return None
        with self.lock:
            return self.checkpoints.get(key)

    def run_checkpoints(self, run_id: str) -> list[Checkpoint]:
        """The checkpoints of ``run_id`` (none for an unknown run)."""
        with self.lock:
            return [ck for (run, _, _), ck in self.checkpoints.items() if run == run_id]

    # -- JSON --------------------------------------------------------------------------------------

    def run_json(self, run_id: str) -> dict[str, Any]:
        """The SDK's TrainingRun of ``run_id`` (call with the lock held)."""
        run = self.runs[run_id]
        info = msgspec.structs.asdict(run)
        info["last_request_time"] = iso(run.last_request_time)
        last: dict[str, Checkpoint | None] = {"weights": None, "sampler_weights": None}
        for (r, kind, _), ck in self.checkpoints.items():
            if r == run_id and kind in last:
                previous = last[kind]
                if previous is None or ck.time >= previous.time:
                    last[kind] = ck
        weights, sampler = last["weights"], last["sampler_weights"]
        info["last_checkpoint"] = weights.to_json() if weights else None
        info["last_sampler_checkpoint"] = sampler.to_json() if sampler else None
        return info

    def _visible(self, run_id: str, scope: str) -> bool:
        run = self.runs.get(run_id)
        return run is not None and (scope == "accessible" or run.model_owner == OWNER)

    # -- REST --------------------------------------------------------------------------------------

    def route(self, request: Request, parts: list[str]) -> None:
        """Answer a request whose path (after ``/api/v1``, unquoted, split on ``/``) starts with
        ``training_runs`` or is ``checkpoints``."""
        method = request.command
        if parts == ["training_runs"]:
            if method != "GET":
                raise method_not_allowed(request, ["GET"])
            limit = page_size(self.state, query_int(request, "limit", 20))
            offset = query_int(request, "offset", 0)
            scope = query_choice(request, "access_scope", SCOPES, "owned")
            with self.lock:
                runs = [self.run_json(r) for r in self.runs if self._visible(r, scope)]
            return request.send_json(
                200,
                {
                    "training_runs": runs[offset : offset + limit],
                    "cursor": {"offset": offset, "limit": limit, "total_count": len(runs)},
                },
            )
        if parts == ["checkpoints"]:
            if method != "GET":
                raise method_not_allowed(request, ["GET"])
            limit = page_size(self.state, query_int(request, "limit", 100))
            offset = query_int(request, "offset", 0)
            with self.lock:
                owned = [c for c in self.checkpoints.values() if self._visible(c.run, "owned")]
                items = sorted(owned, key=lambda c: c.time, reverse=True)
                checkpoints = [c.to_json() for c in items]
            return request.send_json(
                200,
                {
                    "checkpoints": checkpoints[offset : offset + limit],
                    "cursor": {"offset": offset, "limit": limit, "total_count": len(checkpoints)},
                },
            )
        run = parts[1]
        if len(parts) == 2:
            if method != "GET":
                raise method_not_allowed(request, ["GET"])
            scope = query_choice(request, "access_scope", SCOPES, "owned")
            with self.lock:
                if self._visible(run, scope):
                    return request.send_json(200, self.run_json(run))
            raise HTTPError(404, f"training run {run!r} not found", "not_found")
        if parts[2] != "checkpoints":
            raise violation(404, f"no route for {method} {request.path}", "not_found")
        if len(parts) == 3:
            if method != "GET":
                raise method_not_allowed(request, ["GET"])
            with self.lock:
                if not self._visible(run, "accessible"):
                    raise HTTPError(404, f"training run {run!r} not found", "not_found")
                listed = [c.to_json() for (r, _, _), c in self.checkpoints.items() if r == run]
            return request.send_json(200, {"checkpoints": listed})
        if len(parts) < 5 or parts[3] not in KINDS or len(parts) > 6:
            raise violation(
                404,
                f"no route for {method} {request.path}: a checkpoint id is KIND/NAME with KIND in "
                f"{', '.join(KINDS)}",
                "not_found",
            )
        return self._checkpoint_route(request, run, parts[3], parts[4], parts[5:])

    def _checkpoint_route(self, request: Request, run: str, kind: str, name: str, rest: list[str]) -> None:
        method = request.command
        allowed = {
            (): ["DELETE"],
            ("publish",): ["POST", "DELETE"],
            ("ttl",): ["PUT"],
            ("archive",): ["GET"],
            ("external_weights_urls",): ["GET"],
        }.get(tuple(rest))
        if allowed is None:
            raise violation(404, f"no route for {method} {request.path}", "not_found")
        if method not in allowed:
            raise method_not_allowed(request, allowed)
        ttl = decode(request, TtlRequest) if rest == ["ttl"] else None
        with self.lock:
            checkpoint = self.checkpoints.get((run, kind, name))
        if checkpoint is None:
            raise HTTPError(404, f"checkpoint tinker://{run}/{kind}/{name} not found", "not_found")
        if not rest:
            with self.lock:
                if self.checkpoints.pop((run, kind, name), None) is not None:
                    self.deleted.append(checkpoint.tinker_path)
            return request.send_empty(204)
        if rest == ["publish"]:
            want = method == "POST"
            with checkpoint.lock:
                if checkpoint.public == want:
                    state = "public" if want else "private"
                    raise HTTPError(409, f"checkpoint is already {state}", "conflict")
                checkpoint.public = want
            return request.send_empty(204)
        if ttl is not None:
            seconds = ttl.ttl_seconds
            if seconds is not None and not TTL_MIN <= seconds <= TTL_MAX:
                raise HTTPError(
                    400,
                    f"ttl_seconds must be between {TTL_MIN} and {TTL_MAX}, or null",
                    "invalid_request_error",
                )
            checkpoint.expires_at = None if seconds is None else time.time() + seconds
            return request.send_empty(204)
        if rest == ["archive"]:
            return self._archive(request, checkpoint)
        return self._external_urls(request, checkpoint)

    # -- archives ----------------------------------------------------------------------------------

    def _archive(self, request: Request, checkpoint: Checkpoint) -> None:
        mode = self.state.archive_mode
        if mode not in ARCHIVE_MODES:
            raise ValueError(f"archive_mode must be one of {ARCHIVE_MODES}, got {mode!r}")
        if mode != "archive":
            status = 404 if mode == "export" else int(mode)
            raise HTTPError(
                status,
                "checkpoint archives are not served: export the checkpoint as external weights",
                "not_found",
            )
        now = time.monotonic()
        with checkpoint.lock:
            if checkpoint.prepare_started is None:
                checkpoint.prepare_started = now
            preparing = now - checkpoint.prepare_started < checkpoint.prepare_seconds
        if preparing:
            raise HTTPError(
                checkpoint.prepare_status,
                "archive is being prepared, try again",
                "try_again",
                [("Retry-After", "1")],
            )
        self._ensure_archive(checkpoint)
        url, expires = self.sign(f"/signed/{checkpoint.token}/archive")
        request.send_empty(302, [("Location", url), ("Expires", formatdate(expires, usegmt=True))])

    def _ensure_archive(self, checkpoint: Checkpoint) -> str:
        with checkpoint.lock:
            if checkpoint.archive_path is not None:
                return checkpoint.archive_path
            from . import archives  # lazy: imports tarfile

            suffix = f".tar.{checkpoint.compression}" if checkpoint.compression else ".tar"
            path = os.path.join(self.state.tmpdir(), f"{checkpoint.token}{suffix}")
            with open(path, "wb") as f:
                if checkpoint.hostile is not None:
                    f.write(archives.HOSTILE_ARCHIVES[checkpoint.hostile]())
                else:
                    archives.write_checkpoint_tar(
                        f,
                        checkpoint.seed,
                        checkpoint.size,
                        n_files=checkpoint.n_files,
                        compression=checkpoint.compression,
                    )
            checkpoint.archive_size = os.path.getsize(path)
            if checkpoint.hostile is not None:
                checkpoint.size = checkpoint.archive_size
            checkpoint.archive_path = path
            return path

    def _external_urls(self, request: Request, checkpoint: Checkpoint) -> None:
        if checkpoint.kind != "external_weights":
            raise violation(
                400,
                f"external_weights_urls only serves external_weights checkpoints, not {checkpoint.tinker_path}",
            )
        urls = {}
        expires = 0
        for rel, _size, _seed in checkpoint.files():
            urls[rel], expires = self.sign(f"/signed/{checkpoint.token}/files/{quote(rel)}")
        request.send_json(200, {"urls": urls, "expires": iso(expires)})

    # -- signed URLs -------------------------------------------------------------------------------

    def _sig(self, path: str, expires: int, nonce: str) -> str:
        return hmac.new(self.secret, f"{path}\n{expires}\n{nonce}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str) -> tuple[str, int]:
        """An absolute signed URL for ``path`` and its expiry (unix seconds, rounded up).

        Each signing differs (a nonce), as a real signer's would, even within one second.
        """
        expires = math.ceil(time.time() + self.state.signed_url_ttl)
        nonce = secrets.token_hex(4)
        return (
            f"{self.state.url}{path}?expires={expires}&n={nonce}&sig={self._sig(path, expires, nonce)}",
            expires,
        )

    def sign_body(self, token: str, body: _files.Body, name: str) -> tuple[str, int]:
        """A signed URL (and its expiry) serving ``body`` as ``/signed/<token>/body/<name>``."""
        with self.lock:
            self.bodies[token] = body
        return self.sign(f"/signed/{token}/body/{quote(name)}")

    def _resolve(self, path: str) -> _files.Body:
        parts = path.split("/", 3)  # "", "signed", token, rest
        if len(parts) < 4:
            raise HTTPError(404, "no such signed object", "not_found")
        token, rest = parts[2], parts[3]
        with self.lock:
            body = self.bodies.get(token)
        if body is not None and rest.startswith("body/"):
            return body
        with self.lock:
            found = [c for c in self.checkpoints.values() if c.token == token]
        if not found:
            raise HTTPError(404, "no such signed object", "not_found")
        checkpoint = found[0]
        if rest == "archive":
            archive = self._ensure_archive(checkpoint)
            stem = f"a{checkpoint.seed}-{checkpoint.archive_size}"
            return _files.FileBody(("archive", token), archive, checkpoint.archive_size, stem)
        if rest.startswith("files/"):
            rel = unquote(rest[len("files/") :])
            for name, size, seed in checkpoint.files():
                if name == rel:
                    return _files.GeneratedBody(("file", token, rel), seed, size)
        raise HTTPError(404, "no such signed object", "not_found")

    def signed_key(self, path: str) -> Hashable | None:
        """The version key of the signed object at ``path`` (for Fault.change_etag), or None."""
        try:
            return self._resolve(path).key
        except HTTPError:
            return None

    def serve_signed(self, request: Request) -> None:
        """``GET|HEAD /signed/<token>/archive`` and ``/signed/<token>/files/<path>``."""
        path = request.path
        for header in ("x-api-key", "authorization"):
            if request.headers.get(header) is not None:
                name = "X-API-Key" if header == "x-api-key" else "Authorization"
                raise HTTPError(
                    400,
                    f"{name} sent to signed URL {request.command} {path}",
                    "credentials_on_signed_url",
                    violation=True,
                )
        query = request.query
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            raise HTTPError(403, "missing or malformed expires", "signature_invalid") from None
        if not hmac.compare_digest(self._sig(path, expires, query.get("n", "")), query.get("sig", "")):
            raise HTTPError(403, "signature does not match", "signature_invalid")
        if time.time() > expires:
            raise HTTPError(403, "signed URL expired", "expired")
        _files.serve_body(request, self._resolve(path), checksums=list(self.state.signed_checksums))
