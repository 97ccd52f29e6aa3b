"""The export flow: a training checkpoint exported as temporary external weights, for servers that
no longer serve ``.../archive`` (what the official SDK 0.38 does to download ``weights``).

``weights_info`` -> ``create_session`` -> ``create_model`` (future) -> ``load_weights`` (future)
-> ``save_weights_external`` (future) -> [the caller downloads the export] -> in ``finally``:
``DELETE`` the export, ``unload_model`` (future), ``sessions/{id}/finish``.

Rules:
1. ``weights_info`` comes first: a checkpoint that does not exist fails there,
   before any session or model is created on the server.
2. Every step of the export spends the download's one retry budget; each
   future waits at most ``prepare_timeout``.
3. Cleanup runs whatever happened (failure, Ctrl-C) and never masks the
   original error: each step is tried on its own, with its own small retry
   budget (the download's may be spent, or past its deadline), and a failure
   is reported, not raised. The export has a TTL, so one left behind expires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from .._base_client import BaseClient
from .._decode import decode_json
from .._exceptions import NotFoundError
from .._options import RequestOptions
from .._retry import RetryBudget
from .._version import __version__
from ._archive import Notify
from ._paths import TinkerPath, parse_tinker_path, segment
from .futures import submit
from .types import (
    CreateModelResponse,
    CreateSessionResponse,
    FutureHandle,
    SaveWeightsExternalResponse,
    WeightsInfo,
)

__all__ = ["EXPORT_TTL", "exported"]

log = logging.getLogger("tinker_sync")

X = TypeVar("X")

# The export's lifetime (renewed whenever its download URLs are signed again): it outlives a
# failed cleanup by at most this much.
EXPORT_TTL = 3600
EXPORT_NAME = "download"
CREATED_BY = {"created_by": "tinker-sync checkpoint download"}
# Cleanup steps retry little and wait little: they must not hold an error back for long.
CLEANUP_RETRIES = 2
CLEANUP_FUTURE_TIMEOUT = 60.0


@contextmanager
def exported(
    client: BaseClient, path: TinkerPath, budget: RetryBudget, prepare_timeout: float, say: Notify, why: str
) -> Iterator[TinkerPath]:
    """Export the training checkpoint ``path``; yield the export's ``tinker://`` path; clean up.

    ``why`` is said (with the session's id) once the checkpoint is known to
    exist. The session is finished ``success`` when the block completes,
    ``interrupted`` on Ctrl-C, ``errored`` otherwise.
    """
    info = _post(client, "/api/v1/weights_info", {"tinker_path": str(path)}, WeightsInfo, budget)
    session_body = {"sdk_version": __version__, "tags": ["tinker-sync"], "user_metadata": CREATED_BY}
    session = _post(client, "/api/v1/create_session", session_body, CreateSessionResponse, budget)
    if session.warning_message or session.error_message:
        log.warning("create_session: %s", session.warning_message or session.error_message)
    say(f"Exporting {path} as external weights, as {why} (session {session.session_id})")
    model_ids: list[str] = []
    export: TinkerPath | None = None
    outcome = "errored"

    def wait(route: str, body: Mapping[str, Any], cast_to: type[X]) -> X:
        def seen(handle: FutureHandle) -> None:
            if handle.model_id and handle.model_id not in model_ids:
                model_ids.append(handle.model_id)  # unloaded in finally, even if its future fails

        deadline = time.monotonic() + prepare_timeout
        options = RequestOptions("POST", route, json=body, timeout=client.timeout)
        with submit(client, options, budget, deadline, on_handle=seen) as response:
            result: X = decode_json(response.read(), cast_to, response)
        return result

    try:
        model: dict[str, Any] = {
            "session_id": session.session_id,
            "model_seq_id": 0,
            "base_model": info.base_model,
            "user_metadata": CREATED_BY,
        }
        if info.is_lora and info.lora_rank:
            lora = {"rank": info.lora_rank, "train_unembed": info.train_unembed}
            lora.update(train_mlp=info.train_mlp, train_attn=info.train_attn)
            model["lora_config"] = {k: v for k, v in lora.items() if v is not None}
        model_id = wait("/api/v1/create_model", model, CreateModelResponse).model_id
        wait("/api/v1/load_weights", {"model_id": model_id, "path": str(path), "optimizer": False}, dict)
        saved_body = {"model_id": model_id, "path": EXPORT_NAME, "ttl_seconds": EXPORT_TTL}
        saved = wait("/api/v1/save_weights_external", saved_body, SaveWeightsExternalResponse)
        export = parse_tinker_path(saved.path)
        yield export
        outcome = "success"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        _cleanup(client, session.session_id, model_ids, export, outcome, say)


def _cleanup(
    client: BaseClient,
    session_id: str,
    model_ids: list[str],
    export: TinkerPath | None,
    outcome: str,
    say: Notify,
) -> None:
    steps: list[tuple[str, Callable[[], None]]] = []
    if export is not None:
        what = f"delete the temporary export {export} (it expires within {EXPORT_TTL} s)"
        steps.append((what, partial(_delete, client, export)))
    for model_id in model_ids:
        steps.append((f"unload model {model_id}", partial(_unload, client, model_id)))
    steps.append((f"finish session {session_id}", partial(_finish, client, session_id, outcome)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            say(f"Warning: could not {what}: {exc}")


def _delete(client: BaseClient, export: TinkerPath) -> None:
    try:
        client.delete(export.api_path, max_retries=CLEANUP_RETRIES)
    except NotFoundError:
        pass  # gone already (expired, or deleted by someone else)


def _unload(client: BaseClient, model_id: str) -> None:
    budget = client._budget(client.timeout, CLEANUP_RETRIES)
    deadline = time.monotonic() + CLEANUP_FUTURE_TIMEOUT
    body = {"model_id": model_id}
    options = RequestOptions("POST", "/api/v1/unload_model", json=body, timeout=client.timeout)
    submit(client, options, budget, deadline).close()


def _finish(client: BaseClient, session_id: str, outcome: str) -> None:
    route = f"/api/v1/sessions/{segment(session_id)}/finish"
    client.post(route, json={"reason": {"type": outcome}}, max_retries=CLEANUP_RETRIES)


def _post(
    client: BaseClient, route: str, body: Mapping[str, Any], cast_to: type[X], budget: RetryBudget
) -> X:
    """POST ``body`` within the download's budget; the answer decoded into ``cast_to``."""
    with client._call(RequestOptions("POST", route, json=body, read_body=True), budget=budget) as response:
        result: X = decode_json(response.read(), cast_to, response)
    return result
