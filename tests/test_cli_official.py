"""The official CLI's commands in ``tinker-sync``, as real subprocesses against the mock (JWT auth on):
auth login|logout|status|whoami, checkpoint publish|unpublish|set-ttl|delete, session export-trace,
model list, version; each with ``--format json``, exit codes and ``--help`` examples."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import zlib
from pathlib import Path

import _zygote
import pytest
from _helpers import client_env

from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._data import sha256_of

FINAL = "tinker://run-001/weights/final"


@pytest.fixture
def server():
    with MockTinkerServer(demo_data=True) as server:
        server.client_config["pjwt_auth_enabled"] = True
        server.trace_export_polls = 0
        server.trace_size = 100_000
        yield server
        assert server.violations == []


def cli(server: MockTinkerServer, home: Path, *args: str, stdin: str = "", **extra: str):
    env = client_env(server.api_key, server.url, HOME=str(home), **extra)
    env = {k: v for k, v in env.items() if v != ""}
    return _zygote.run(list(args), env, home, 120, stdin)


def as_json(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_version_and_model_list(server, tmp_path):
    assert as_json(cli(server, tmp_path, "-f", "json", "version"))["sdk_version"] == "0.38.0"
    models = as_json(cli(server, tmp_path, "-f", "json", "model", "list"))["models"]
    assert [m["model_name"] for m in models] == server.supported_models
    assert "Qwen/Qwen3-8B" in cli(server, tmp_path, "model", "list", "QWEN").stdout
    missing = cli(server, tmp_path, "model", "list", "no-such")
    assert missing.returncode == 1 and "No model name contains 'no-such'" in missing.stderr


def test_publish_unpublish_and_ttl(server, tmp_path):
    assert cli(server, tmp_path, "checkpoint", "publish", FINAL).returncode == 0
    assert server.checkpoint(FINAL)["public"] is True
    again = cli(server, tmp_path, "checkpoint", "publish", FINAL)
    assert again.returncode == 1 and "409" in again.stderr  # already public
    assert cli(server, tmp_path, "-f", "json", "checkpoint", "unpublish", FINAL).returncode == 0
    assert server.checkpoint(FINAL)["public"] is False
    assert cli(server, tmp_path, "checkpoint", "set-ttl", FINAL, "--ttl", "7200").returncode == 0
    assert server.checkpoint(FINAL)["expires_at"] is not None
    assert cli(server, tmp_path, "checkpoint", "set-ttl", FINAL, "--remove").returncode == 0
    assert server.checkpoint(FINAL)["expires_at"] is None
    for bad in (["--ttl", "60", "--remove"], []):
        done = cli(server, tmp_path, "checkpoint", "set-ttl", FINAL, *bad)
        assert done.returncode == 1 and "exactly one of --ttl SECONDS or --remove" in done.stderr
    usage = cli(server, tmp_path, "checkpoint", "publish", "run-001/weights/final")
    assert usage.returncode == 2 and "not a tinker path" in usage.stderr


def test_delete_paths_and_run_filters(server, tmp_path):
    paths = ["tinker://run-005/weights/step-0100", "tinker://run-005/weights/step-0200"]
    result = as_json(cli(server, tmp_path, "-f", "json", "checkpoint", "delete", "-y", *paths))
    assert result == {"deleted_count": 2, "failed": []}
    assert sorted(server.deleted_checkpoints) == paths
    gone = cli(server, tmp_path, "-f", "json", "checkpoint", "delete", "-y", paths[0])
    assert gone.returncode == 1 and json.loads(gone.stdout)["failed"][0]["tinker_path"] == paths[0]
    no = cli(server, tmp_path, "checkpoint", "delete", "tinker://run-006/weights/step-0100", stdin="n\n")
    assert no.returncode == 1 and "Deletion cancelled" in no.stderr
    assert server.checkpoint("tinker://run-006/weights/step-0100") is not None
    filtered = cli(
        server,
        tmp_path,
        "-f",
        "json",
        "checkpoint",
        "delete",
        "--run-id",
        "run-004",
        "--type",
        "weights",
        "-y",
    )
    assert as_json(filtered)["deleted_count"] == 3
    assert all(p.startswith("tinker://run-004/weights/") for p in server.deleted_checkpoints[3:])
    assert server.checkpoint("tinker://run-004/sampler_weights/step-0100") is not None
    dated = cli(
        server,
        tmp_path,
        "-f",
        "json",
        "checkpoint",
        "delete",
        "--run-id",
        "run-007",
        "--before",
        "2000-01-01",
        "-y",
    )
    assert as_json(dated)["deleted_count"] == 0
    for bad, message in (
        (["--type", "weights"], "need --run-id"),
        ([paths[0], "--run-id", "run-1"], "not both"),
        (["--run-id", "run-1", "--type", "nope"], "--type is one of"),
    ):
        done = cli(server, tmp_path, "checkpoint", "delete", "-y", *bad)
        assert done.returncode == 1 and message in done.stderr


def test_session_export_trace_downloads_it_whole(server, tmp_path):
    url = as_json(
        cli(server, tmp_path, "-f", "json", "session", "export-trace", "session-003", "--url-only")
    )["url"]
    assert url.startswith(server.url + "/signed/")
    result = as_json(
        cli(server, tmp_path, "-f", "json", "session", "export-trace", "session-004", "-o", "t.pftrace")
    )
    dest = tmp_path / "t.pftrace"
    assert result == {"session_id": "session-004", "destination": str(dest), "file_size_bytes": 100_000}
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha256_of(zlib.crc32(b"session-004"), 100_000)
    default = as_json(cli(server, tmp_path, "-f", "json", "session", "export-trace", "session-005"))
    assert Path(default["destination"]).name == "session-005.pftrace"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session-005.pftrace", "t.pftrace"]  # no .part left
    missing = cli(server, tmp_path, "session", "export-trace", "session-999")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_auth_login_status_whoami_logout(server, tmp_path):
    home = tmp_path
    login = cli(server, home, "auth", "login", stdin=server.api_key + "\n", TINKER_API_KEY="")
    assert login.returncode == 0, login.stderr
    assert "Logged in as mock-user@example.com (Mock Org)" in login.stdout
    stored = home / ".tinker" / "credentials.json"
    assert (
        stat.S_IMODE(stored.stat().st_mode) == 0o600 and stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    )
    status = cli(server, home, "-f", "json", "auth", "status", TINKER_API_KEY="")
    assert as_json(status) == {"credentials": True, "source": str(stored), "accessible": True}
    who = as_json(cli(server, home, "-f", "json", "auth", "whoami", TINKER_API_KEY=""))
    assert who == {
        "user_urn": "tml:user:mock-user",
        "org_urn": "tml:organization:mock-org",
        "email": "mock-user@example.com",
    }
    again = cli(server, home, "auth", "login", stdin=server.api_key + "\n", TINKER_API_KEY="")
    assert again.returncode == 1 and "Already logged in" in again.stderr
    os.chmod(stored, 0o644)
    refused = cli(server, home, "auth", "status", TINKER_API_KEY="")
    assert refused.returncode == 1 and "chmod 600" in refused.stdout + refused.stderr
    os.chmod(stored, 0o600)
    out = cli(server, home, "auth", "logout", TINKER_API_KEY="")
    assert out.returncode == 0 and "Removed credential" in out.stdout
    assert json.loads(stored.read_text())["keys"] == {}
    none = cli(server, home, "auth", "status", TINKER_API_KEY="")
    assert none.returncode == 1 and "No API key" in none.stdout + none.stderr
    bad = cli(server, home, "auth", "login", stdin="tml-wrong\n", TINKER_API_KEY="")
    assert bad.returncode == 1 and "401" in bad.stderr and "tml-wrong" not in bad.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["auth", "--help"],
        ["auth", "login", "--help"],
        ["checkpoint", "delete", "--help"],
        ["checkpoint", "set-ttl", "--help"],
        ["session", "export-trace", "--help"],
        ["model", "list", "--help"],
    ],
)
def test_help_shows_examples(server, tmp_path, args):
    done = cli(server, tmp_path, *args)
    assert done.returncode == 0 and "examples:" in done.stdout
