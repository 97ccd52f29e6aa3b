"""Drives the official SDK (``tinker`` 0.38.0) against a mock server; run by the official venv's python.

Never imported by the suite, and it imports nothing of tinker_sync: ``tests/test_official_sdk.py``
runs it in a subprocess with the official venv's interpreter, ``TINKER_BASE_URL`` and
``TINKER_API_KEY`` pointing at a ``MockTinkerServer``. ``python _official_driver.py SCENARIO``
prints one JSON object: ``{"calls": [{"name", "ok", "error", "result"}]}``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import tinker
from tinker import types
from tinker.lib.public_interfaces import rest_client as _rest_client

warnings.simplefilter("ignore")  # deprecations and ExperimentalWarning are the SDK's business

# The SDK sleeps 5 s between polls of a pending trace export (the mock answers pending once first,
# as the service does): 0.05 s here. What is checked is what it asks, not how long it waits.
if not hasattr(_rest_client, "_TRACE_EXPORT_POLL_INTERVAL_SECONDS"):
    raise AttributeError("tinker moved _TRACE_EXPORT_POLL_INTERVAL_SECONDS: this driver needs a look")
_rest_client._TRACE_EXPORT_POLL_INTERVAL_SECONDS = 0.05


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def run(calls: list[tuple[str, Callable[[], Any]]]) -> list[dict[str, Any]]:
    """Each call's outcome: ok with its result as JSON, or the exception's class and message."""
    out = []
    for name, call in calls:
        try:
            result = _plain(call())
            out.append({"name": name, "ok": True, "error": None, "result": result})
        except Exception as error:  # the outcome is the test's to judge
            out.append(
                {"name": name, "ok": False, "error": f"{type(error).__name__}: {error}", "result": None}
            )
    return out


def rest() -> list[dict[str, Any]]:
    """Every RestClient method over the demo data."""
    rc = tinker.RestClient()
    final, export = "tinker://run-001/weights/final", "tinker://run-001/external_weights/hf-export"
    return run(
        [
            ("get_server_capabilities", lambda: rc.get_server_capabilities().result()),
            ("list_training_runs", lambda: rc.list_training_runs(limit=5, offset=2).result()),
            (
                "list_training_runs_accessible",
                lambda: rc.list_training_runs(access_scope="accessible").result(),
            ),
            ("get_training_run", lambda: rc.get_training_run("run-001").result()),
            ("get_training_run_by_tinker_path", lambda: rc.get_training_run_by_tinker_path(final).result()),
            ("get_weights_info_by_tinker_path", lambda: rc.get_weights_info_by_tinker_path(final).result()),
            ("list_checkpoints", lambda: rc.list_checkpoints("run-001").result()),
            ("list_user_checkpoints", lambda: rc.list_user_checkpoints(limit=10).result()),
            ("get_external_weights_urls", lambda: rc.get_external_weights_urls(export).result()),
            (
                "publish_checkpoint_from_tinker_path",
                lambda: rc.publish_checkpoint_from_tinker_path(final).result(),
            ),
            (
                "unpublish_checkpoint_from_tinker_path",
                lambda: rc.unpublish_checkpoint_from_tinker_path(final).result(),
            ),
            (
                "set_checkpoint_ttl_from_tinker_path",
                lambda: rc.set_checkpoint_ttl_from_tinker_path(final, 7200).result(),
            ),
            ("get_session", lambda: rc.get_session("session-001").result()),
            ("list_sessions", lambda: rc.list_sessions(limit=5).result()),
            ("get_sampler", lambda: rc.get_sampler("session-001:sample:0").result()),
            ("export_session_trace", lambda: rc.export_session_trace("session-002").result()),
            (
                "search_sessions",
                lambda: rc.search_sessions(types.SessionSearchRequest(display_name="demo", limit=5)).result(),
            ),
            ("copy_weights", lambda: rc.copy_weights(final, "proj-archive", ttl_seconds=7200).result()),
            (
                "delete_checkpoint_from_tinker_path",
                lambda: rc.delete_checkpoint_from_tinker_path("tinker://run-002/weights/step-0100").result(),
            ),
            ("whoami", lambda: rc.whoami().result()),
            ("get_training_run_missing", lambda: rc.get_training_run("no-such-run").result()),
        ]
    )


def service() -> list[dict[str, Any]]:
    """A ServiceClient up to its training clients' get_info."""
    sc = tinker.ServiceClient(user_metadata={"suite": "official"})
    holder: dict[str, Any] = {}

    def lora() -> Any:
        holder["lora"] = sc.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=8)
        return holder["lora"].get_info()

    def from_state() -> Any:
        return sc.create_training_client_from_state("tinker://run-001/weights/final").get_info()

    return run(
        [
            ("get_server_capabilities", lambda: sc.get_server_capabilities()),
            ("create_lora_training_client.get_info", lora),
            ("create_training_client_from_state.get_info", from_state),
        ]
    )


