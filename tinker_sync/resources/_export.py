"""The export flow: a training checkpoint exported as temporary external weights, for servers that
no longer serve ``.../archive`` (what the official SDK 0.38 does to download ``weights``).

The official CLI 0.38's sequence, request for request, after one check of ours (``weights_info``:
a missing checkpoint is a 404 before any session is created): ``create_session`` -> ``load_weights``
(future; the model ``SESSION:train:0``) -> ``get_info`` -> ``save_weights_external`` (future,
``seq_id`` 1) -> [the caller downloads the export] -> in ``finally``: ``DELETE`` the export,
``sessions/{id}/finish``.

Rules:
1. Bodies are the SDK's: each carries its ``type`` and omits None (the finish
   reason's ``detail`` excepted: the SDK sends it as null).
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
from .._config import project_id_from_env, tags_from_env
from .._decode import decode_json
from .._exceptions import NotFoundError
from .._options import Overrides, RequestOptions
from .._retry import RetryBudget
from .._version import SDK_VERSION
from ._archive import Notify
from ._paths import TinkerPath, parse_tinker_path, segment
from .futures import submit
from .types import (
    CreateSessionResponse,
    SaveWeightsExternalResponse,
    WeightsInfo,
)

__all__ = ["EXPORT_TTL", "exported", "session_request"]

log = logging.getLogger("tinker_sync")

X = TypeVar("X")

# The export's lifetime (renewed whenever its download URLs are signed again): it outlives a
# failed cleanup by at most this much.
EXPORT_TTL = 3600
EXPORT_NAME = "download"
CREATED_BY = {"created_by": "tinker-sync checkpoint download"}  # the SDK's says "tinker checkpoint download"
# Cleanup steps retry little and wait little: they must not hold an error back for long.
CLEANUP_RETRIES = 2


@contextmanager
def exported(
    client: BaseClient,
    path: TinkerPath,
    budget: RetryBudget,
    prepare_timeout: float,
    say: Notify,
    why: str,
    overrides: Overrides,
) -> Iterator[TinkerPath]:
    """Export the training checkpoint ``path``; yield the export's ``tinker://`` path; clean up.

    ``why`` is said with the session's id. Every request carries the download's per-call
    ``overrides`` (the cleanup's keep their own small retry budget). The session is finished ``success``
    when the block completes, ``interrupted`` on Ctrl-C, ``errored`` otherwise.
    """
    # Ours only: a checkpoint that does not exist fails here (404), before any session exists.
    post = partial(_post, client, budget, overrides)
    post("/api/v1/weights_info", {"tinker_path": str(path)}, WeightsInfo)
    session = post("/api/v1/create_session", session_request(), CreateSessionResponse)
    if session.warning_message or session.error_message:
        log.warning("create_session: %s", session.warning_message or session.error_message)
    say(f"Exporting {path} as external weights, as {why} (session {session.session_id})")
    export: TinkerPath | None = None
    outcome = "errored"

    def wait(route: str, body: Mapping[str, Any], cast_to: type[X]) -> X:
        deadline = time.monotonic() + prepare_timeout
        options = RequestOptions("POST", route, json=body).overridden(overrides)
        with submit(client, options, budget, deadline) as response:
            result: X = decode_json(response.read(), cast_to, response)
        return result

    try:
        model_id = f"{session.session_id}:train:0"
        load = {
            "session_id": session.session_id,
            "model_seq_id": 0,
            "user_metadata": CREATED_BY,
            "path": str(path),
            "optimizer": False,
            "type": "load_weights",
        }
        model_id = wait("/api/v1/load_weights", load, dict).get("model_id") or model_id
        post("/api/v1/get_info", {"model_id": model_id, "type": "get_info"}, dict)
        saved_body = {
            "model_id": model_id,
            "path": EXPORT_NAME,
            "seq_id": 1,  # the model's first request after its load
            "ttl_seconds": EXPORT_TTL,
            "type": "save_weights_external",
        }
        saved = wait("/api/v1/save_weights_external", saved_body, SaveWeightsExternalResponse)
        export = parse_tinker_path(saved.path)
        yield export
        outcome = "success"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        _cleanup(client, session.session_id, export, outcome, say, overrides)


def session_request(
    user_metadata: Mapping[str, str] | None = None, display_name: str | None = None
) -> dict[str, Any]:
    """The SDK's create_session body: ``TINKER_TAGS`` as tags, ``TINKER_PROJECT_ID`` as project."""
    body: dict[str, Any] = {"tags": tags_from_env(), "user_metadata": dict(user_metadata or {})}
    body["sdk_version"] = SDK_VERSION
    project = project_id_from_env()
    if project is not None:
        body["project_id"] = project
    if display_name is not None:
        body["display_name"] = display_name
    body["type"] = "create_session"
    return body


def _cleanup(
    client: BaseClient,
    session_id: str,
    export: TinkerPath | None,
    outcome: str,
    say: Notify,
    overrides: Overrides,
) -> None:
    steps: list[tuple[str, Callable[[], None]]] = []
    if export is not None:
        what = f"delete the temporary export {export} (it expires within {EXPORT_TTL} s)"
        steps.append((what, partial(_delete, client, export, overrides)))
    finish = partial(_finish, client, session_id, outcome, overrides)
    steps.append((f"finish session {session_id}", finish))
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            say(f"Warning: could not {what}: {exc}")


def _delete(client: BaseClient, export: TinkerPath, overrides: Overrides) -> None:
    try:
        _cleanup_call(client, RequestOptions("DELETE", export.api_path), overrides)
    except NotFoundError:
        pass  # gone already (expired, or deleted by someone else)


def _finish(client: BaseClient, session_id: str, outcome: str, overrides: Overrides) -> None:
    route = f"/api/v1/sessions/{segment(session_id)}/finish"
    body = {"reason": {"type": outcome}, "detail": None}
    _cleanup_call(client, RequestOptions("POST", route, json=body), overrides)


def _cleanup_call(client: BaseClient, options: RequestOptions, overrides: Overrides) -> None:
    """One cleanup request, with the call's overrides but its own ``CLEANUP_RETRIES``."""
    options = options.overridden(overrides).replace(max_retries=CLEANUP_RETRIES, read_body=True)
    with client._call(options):
        pass


def _post(
    client: BaseClient,
    budget: RetryBudget,
    overrides: Overrides,
    route: str,
    body: Mapping[str, Any],
    cast_to: type[X],
) -> X:
    """POST ``body`` with the call's overrides, within the download's budget; the answer decoded
    into ``cast_to``."""
    options = RequestOptions("POST", route, json=body, read_body=True).overridden(overrides)
    with client._call(options, budget=budget) as response:
        result: X = decode_json(response.read(), cast_to, response)
    return result
