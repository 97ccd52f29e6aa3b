"""Checkpoint download through the export flow: servers that answer ``.../archive`` 404, 405 or
501 get the checkpoint exported as temporary external weights, downloaded with the same
guarantees, and the export and session cleaned up in ``finally``, in the official CLI 0.38's
sequence (create_session, load_weights, get_info, save_weights_external; DELETE, finish).

Every test checks ``server.violations == []`` (a signed URL never sees the API key, no
finished session or unloaded model is used again) and what is left in the output directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _helpers import tree_hashes

from tinker_sync import APIConnectionError, InternalServerError, NotFoundError, RequestFailedError
from tinker_sync._version import SDK_VERSION
from tinker_sync.testing import Fault
from tinker_sync.testing.archives import expected_files

MiB = 1 << 20
WEIGHTS = "tinker://run-1/weights/final"
TARGET = "run-1_weights_final"


@pytest.fixture(autouse=True)
def no_violations(tinker_server):
    tinker_server.add_checkpoint(WEIGHTS, size=3 * MiB + 77, seed=21, n_files=4)
    tinker_server.archive_mode = "export"
    yield
    assert tinker_server.violations == []


def api_calls(server) -> list[str]:
    return [f"{r.method} {r.path}" for r in server.requests if r.path.startswith("/api/v1/")]


def cleaned_up(server, outcome: str, *, exported: bool = True) -> None:
    """The export deleted (when there was one), the session finished; no model unloaded (0.38 sends
    no unload_model: the session's end frees it)."""
    (session,) = server.sessions
    assert session.finished == outcome
    assert server.models and not any(model.unloaded for model in server.models)
    exports = [p for m in server.models for p in m.exports]
    assert server.deleted_checkpoints == (exports if exported else [])
    assert all(server.checkpoint(p) is None for p in exports)


@pytest.mark.parametrize("mode", ["export", 405, 501])
def test_export_flow_when_the_server_has_no_archives(client, tinker_server, tmp_path: Path, waits, mode):
    tinker_server.archive_mode = mode
    notes: list[str] = []
    progress: list[tuple[int, int | None]] = []
    target = client.checkpoints.download(
        WEIGHTS, tmp_path, notify=notes.append, progress=lambda d, t: progress.append((d, t))
    )
    assert target == tmp_path / TARGET
    assert tree_hashes(target) == expected_files(21, 3 * MiB + 77, 4)  # the archive's very files
    assert sorted(p.name for p in tmp_path.iterdir()) == [TARGET]  # no temp dir, lock or partial left
    cleaned_up(tinker_server, "success")
    status = {"export": 404}.get(mode, mode)
    assert any(f"the server does not serve archives (HTTP {status})" in n for n in notes)
    calls = api_calls(tinker_server)
    assert sum(c.endswith("/archive") for c in calls) == 1  # a 501 is not retried
    (export,) = tinker_server.models[0].exports
    route = "/api/v1/training_runs/session-001%3Atrain%3A0/checkpoints/external_weights/download"
    assert [c for c in calls if not c.endswith(("/archive", "/retrieve_future"))] == [
        "POST /api/v1/client/config",  # the handshake, once, before anything
        "POST /api/v1/weights_info",  # ours only: a missing checkpoint fails before any session
        "POST /api/v1/create_session",
        "POST /api/v1/load_weights",
        "POST /api/v1/get_info",
        "POST /api/v1/save_weights_external",
        f"GET {route}/external_weights_urls",
        f"PUT {route}/ttl",
        f"GET {route.rsplit('/', 2)[0]}",  # ours only: the listing's sizes, to verify the files against
        f"DELETE {route}",
        "POST /api/v1/sessions/session-001/finish",
    ]
    assert export.endswith("/external_weights/download")
    # the export outlives its URLs: its TTL is renewed each time they are signed
    ttl = [r for r in tinker_server.requests if r.method == "PUT" and r.path.endswith("/ttl")]
    assert [r.json() for r in ttl] == [{"ttl_seconds": 3600}]
    assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1] == sum(
        f.stat().st_size for f in target.rglob("*") if f.is_file()
    )


