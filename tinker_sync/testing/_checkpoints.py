"""Training runs and checkpoints: the REST routes, archive preparation and signed download URLs."""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from ._server import HTTPError

KINDS = ("weights", "sampler_weights", "external_weights")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Checkpoint:
    def __init__(self, run: str, kind: str, name: str, **options: Any):
        self.run, self.kind, self.name = run, kind, name
        self.size: int = options["size"]
        self.seed: int = options.get("seed", 0)
        self.n_files: int = options.get("n_files", 4)
        self.compression: str | None = options.get("compression")
        self.prepare_seconds: float = options.get("prepare_seconds", 0.0)
        self.prepare_status: int = options.get("prepare_status", 503)
        self.public: bool = options.get("public", False)
        self.hostile: str | None = options.get("hostile")
        self.time = time.time()
        self.ttl_seconds: int | None = None
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

    def to_json(self) -> dict[str, Any]:
        expires = None if self.ttl_seconds is None else _iso(self.time + self.ttl_seconds)
        return {
            "checkpoint_id": self.checkpoint_id,
            "checkpoint_type": "sampler" if self.kind == "sampler_weights" else "training",
            "tinker_path": self.tinker_path,
            "training_run_id": self.run,
            "size_bytes": self.size,
            "public": self.public,
            "time": _iso(self.time),
            "expires_at": expires,
        }


