"""The official SDK 0.38.0 and its CLI, unmodified, against MockTinkerServer: no shim, no violations.

They run from a venv of their own in subprocesses (see ``tests/_official.py``): a call the
mock cannot answer as the real API would fails here, and so does any request the mock
finds malformed (``violations``).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from _official import OFFICIAL_VERSION, CliJob, official_venv, run_cli, run_cli_batch, run_driver

from tinker_sync.testing import MockTinkerServer

pytestmark = pytest.mark.slow  # seconds each: started first under xdist (conftest)

FINAL = "tinker://run-001/weights/final"


@pytest.fixture(scope="module")
def venv() -> Path:
    return official_venv()


def _server(**settings: Any) -> MockTinkerServer:
    server = MockTinkerServer(demo_data=True)
    server.future_polls = 1
    server.trace_export_polls = 1
    for name, value in settings.items():
        if name == "pjwt":
            server.client_config["pjwt_auth_enabled"] = value
        else:
            setattr(server, name, value)
    return server


REST_CALLS = {
    "get_server_capabilities",
    "list_training_runs",
    "list_training_runs_accessible",
    "get_training_run",
    "get_training_run_by_tinker_path",
    "get_weights_info_by_tinker_path",
    "list_checkpoints",
    "list_user_checkpoints",
    "get_external_weights_urls",
    "publish_checkpoint_from_tinker_path",
    "unpublish_checkpoint_from_tinker_path",
    "set_checkpoint_ttl_from_tinker_path",
    "get_session",
    "list_sessions",
    "get_sampler",
    "export_session_trace",
    "search_sessions",
    "copy_weights",
    "delete_checkpoint_from_tinker_path",
    "whoami",
    "get_training_run_missing",
}


@pytest.mark.parametrize(("pjwt", "error_format"), [(False, "error"), (True, "detail"), (True, "error")])
def test_rest_client_every_method(venv: Path, tmp_path: Path, pjwt: bool, error_format: str) -> None:
    with _server(pjwt=pjwt, error_format=error_format) as server:
        calls = run_driver(venv, server, tmp_path, "rest")
        requests = server.requests
        assert server.violations == []
    assert set(calls) == REST_CALLS
    expected_failures = {"get_training_run_missing"} | (set() if pjwt else {"whoami"})
    assert {name for name, call in calls.items() if not call["ok"]} == expected_failures, calls
    # both error shapes reach the SDK's status errors with the server's message
    missing = calls["get_training_run_missing"]["error"]
    assert missing.startswith("NotFoundError: Error code: 404") and "no-such-run" in missing
    assert calls["export_session_trace"]["result"].startswith(server.url + "/signed/")
    assert calls["copy_weights"]["result"].startswith("tinker://copy-")
    assert all(s["display_name"].startswith("demo") for s in calls["search_sessions"]["result"]["sessions"])
    assert len(calls["search_sessions"]["result"]["sessions"]) == 5
    assert calls["get_sampler"]["result"]["sampler_id"] == "session-001:sample:0"
    if pjwt:
        assert calls["whoami"]["result"] == {
            "user_urn": "tml:user:mock-user",
            "org_urn": "tml:organization:mock-org",
            "email": "mock-user@example.com",
        }
    assert "/api/v1/client/config" in [r.path for r in requests]
    for request in requests:
        if not request.path.startswith("/api/v1/"):
            continue
        key = request.headers["x-api-key"]
        raw = request.path.startswith("/api/v1/auth/") or request.path == "/api/v1/client/config"
        if pjwt and not raw:
            assert key.startswith("eyJ"), request.path  # a JWT after the exchange
        else:
            assert key == server.api_key, request.path


def test_service_client_to_training_clients(venv: Path, tmp_path: Path) -> None:
    with _server(pjwt=True) as server:
        calls = run_driver(
            venv, server, tmp_path, "service", TINKER_TAGS="nightly,suite", TINKER_PROJECT_ID="proj-7"
        )
        assert server.violations == []
        sessions = [s for s in server.sessions if s.sdk_version == OFFICIAL_VERSION and s.project_id]
    assert all(call["ok"] for call in calls.values()), calls
    assert calls["create_lora_training_client.get_info"]["result"]["lora_rank"] == 8
    assert calls["create_training_client_from_state.get_info"]["result"]["model_data"]["arch"] == "qwen3"
    assert len(sessions) == 1
    assert sorted(sessions[0].tags) == ["nightly", "suite"] and sessions[0].project_id == "proj-7"


def test_jwt_refresh_and_one_replay_after_invalid_token(venv: Path, tmp_path: Path) -> None:
    with _server(pjwt=True, jwt_lifetime=30.0) as server:
        server.refuse_jwt(1)
        calls = run_driver(venv, server, tmp_path, "jwt", "0")
        requests = server.requests
        assert server.violations == []
        issued = server.tokens_issued
    assert all(call["ok"] for call in calls.values()), calls
    with_jwt = [r for r in requests if r.headers.get("x-api-key", "").startswith("eyJ")]
    refused = with_jwt[0]  # the first request with a JWT was refused, then replayed once with a new one
    replays = [
        r for r in with_jwt[1:] if (r.method, r.path, r.body) == (refused.method, refused.path, refused.body)
    ]
    assert replays and replays[0].headers["x-api-key"] != refused.headers["x-api-key"]
    assert [r.path for r in requests].count("/api/v1/training_runs/run-001") == 1
    # a 30 s JWT has <= 60 s left from the start: every request fetches a fresh one
    assert issued >= 3


# -- the official CLI ------------------------------------------------------------------------------

CLI_TABLE: list[tuple[list[str], int, str]] = [
    (["version"], 0, f"tinker {OFFICIAL_VERSION}"),
    (["-f", "json", "model", "list"], 0, '"model_name": "Qwen/Qwen3-8B"'),
    (["model", "list", "qwen"], 0, "Qwen/Qwen3-8B"),
    (["model", "list", "no-such-model"], 1, "No model name contains 'no-such-model'"),
    (["checkpoint", "list", "--run-id", "run-001"], 0, "step-0100"),
    (["-f", "json", "checkpoint", "info", FINAL], 0, '"checkpoint_id": "weights/final"'),
    (["checkpoint", "publish", FINAL], 0, ""),
    (["checkpoint", "unpublish", "tinker://run-002/sampler_weights/step-0100"], 0, ""),
    (["checkpoint", "set-ttl", FINAL, "--ttl", "7200"], 0, ""),
    (["checkpoint", "set-ttl", FINAL, "--remove"], 0, ""),
    (["checkpoint", "set-ttl", FINAL], 1, "Must specify either --ttl"),
    (
        [
            "-f",
            "json",
            "checkpoint",
            "delete",
            "-y",
            "tinker://run-005/weights/step-0100",
            "tinker://run-005/weights/step-0200",
        ],
        0,
        '"deleted_count": 2',
    ),
    (
        ["checkpoint", "delete", "--run-id", "run-004", "--type", "weights", "-y"],
        0,
        "Deleted 3 checkpoint(s)",
    ),
    (["-f", "json", "session", "export-trace", "session-003", "--url-only"], 0, '"url": "http://127.0.0.1'),
    (
        ["-f", "json", "session", "export-trace", "session-004", "-o", "t.pftrace"],
        0,
        '"file_size_bytes": 4096',
    ),
    (["-f", "json", "run", "list"], 0, '"training_run_id": "run-001"'),
    (["auth", "status"], 0, "Tinker accessible: yes"),
    (["-f", "json", "auth", "whoami"], 0, '"org_urn": "tml:organization:mock-org"'),
    (["-f", "json", "checkpoint", "download", FINAL, "-o", "out"], 0, '"destination"'),
    (
        ["-f", "json", "checkpoint", "download", "tinker://run-001/external_weights/hf-export"],
        0,
        '"destination"',
    ),
]


def test_official_cli_commands(venv: Path, tmp_path: Path) -> None:
    """Every command of CLI_TABLE, each against a server and in a HOME of its own, all in one
    process of the official venv (``run_cli_batch``: one import of the SDK instead of one each)."""
    with contextlib.ExitStack() as stack:
        jobs = []
        for i, (args, _, _) in enumerate(CLI_TABLE):
            (tmp_path / f"case-{i}").mkdir()
            server = stack.enter_context(_server(pjwt=True, trace_size=4096))
            jobs.append(CliJob(server, tmp_path / f"case-{i}", args))
        results = run_cli_batch(venv, jobs)
        violations = {" ".join(job.args): job.server.violations for job in jobs}
        silent = [" ".join(job.args) for job in jobs if not job.server.requests]
    assert {args: found for args, found in violations.items() if found} == {}
    assert silent == ["version", f"checkpoint set-ttl {FINAL}"]  # the others talked to their own server
    wrong = [
        (" ".join(args), done.returncode, done.stdout + done.stderr)
        for (args, code, needle), done in zip(CLI_TABLE, results, strict=True)
        if done.returncode != code or needle not in done.stdout + done.stderr
    ]
    assert wrong == []


def test_official_cli_download_exports_and_cleans_up(venv: Path, tmp_path: Path) -> None:
    with _server(pjwt=True) as server:
        done = run_cli(venv, server, tmp_path, "-f", "json", "checkpoint", "download", FINAL)
        assert server.violations == []
        deleted = server.deleted_checkpoints
        finished = [s.finished for s in server.sessions if "demo" not in s.tags]
    assert done.returncode == 0, done.stderr
    target = Path(json.loads(done.stdout[done.stdout.index("{") :])["destination"])
    assert sorted(p.name for p in target.iterdir())  # the files landed
    assert len(deleted) == 1 and "/external_weights/" in deleted[0]  # the temporary export, deleted
    assert finished == ["success"]


def test_official_auth_login_status_logout(venv: Path, tmp_path: Path) -> None:
    with _server(pjwt=True) as server:
        no_key = {"TINKER_API_KEY": ""}
        login, status, logout, rejected = run_cli_batch(
            venv,
            [
                CliJob(server, tmp_path, ["auth", "login"], stdin=server.api_key + "\n", extra=no_key),
                CliJob(server, tmp_path, ["auth", "status"], extra=no_key),
                CliJob(server, tmp_path, ["auth", "logout"], extra=no_key),
                CliJob(server, tmp_path, ["auth", "login"], stdin="tml-wrong\n", extra=no_key),
            ],
        )
        stored = tmp_path / ".tinker" / "credentials.json"
        assert server.violations == []
    assert login.returncode == 0, login.stderr
    assert "Logged in as mock-user@example.com (Mock Org)" in login.stdout
    assert status.returncode == 0 and "Tinker accessible: yes" in status.stdout, status.stderr
    assert logout.returncode == 0 and "Removed credential" in logout.stdout, logout.stderr
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(stored.parent).st_mode) == 0o700
    assert json.loads(stored.read_text())["keys"] == {}
    assert rejected.returncode != 0 and "invalid X-API-Key" not in rejected.stdout