def test_the_archive_flow_is_kept_when_the_server_has_archives(client, tinker_server, tmp_path: Path):
    tinker_server.archive_mode = "archive"
    target = client.checkpoints.download(WEIGHTS, tmp_path)
    assert tree_hashes(target) == expected_files(21, 3 * MiB + 77, 4)
    assert tinker_server.sessions == [] and tinker_server.models == []


def test_a_missing_checkpoint_creates_no_session(client, tinker_server, tmp_path: Path, waits):
    with pytest.raises(NotFoundError, match="not found"):
        client.checkpoints.download("tinker://run-1/weights/missing", tmp_path)
    assert tinker_server.sessions == [] and tinker_server.models == []
    assert list(tmp_path.iterdir()) == []


def test_futures_that_need_polls_and_fail_on_the_wire_are_waited_out(client, tinker_server, tmp_path, waits):
    tinker_server.future_polls = 4
    tinker_server.script_future("load_weights", Fault(status=503), Fault(status=408), {"type": "try_again"})
    tinker_server.script_future("save_weights_external", Fault(status=429, retry_after=1))
    target = client.checkpoints.download(WEIGHTS, tmp_path)
    assert tree_hashes(target) == expected_files(21, 3 * MiB + 77, 4)
    cleaned_up(tinker_server, "success")
    assert 1.0 in waits  # the 429's Retry-After


def test_a_failed_export_step_cleans_up_and_raises_its_error(client, tinker_server, tmp_path, waits):
    tinker_server.script_future("save_weights_external", {"error": "disk full", "category": "server"})
    notes: list[str] = []
    with pytest.raises(RequestFailedError, match="disk full") as raised:
        client.checkpoints.download(WEIGHTS, tmp_path, notify=notes.append)
    assert raised.value.category == "server"
    cleaned_up(tinker_server, "errored", exported=False)
    assert list(tmp_path.iterdir()) == []
    assert not any("Warning" in n for n in notes)


def test_a_failed_download_cleans_up_and_raises_its_error(client, tinker_server, tmp_path, waits):
    tinker_server.script("/signed/", Fault(status=404))  # the storage lost a file
    with pytest.raises(NotFoundError, match="no such signed object|injected status 404"):
        client.checkpoints.download(WEIGHTS, tmp_path)
    cleaned_up(tinker_server, "errored")
    assert list(tmp_path.iterdir()) == []


def test_a_broken_connection_keeps_the_partial_files_for_the_next_run(client, tinker_server, tmp_path, waits):
    files = expected_files(21, 3 * MiB + 77, 4)
    first_file = sorted(files)[0]
    tinker_server.script("/signed/", Fault(), Fault(reset_after=1000))  # the second file breaks
    with pytest.raises(APIConnectionError):
        client.with_options(max_retries=0).checkpoints.download(WEIGHTS, tmp_path)
    cleaned_up(tinker_server, "errored")
    partial = tmp_path / f".{TARGET}.partial"
    assert (partial / first_file).is_file()
    tinker_server.clear()
    target = client.checkpoints.download(WEIGHTS, tmp_path)  # a new export; the done file is kept
    assert tree_hashes(target) == files
    fetched = [r.path.rsplit("/files/", 1)[-1] for r in tinker_server.requests if "/files/" in r.path]
    assert first_file.replace("/", "%2F") not in fetched and first_file not in fetched
    assert sorted(p.name for p in tmp_path.iterdir()) == [TARGET]


def test_ctrl_c_finishes_the_session_as_interrupted(client, tinker_server, tmp_path, waits):
    def interrupt(done: int, total: int | None) -> None:
        if done > MiB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.checkpoints.download(WEIGHTS, tmp_path, progress=interrupt)
    cleaned_up(tinker_server, "interrupted")