class Registry:
    def __init__(self, mock: Any):
        self.mock = mock
        self.lock = threading.Lock()
        self.secret = secrets.token_bytes(32)
        self.runs: dict[str, dict[str, Any]] = {}
        self.checkpoints: dict[tuple[str, str, str], Checkpoint] = {}

    # -- registration ------------------------------------------------------------------------------

    def add(self, tinker_path: str, **options: Any) -> dict[str, Any]:
        if not tinker_path.startswith("tinker://"):
            raise ValueError(f"not a tinker:// path: {tinker_path!r}")
        parts = tinker_path[len("tinker://") :].split("/")
        if len(parts) != 3 or parts[1] not in KINDS or not parts[0] or not parts[2]:
            raise ValueError(f"expected tinker://RUN/KIND/NAME with KIND in {KINDS}: {tinker_path!r}")
        run, kind, name = parts
        checkpoint = Checkpoint(run, kind, name, **options)
        with self.lock:
            self.runs.setdefault(
                run,
                {
                    "training_run_id": run,
                    "base_model": self.mock.supported_models[0] if self.mock.supported_models else "base",
                    "model_owner": "mock-user",
                    "is_lora": True,
                    "lora_rank": 32,
                    "corrupted": False,
                    "last_request_time": _iso(checkpoint.time),
                    "user_metadata": None,
                },
            )
            self.checkpoints[(run, kind, name)] = checkpoint
        return checkpoint.to_json()

    def _run_json(self, run: str) -> dict[str, Any]:
        info = dict(self.runs[run])
        last = {"weights": None, "sampler_weights": None}
        for (r, kind, _), ck in self.checkpoints.items():
            if r == run and kind in last and (last[kind] is None or ck.time >= last[kind].time):
                last[kind] = ck
        info["last_checkpoint"] = last["weights"].to_json() if last["weights"] else None
        info["last_sampler_checkpoint"] = (
            last["sampler_weights"].to_json() if last["sampler_weights"] else None
        )
        return info

    def _get(self, run: str, kind: str, name: str) -> Checkpoint:
        with self.lock:
            checkpoint = self.checkpoints.get((run, kind, name))
        if checkpoint is None:
            raise HTTPError(404, f"checkpoint tinker://{run}/{kind}/{name} not found", "not_found")
        return checkpoint

    # -- REST --------------------------------------------------------------------------------------

    def route(self, handler: Any, method: str, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        query = handler.query
        if parts == ["training_runs"] and method == "GET":
            offset, limit = _paging(query, 20)
            with self.lock:
                runs = [self._run_json(r) for r in self.runs]
            return handler.send_json(
                200,
                {
                    "training_runs": runs[offset : offset + limit],
                    "cursor": {"offset": offset, "limit": limit, "total_count": len(runs)},
                },
            )
        if parts == ["checkpoints"] and method == "GET":
            offset, limit = _paging(query, 100)
            with self.lock:
                items = sorted(self.checkpoints.values(), key=lambda c: c.time, reverse=True)
                checkpoints = [c.to_json() for c in items]
            return handler.send_json(
                200,
                {
                    "checkpoints": checkpoints[offset : offset + limit],
                    "cursor": {"offset": offset, "limit": limit, "total_count": len(checkpoints)},
                },
            )
        if len(parts) >= 2 and parts[0] == "training_runs":
            run = parts[1]
            with self.lock:
                known = run in self.runs
            if not known:
                raise HTTPError(404, f"training run {run!r} not found", "not_found")
            if len(parts) == 2 and method == "GET":
                with self.lock:
                    return handler.send_json(200, self._run_json(run))
            if len(parts) == 3 and parts[2] == "checkpoints" and method == "GET":
                with self.lock:
                    items = [c.to_json() for (r, _, _), c in self.checkpoints.items() if r == run]
                return handler.send_json(200, {"checkpoints": items})
            if len(parts) >= 5 and parts[2] == "checkpoints":
                kind, name, rest = parts[3], parts[4], parts[5:]
                return self._checkpoint_route(handler, method, run, kind, name, rest)
        raise HTTPError(404, f"no route for {method} /api/v1{path}", "not_found")

    def _checkpoint_route(
        self, handler: Any, method: str, run: str, kind: str, name: str, rest: list[str]
    ) -> None:
        checkpoint = self._get(run, kind, name)
        if not rest and method == "DELETE":
            with self.lock:
                self.checkpoints.pop((run, kind, name), None)
            return handler.send_empty(204)
        if rest == ["publish"] and method in ("POST", "DELETE"):
            want = method == "POST"
            with checkpoint.lock:
                if checkpoint.public == want:
                    state = "public" if want else "private"
                    raise HTTPError(409, f"checkpoint is already {state}", "conflict")
                checkpoint.public = want
            return handler.send_empty(204)
        if rest == ["ttl"] and method == "PUT":
            ttl = handler.json_body().get("ttl_seconds")
            if ttl is not None and not isinstance(ttl, int):
                raise HTTPError(400, "ttl_seconds must be an integer or null", "invalid_request_error")
            checkpoint.ttl_seconds = ttl
            return handler.send_empty(204)
        if rest == ["archive"] and method == "GET":
            return self._archive(handler, checkpoint)
        if rest == ["external_weights_urls"] and method == "GET":
            return self._external_urls(handler, checkpoint)
        raise HTTPError(404, f"no route for {method} {checkpoint.tinker_path}/{'/'.join(rest)}", "not_found")

    # -- archives ----------------------------------------------------------------------------------

    def _archive(self, handler: Any, checkpoint: Checkpoint) -> None:
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
        handler.send_empty(302, [("Location", url), ("Expires", formatdate(expires, usegmt=True))])

    def _ensure_archive(self, checkpoint: Checkpoint) -> str:
        with checkpoint.lock:
            if checkpoint.archive_path is not None:
                return checkpoint.archive_path
            from . import archives  # lazy: imports tarfile

            suffix = f".tar.{checkpoint.compression}" if checkpoint.compression else ".tar"
            path = os.path.join(self.mock.tmpdir(), f"{checkpoint.token}{suffix}")
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

    def _external_urls(self, handler: Any, checkpoint: Checkpoint) -> None:
        from . import archives

        urls = {}
        expires = 0
        for rel, _size, _seed in archives.checkpoint_files(
            checkpoint.seed, checkpoint.size, checkpoint.n_files
        ):
            urls[rel], expires = self.sign(f"/signed/{checkpoint.token}/files/{quote(rel)}")
        handler.send_json(200, {"urls": urls, "expires": _iso(expires)})

    # -- signed URLs -------------------------------------------------------------------------------

    def _sig(self, path: str, expires: int, nonce: str) -> str:
        return hmac.new(self.secret, f"{path}\n{expires}\n{nonce}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str) -> tuple[str, int]:
        """An absolute signed URL for ``path`` and its expiry (unix seconds, rounded up).

        Each signing differs (a nonce), as a real signer's would, even within one second.
        """
        expires = math.ceil(time.time() + self.mock.signed_url_ttl)
        nonce = secrets.token_hex(4)
        return (
            f"{self.mock.url}{path}?expires={expires}&n={nonce}&sig={self._sig(path, expires, nonce)}",
            expires,
        )

    def _resolve(self, path: str) -> tuple[Checkpoint, Any]:
        from urllib.parse import unquote

        from . import _files

        parts = path.split("/", 3)  # "", "signed", token, rest
        if len(parts) < 4:
            raise HTTPError(404, "no such signed object", "not_found")
        token, rest = parts[2], parts[3]
        with self.lock:
            found = [c for c in self.checkpoints.values() if c.token == token]
        if not found:
            raise HTTPError(404, "no such signed object", "not_found")
        checkpoint = found[0]
        if rest == "archive":
            archive = self._ensure_archive(checkpoint)
            stem = f"a{checkpoint.seed}-{checkpoint.archive_size}"
            return checkpoint, _files.FileBody(("archive", token), archive, checkpoint.archive_size, stem)
        if rest.startswith("files/"):
            from . import archives

            rel = unquote(rest[len("files/") :])
            for name, size, seed in archives.checkpoint_files(
                checkpoint.seed, checkpoint.size, checkpoint.n_files
            ):
                if name == rel:
                    return checkpoint, _files.GeneratedBody(("file", token, rel), seed, size)
        raise HTTPError(404, "no such signed object", "not_found")

    def signed_key(self, path: str) -> Any:
        try:
            return self._resolve(path)[1].key
        except HTTPError:
            return None

    def serve_signed(self, handler: Any, path: str) -> None:
        from . import _files

        for header in ("X-API-Key", "Authorization"):
            if handler.headers.get(header) is not None:
                message = f"{header} sent to signed URL {handler.command} {path}"
                with self.mock._lock:
                    self.mock.violations.append(message)
                raise HTTPError(400, message, "credentials_on_signed_url")
        query = handler.query
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            raise HTTPError(403, "missing or malformed expires", "signature_invalid") from None
        if not hmac.compare_digest(self._sig(path, expires, query.get("n", "")), query.get("sig", "")):
            raise HTTPError(403, "signature does not match", "signature_invalid")
        if time.time() > expires:
            raise HTTPError(403, "signed URL expired", "expired")
        _, body = self._resolve(path)
        _files.serve_body(handler, body, checksums=list(self.mock.signed_checksums))


def _paging(query: dict[str, str], default_limit: int) -> tuple[int, int]:
    try:
        return max(0, int(query.get("offset", 0))), max(0, int(query.get("limit", default_limit)))
    except ValueError:
        raise HTTPError(400, "limit and offset must be integers", "invalid_request_error") from None
