"""Our requests beside the official SDK's for the same logical calls, with the only differences allowed.

Both run against a fresh demo ``MockTinkerServer`` with JWT auth on; each request log is
normalized (JWTs, idempotency keys and signatures vary by nature) and compared in order.
``ALLOWED`` lists every difference, and why; anything else fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from _official import official_venv, run_cli, run_driver

from tinker_sync import Client
from tinker_sync.testing import MockTinkerServer, RecordedRequest

pytestmark = pytest.mark.slow  # seconds each: started first under xdist (conftest)

FINAL = "tinker://run-001/weights/final"

ALLOWED = {
    "client/dynamic_config": "the SDK's periodically refreshed flags: none of them changes what tinker_sync sends",
    "telemetry": "the SDK reports its own events; tinker_sync sends none",
    "session_heartbeat": "the SDK's background heartbeat thread; tinker_sync's export sessions are short",
    "allow_metadata_only": "retrieve_future: tinker_sync takes the whole result, never a metadata-only answer",
    "archive first": "tinker_sync asks GET .../archive first (one 302 where a server still has archives)",
    "signed files": "signed downloads compared as the set of files fetched (tinker_sync may use ranges)",
    "weights_info first": "the export checks the checkpoint first: a missing one is a 404, no session made",
    "created_by": "load_weights user_metadata.created_by names the client",
    "%3A": "a run id's ':' is percent-encoded in our paths (servers decode the path before routing)",
    "export listing": "after the export, tinker_sync reads its run's checkpoint listing (sizes to verify)",
    "second handshake": "the official CLI builds two clients for an export, each with its handshake",
    "x-sdk-version on the handshake": "ours sends X-SDK-Version on client/config and auth/token too",
    "bodiless POST": "a POST or DELETE without a body carries no Content-Type in ours",
    "headers naming the client": "User-Agent, X-SDK-Method, X-Stainless-Async, X-Idempotency-Key format",
}

SKIPPED_PATHS = {"/api/v1/client/dynamic_config", "/api/v1/telemetry", "/api/v1/session_heartbeat"}
OURS_ONLY = {"/api/v1/weights_info"}  # allowed: "weights_info first"
CLIENT_HEADERS = {"user-agent", "x-sdk-method", "x-stainless-async", "x-idempotency-key", "accept-encoding"}
WIRE_HEADERS = {
    "host",
    "connection",
    "content-length",
    "x-api-key",
    "x-stainless-retry-count",
    "range",
    "if-range",
}


def _normal(request: RecordedRequest) -> tuple[Any, ...]:
    body: Any = request.json() if request.body else None
    if request.path == "/api/v1/retrieve_future" and isinstance(body, dict):
        body.pop("allow_metadata_only", None)
    if request.path == "/api/v1/load_weights" and isinstance(body, dict):
        body.get("user_metadata", {}).pop("created_by", None)
    return (
        request.method,
        unquote(request.path),  # a run id's ":" travels as %3A in ours
        tuple(sorted(request.query.items())),
        json.dumps(body, sort_keys=True),
    )


def _log(requests: list[RecordedRequest], ours: bool = False) -> tuple[list[tuple[Any, ...]], set[str]]:
    calls, signed = [], set()
    handshakes = 0
    for request in requests:
        if request.path in SKIPPED_PATHS or (ours and request.path in OURS_ONLY):
            continue
        if request.path.startswith("/signed/"):
            signed.add(unquote(request.path.split("/files/", 1)[-1]))
            continue
        if request.method == "GET" and (
            request.path.endswith("/archive") or request.path.endswith("/checkpoints")
        ):
            if "%3Atrain%3A" in request.path or request.path.endswith("/archive"):
                continue  # ours only: the archive asked first, the export's listing read
        if request.path == "/api/v1/client/config":
            handshakes += 1
            if handshakes > 1:
                continue
        if request.path == "/api/v1/auth/token" and handshakes > 1:
            continue
        calls.append(_normal(request))
    return calls, signed


def _headers(requests: list[RecordedRequest]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for request in requests:
        if request.path.startswith("/api/v1/") and request.path not in SKIPPED_PATHS:
            names = set(request.headers) - CLIENT_HEADERS - WIRE_HEADERS
            if request.path in ("/api/v1/client/config", "/api/v1/auth/token"):
                names.discard("x-sdk-version")  # allowed: "x-sdk-version on the handshake"
            if request.method != "GET" and not request.body:
                names.discard("content-type")  # allowed: "bodiless POST"
            seen.setdefault(f"{request.method} {unquote(request.path)}", set()).update(names)  # "%3A"
    return seen


def _server() -> MockTinkerServer:
    server = MockTinkerServer(demo_data=True)
    server.client_config["pjwt_auth_enabled"] = True
    server.future_polls = 1
    server.archive_mode = "export"
    return server


@pytest.fixture(scope="module")
def venv() -> Path:
    return official_venv()


def test_rest_calls_match_the_official_sdk(venv, tmp_path, monkeypatch):
    with _server() as server:
        run_driver(venv, server, tmp_path, "parity")
        theirs = server.requests
        assert server.violations == []
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    with _server() as server:
        with Client(api_key=server.api_key, base_url=server.url, trust_env=False) as client:
            client.training_runs.list()
            client.training_runs.get("run-001")
            client.checkpoints.list("run-001")
            client.checkpoints.list()
            client.checkpoints.publish(FINAL)
            client.checkpoints.unpublish(FINAL)
            client.checkpoints.set_ttl(FINAL, 7200)
            client.checkpoints.set_ttl(FINAL, None)
            client.checkpoints.delete("tinker://run-002/weights/step-0100")
            client.sessions.get("session-001")
            client.sessions.list()
            client.sampling.get_sampler("session-001:sample:0")
            client.sessions.search()
            client.sessions.search(
                display_name="demo",
                owner="accessible",
                statuses=["client_finished"],
                finish_reasons=["success"],
                limit=5,
            )
            client.checkpoints.copy(FINAL, "proj-archive", ttl_seconds=7200)
            client.sessions.assign_project("session-001", "proj-b")
        ours = server.requests
        assert server.violations == []
    assert _log(ours)[0] == _log(theirs)[0]
    assert _headers(ours) == _headers(theirs)


def test_the_export_matches_the_official_cli(venv, tmp_path, monkeypatch):
    with _server() as server:
        done = run_cli(venv, server, tmp_path, "-f", "json", "checkpoint", "download", FINAL, "-o", "theirs")
        assert done.returncode == 0, done.stderr
        theirs = server.requests
        assert server.violations == []
    for name in ("TINKER_API_KEY", "TINKER_TAGS", "TINKER_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    with _server() as server:
        with Client(api_key=server.api_key, base_url=server.url, trust_env=False) as client:
            client.checkpoints.download(FINAL, tmp_path / "ours")
        ours = server.requests
        assert server.violations == []
    our_calls, our_files = _log(ours, ours=True)
    their_calls, their_files = _log(theirs)
    assert our_calls == their_calls
    assert our_files == their_files