def jwt() -> list[dict[str, Any]]:
    """REST calls across JWT refreshes (short lifetime) and a revocation between two calls."""
    rc = tinker.RestClient()
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("get_training_run_1", lambda: rc.get_training_run("run-001").result()),
        ("sleep_past_half_life", lambda: time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)),
        ("get_training_run_2", lambda: rc.get_training_run("run-002").result()),
        ("whoami", lambda: rc.whoami().result()),
    ]
    return run(calls)


def parity() -> list[dict[str, Any]]:
    """The logical calls tests/test_official_parity.py makes with tinker_sync too."""
    rc = tinker.RestClient()
    final = "tinker://run-001/weights/final"
    return run(
        [
            ("runs.list", lambda: rc.list_training_runs().result()),
            ("runs.get", lambda: rc.get_training_run("run-001").result()),
            ("checkpoints.list_for_run", lambda: rc.list_checkpoints("run-001").result()),
            ("checkpoints.list", lambda: rc.list_user_checkpoints().result()),
            ("checkpoints.publish", lambda: rc.publish_checkpoint_from_tinker_path(final).result()),
            ("checkpoints.unpublish", lambda: rc.unpublish_checkpoint_from_tinker_path(final).result()),
            ("checkpoints.set_ttl", lambda: rc.set_checkpoint_ttl_from_tinker_path(final, 7200).result()),
            ("checkpoints.clear_ttl", lambda: rc.set_checkpoint_ttl_from_tinker_path(final, None).result()),
            (
                "checkpoints.delete",
                lambda: rc.delete_checkpoint_from_tinker_path("tinker://run-002/weights/step-0100").result(),
            ),
            ("sessions.get", lambda: rc.get_session("session-001").result()),
            ("sessions.list", lambda: rc.list_sessions().result()),
            ("sampling.get_sampler", lambda: rc.get_sampler("session-001:sample:0").result()),
            ("sessions.search", lambda: rc.search_sessions(types.SessionSearchRequest()).result()),
            (
                "sessions.search_filtered",
                lambda: rc.search_sessions(
                    types.SessionSearchRequest(
                        display_name="demo",
                        owner=types.AccessibleSearchOwner(),
                        statuses=[types.ClientFinishedSessionStatusQuery(reasons=["success"])],
                        limit=5,
                    )
                ).result(),
            ),
            ("checkpoints.copy", lambda: rc.copy_weights(final, "proj-archive", ttl_seconds=7200).result()),
            ("sessions.assign_project", lambda: rc.assign_session_project("session-001", "proj-b").result()),
        ]
    )


SCENARIOS = {"rest": rest, "service": service, "jwt": jwt, "parity": parity}

if __name__ == "__main__":
    outcome = SCENARIOS[sys.argv[1]]()
    sys.stdout.write(json.dumps({"calls": outcome}) + "\n")
    sys.stdout.flush()