def test_cleanup_failures_are_reported_never_raised(client, tinker_server, tmp_path, waits):
    tinker_server.script("/api/v1/sessions/", *[Fault(status=500)] * 3)  # finish: 1 try + 2 retries
    notes: list[str] = []
    target = client.checkpoints.download(WEIGHTS, tmp_path, notify=notes.append)
    assert tree_hashes(target) == expected_files(21, 3 * MiB + 77, 4)
    warnings = [n for n in notes if n.startswith("Warning")]
    assert len(warnings) == 1
    assert "finish session" in warnings[0] and "500" in warnings[0]
    assert tinker_server.deleted_checkpoints == tinker_server.models[0].exports  # the rest still ran


def test_cleanup_failures_never_mask_the_original_error(client, tinker_server, tmp_path, waits):
    tinker_server.script("/signed/", Fault(status=500), Fault(status=500))
    tinker_server.script("/api/v1/sessions/", *[Fault(status=503)] * 3)
    notes: list[str] = []
    with pytest.raises(InternalServerError, match="injected status 500"):
        client.with_options(max_retries=1).checkpoints.download(WEIGHTS, tmp_path, notify=notes.append)
    assert any("could not finish session" in n for n in notes)
    (session,) = tinker_server.sessions
    assert session.finished is None and tinker_server.deleted_checkpoints


def session_body(server) -> dict[str, Any]:
    (request,) = [r for r in server.requests if r.path == "/api/v1/create_session"]
    body: dict[str, Any] = request.json()
    return body


def test_the_export_requests_mirror_the_sdk(client, tinker_server, tmp_path, waits):
    client.checkpoints.download(WEIGHTS, tmp_path)
    body = session_body(tinker_server)
    assert body == {"tags": [], "user_metadata": {}, "sdk_version": SDK_VERSION, "type": "create_session"}
    bodies = {r.path: r.json() for r in tinker_server.requests if r.method == "POST" and r.body}
    model_id = tinker_server.models[0].model_id
    assert model_id == "session-001:train:0"
    assert bodies["/api/v1/load_weights"] == {
        "session_id": "session-001",
        "model_seq_id": 0,
        "user_metadata": {"created_by": "tinker-sync checkpoint download"},
        "path": WEIGHTS,
        "optimizer": False,
        "type": "load_weights",
    }
    assert bodies["/api/v1/get_info"] == {"model_id": model_id, "type": "get_info"}
    assert bodies["/api/v1/save_weights_external"] == {
        "model_id": model_id,
        "path": "download",
        "seq_id": 1,
        "ttl_seconds": 3600,
        "type": "save_weights_external",
    }
    finish = bodies["/api/v1/sessions/session-001/finish"]
    assert finish == {"reason": {"type": "success"}, "detail": None}


@pytest.mark.parametrize(
    ("env", "tags", "project"),
    [
        ({}, [], None),
        ({"TINKER_TAGS": "nightly,,a b"}, ["nightly", "a b"], None),
        ({"TINKER_PROJECT_ID": "p-1"}, [], "p-1"),
    ],
)
def test_the_session_takes_tags_and_project_from_the_environment(
    client, tinker_server, tmp_path, waits, monkeypatch, env, tags, project
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client.checkpoints.download(WEIGHTS, tmp_path)
    body = session_body(tinker_server)
    assert body["tags"] == tags and body.get("project_id") == project
    assert tinker_server.sessions[0].project_id == project


@pytest.mark.parametrize("mode", ["archive", "export"])
@pytest.mark.parametrize("name", ["my checkpoint", "100%done", "v1#final", "what?now", "étape-🚀"])
def test_download_of_awkward_ids_in_both_flows(client, tinker_server, tmp_path, waits, mode, name):
    tinker_server.archive_mode = mode
    path = f"tinker://run {name}/weights/{name}"
    tinker_server.add_checkpoint(path, size=64 * 1024 + 5, seed=8, n_files=3)
    target = client.checkpoints.download(path, tmp_path)
    assert target.name == f"run {name}_weights_{name}"
    assert tree_hashes(target) == expected_files(8, 64 * 1024 + 5, 3)
    if mode == "export":
        cleaned_up(tinker_server, "success")
        assert [r.json()["path"] for r in tinker_server.requests if r.path == "/api/v1/load_weights"] == [
            path
        ]
