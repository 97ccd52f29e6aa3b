"""The mock server's REST surface, over loopback sockets with http.client only (never the client).

Tables: the happy path of each route on the demo data, the client mistakes that
must be answered 4xx *and* recorded in ``server.violations``, and the 4xx
answers that are no mistake (a missing resource, a conflict) and must not be.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import tarfile
from typing import Any
from urllib.parse import urlsplit

import pytest
from _helpers import demo_server_process

from tinker_sync.testing import Fault, MockTinkerServer

API_KEY = "tml-test-key"
RUN1 = "/api/v1/training_runs/run-001"
CK = RUN1 + "/checkpoints/weights/step-0100"
TRAINING_RUN_KEYS = {
    "training_run_id",
    "base_model",
    "model_owner",
    "is_lora",
    "corrupted",
    "lora_rank",
    "last_request_time",
    "last_checkpoint",
    "last_sampler_checkpoint",
    "user_metadata",
}
CHECKPOINT_KEYS = {
    "checkpoint_id",
    "checkpoint_type",
    "time",
    "tinker_path",
    "size_bytes",
    "public",
    "user_metadata",
    "expires_at",
    "training_run_id",
}


class Reply:
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status, self.headers, self.data = status, headers, data

    def json(self) -> Any:
        return json.loads(self.data)


def call(
    server: MockTinkerServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    raw: bytes | None = None,
    key: str | None = API_KEY,
) -> Reply:
    """One request on a fresh connection: ``body`` goes as JSON (with its Content-Type), ``raw`` as is."""
    url = urlsplit(path)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or server.port, timeout=5)
    all_headers = {} if key is None or url.hostname else {"X-API-Key": key}
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    try:
        conn.request(
            method, url.path + (f"?{url.query}" if url.query else ""), body=data, headers=all_headers
        )
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


@pytest.fixture
def demo():
    with MockTinkerServer(api_key=API_KEY, demo_data=True) as server:
        yield server


@pytest.fixture
def empty():
    with MockTinkerServer(api_key=API_KEY) as server:
        yield server


# -- the happy path on the demo data ----------------------------------------------------------------

LISTINGS = [
    # path, key in the body, how many items, the cursor (None: the shape has none)
    ("/api/v1/training_runs", "training_runs", 20, {"offset": 0, "limit": 20, "total_count": 45}),
    ("/api/v1/training_runs?offset=40", "training_runs", 5, {"offset": 40, "limit": 20, "total_count": 45}),
    ("/api/v1/training_runs?limit=50&access_scope=accessible", "training_runs", 48, None),
    ("/api/v1/training_runs?limit=0", "training_runs", 0, {"offset": 0, "limit": 0, "total_count": 45}),
    ("/api/v1/checkpoints", "checkpoints", 100, {"offset": 0, "limit": 100, "total_count": 268}),
    ("/api/v1/checkpoints?offset=200", "checkpoints", 68, {"offset": 200, "limit": 100, "total_count": 268}),
    (RUN1 + "/checkpoints", "checkpoints", 8, None),
    ("/api/v1/training_runs/run-045/checkpoints", "checkpoints", 0, None),
    ("/api/v1/sessions", "sessions", 20, None),
    ("/api/v1/sessions?offset=20&limit=20", "sessions", 10, None),
    ("/api/v1/sessions?access_scope=accessible", "sessions", 20, None),
]


@pytest.mark.parametrize("path,key,count,cursor", LISTINGS, ids=[row[0] for row in LISTINGS])
def test_listings(demo, path, key, count, cursor):
    r = call(demo, "GET", path)
    assert (r.status, r.headers["content-type"]) == (200, "application/json")
    body = r.json()
    assert len(body[key]) == count
    if cursor is not None:
        assert body["cursor"] == cursor
    if key == "training_runs":
        assert all(set(run) == TRAINING_RUN_KEYS for run in body[key])
    if key == "checkpoints":
        assert all(set(ck) == CHECKPOINT_KEYS for ck in body[key])
    assert demo.violations == []


def test_checkpoints_are_newest_first_and_pages_do_not_overlap(demo):
    pages = [
        call(demo, "GET", f"/api/v1/checkpoints?offset={o}").json()["checkpoints"] for o in (0, 100, 200)
    ]
    listed = [c for page in pages for c in page]
    assert len({c["tinker_path"] for c in listed}) == 268
    times = [c["time"] for c in listed]
    assert times == sorted(times, reverse=True)
    assert listed[0]["tinker_path"] == "tinker://run-044/sampler_weights/step-0400"
    assert not any(c["training_run_id"].startswith("shared-") for c in listed)  # not owned


def test_training_run_details(demo):
    run = call(demo, "GET", RUN1).json()
    assert (run["training_run_id"], run["model_owner"], run["is_lora"], run["corrupted"]) == (
        "run-001",
        "mock-user",
        True,
        False,
    )
    assert run["last_checkpoint"]["tinker_path"] == "tinker://run-001/weights/final"
    assert run["last_sampler_checkpoint"]["tinker_path"] == "tinker://run-001/sampler_weights/step-0300"
    assert run["last_request_time"].endswith("Z")
    assert call(demo, "GET", "/api/v1/training_runs/run-013").json()["corrupted"] is True
    assert call(demo, "GET", "/api/v1/training_runs/run-045").json()["last_checkpoint"] is None
    assert call(demo, "GET", "/api/v1/training_runs/shared-001").status == 404  # owned scope
    shared = call(demo, "GET", "/api/v1/training_runs/shared-001?access_scope=accessible")
    assert (shared.status, shared.json()["model_owner"]) == (200, "teammate")
    kinds = {
        c["checkpoint_id"]: c["checkpoint_type"]
        for c in call(demo, "GET", RUN1 + "/checkpoints").json()["checkpoints"]
    }
    assert (
        kinds["external_weights/hf-export"] == "external" and kinds["sampler_weights/step-0200"] == "sampler"
    )
    assert demo.violations == []


def test_demo_data_is_deterministic():
    bodies = []
    for _ in range(2):
        with MockTinkerServer(demo_data=True) as server:
            bodies.append(
                [
                    call(server, "GET", p).data
                    for p in ("/api/v1/checkpoints?limit=300", RUN1, "/api/v1/sessions/session-003")
                ]
            )
    assert bodies[0] == bodies[1]


def test_demo_public_and_expiring_checkpoints(demo):
    public = call(demo, "GET", "/api/v1/training_runs/run-002/checkpoints").json()["checkpoints"]
    assert {c["checkpoint_id"] for c in public if c["public"]} == {
        f"sampler_weights/step-0{k}00" for k in (1, 2, 3, 4)
    }
    expiring = call(demo, "GET", "/api/v1/training_runs/run-003/checkpoints").json()["checkpoints"]
    assert all((c["expires_at"] is not None) == c["checkpoint_id"].startswith("weights/") for c in expiring)


def test_sessions_get_create_heartbeat_finish(demo):
    one = call(demo, "GET", "/api/v1/sessions/session-001").json()
    assert one == {
        "training_run_ids": ["run-001", "run-031"],
        "sampler_ids": ["session-001:sample:0"],
        "user_metadata": None,
        "display_name": "demo session 1",
    }
    created = call(
        demo, "POST", "/api/v1/create_session", {"tags": ["t"], "user_metadata": {}, "sdk_version": "0.38.0"}
    )
    assert created.json() == {
        "type": "create_session",
        "info_message": None,
        "warning_message": None,
        "error_message": None,
        "session_id": "session-031",
    }
    assert call(demo, "POST", "/api/v1/session_heartbeat", {"session_id": "session-031"}).json() == {
        "type": "session_heartbeat"
    }
    finish = "/api/v1/sessions/session-031/finish"
    assert call(demo, "POST", finish, {"reason": {"type": "success"}, "detail": None}).status == 204
    assert (
        call(demo, "POST", finish, {"reason": {"type": "errored"}, "detail": "late"}).status == 204
    )  # first wins
    (record,) = [s for s in demo.sessions if s.session_id == "session-031"]
    assert (record.finished, record.finish_detail, record.heartbeats, record.sdk_version) == (
        "success",
        None,
        1,
        "0.38.0",
    )
    assert call(demo, "GET", "/api/v1/sessions?limit=100").json()["sessions"][-1] == "session-031"
    assert demo.violations == []


def test_health_and_capabilities(empty):
    assert call(empty, "GET", "/api/v1/healthz").json() == {"status": "ok"}
    head = call(empty, "HEAD", "/api/v1/healthz")
    assert (head.status, head.data) == (200, b"")
    models = call(empty, "GET", "/api/v1/get_server_capabilities").json()["supported_models"]
    assert models[0] == {
        "model_name": "meta-llama/Llama-3.1-8B",
        "max_context_length": 32768,
        "trainable": True,
        "sampleable": True,
    }
    assert empty.violations == []


def test_registration_helpers(empty):
    run = empty.add_run("mine", base_model="Qwen/Qwen3-8B", lora_rank=8, user_metadata={"a": "b"})
    assert set(run) == TRAINING_RUN_KEYS and run["lora_rank"] == 8
    empty.add_run("theirs", owner="someone-else")
    assert [
        r["training_run_id"] for r in call(empty, "GET", "/api/v1/training_runs").json()["training_runs"]
    ] == ["mine"]
    session = empty.add_session(training_run_ids=["mine"], display_name="x")
    assert session.session_id == "session-001"
    assert call(empty, "GET", "/api/v1/sessions/session-001").json()["training_run_ids"] == ["mine"]
    empty.add_checkpoint("tinker://mine/weights/w", size=10)
    assert empty.checkpoint("tinker://mine/weights/w")["size_bytes"] == 10
    assert empty.checkpoint("tinker://mine/weights/other") is None


# -- client mistakes: 4xx and a violation ----------------------------------------------------------

MISTAKES = [
    # method, path, JSON body (or raw bytes), extra headers, status, a fragment of the violation
    ("GET", "/api/v1/nope", None, {}, 404, "no such route"),
    ("GET", "/api/v1", None, {}, 404, "no such route"),
    ("POST", "/api/v1/healthz", None, {}, 405, "not allowed"),
    ("DELETE", RUN1, None, {}, 405, "not allowed"),
    ("GET", CK + "/publish", None, {}, 405, "not allowed"),
    ("POST", "/api/v1/training_runs", None, {}, 405, "not allowed"),
    ("GET", "/api/v1/retrieve_future", None, {}, 405, "not allowed"),
    ("GET", "/api/v1/create_session", None, {}, 405, "not allowed"),
    ("GET", "/api/v1/sessions/session-001/finish", None, {}, 405, "not allowed"),
    ("GET", "/api/v1/training_runs?limit=abc", None, {}, 400, "limit must be an integer"),
    ("GET", "/api/v1/training_runs?offset=-1", None, {}, 400, "offset must be >= 0"),
    ("GET", "/api/v1/training_runs?access_scope=all", None, {}, 400, "access_scope must be one of"),
    ("GET", RUN1 + "?access_scope=mine", None, {}, 400, "access_scope"),
    ("GET", "/api/v1/checkpoints?limit=1.5", None, {}, 400, "limit must be an integer"),
    ("GET", "/api/v1/sessions?offset=x", None, {}, 400, "offset"),
    ("GET", RUN1 + "/checkpoints/bogus/x", None, {}, 404, "KIND/NAME"),
    ("GET", RUN1 + "/checkpoints/weights", None, {}, 404, "KIND/NAME"),
    ("GET", CK + "/nope", None, {}, 404, "no route"),
    ("GET", RUN1 + "/other", None, {}, 404, "no route"),
    ("GET", CK + "/external_weights_urls", None, {}, 400, "only serves external_weights"),
    ("PUT", CK + "/ttl", {"ttl_seconds": "1h"}, {}, 422, "ttl_seconds"),
    ("PUT", CK + "/ttl", {}, {}, 422, "missing required field `ttl_seconds`"),
    ("POST", "/api/v1/retrieve_future", {}, {}, 422, "missing required field `request_id`"),
    ("POST", "/api/v1/retrieve_future", {"request_id": 5}, {}, 422, "Expected `str`"),
    ("POST", "/api/v1/retrieve_future", {"request_id": "a", "extra": 1}, {}, 422, "unknown field `extra`"),
    ("POST", "/api/v1/retrieve_future", b"{", {"Content-Type": "application/json"}, 400, "invalid JSON"),
    ("POST", "/api/v1/retrieve_future", b'{"request_id":"a"}', {}, 400, "Content-Type: application/json"),
    ("POST", "/api/v1/create_session", {"tags": []}, {}, 422, "`sdk_version`"),
    ("POST", "/api/v1/create_session", {"sdk_version": "1", "tags": "x"}, {}, 422, "$.tags"),
    ("POST", "/api/v1/session_heartbeat", {"session_id": "session-001"}, {}, 400, "is finished"),
    ("POST", "/api/v1/sessions/session-030/finish", {"reason": {"type": "done"}}, {}, 422, "$.reason.type"),
    ("POST", "/api/v1/sessions/session-030/finish", {}, {}, 422, "`reason`"),
    ("POST", "/api/v1/weights_info", {"tinker_path": "run-001/weights/x"}, {}, 400, "tinker://"),
    (
        "POST",
        "/api/v1/create_model",
        {"session_id": "session-030", "base_model": "x"},
        {},
        422,
        "`model_seq_id`",
    ),
    (
        "POST",
        "/api/v1/create_model",
        {"session_id": "session-001", "model_seq_id": 0, "base_model": "Qwen/Qwen3-8B"},
        {},
        400,
        "is finished",
    ),
    (
        "POST",
        "/api/v1/load_weights",
        {"path": "tinker://run-001/weights/step-0100", "optimizer": False},
        {},
        422,
        "either model_id",
    ),
    (
        "POST",
        "/api/v1/load_weights",
        {
            "path": "tinker://run-001/weights/step-0100",
            "optimizer": False,
            "model_id": "m",
            "session_id": "s",
            "model_seq_id": 0,
        },
        {},
        422,
        "either model_id",
    ),
    (
        "POST",
        "/api/v1/load_weights",
        {"path": "tinker://run-001/weights/step-0100", "session_id": "session-030", "model_seq_id": 0},
        {},
        422,
        "`optimizer`",
    ),
    (
        "POST",
        "/api/v1/load_weights",
        {
            "path": "tinker://run-001/sampler_weights/step-0100",
            "optimizer": False,
            "session_id": "session-030",
            "model_seq_id": 0,
        },
        {},
        400,
        "training weights",
    ),
    ("POST", "/api/v1/save_weights_external", {"model_id": "m", "path": "a/b"}, {}, 400, "plain name"),
    ("POST", "/api/v1/unload_model", {}, {}, 422, "`model_id`"),
    (
        "POST",
        "/api/v1/stream_sample",
        {"prompt": "hi"},
        {"Accept": "application/json"},
        400,
        "text/event-stream",
    ),
    ("POST", "/api/v1/stream_sample", {"prompt": 5}, {}, 422, "$.prompt"),
    (
        "POST",
        "/api/v1/asample",
        {"prompt": {"chunks": []}, "sampling_params": {}},
        {},
        422,
        "base_model, model_path",
    ),
    ("POST", "/api/v1/asample", {"prompt": {"chunks": []}}, {}, 422, "`sampling_params`"),
    (
        "POST",
        "/api/v1/asample",
        {"prompt": {"chunks": []}, "sampling_params": {}, "sampling_session_id": "s"},
        {},
        422,
        "seq_id",
    ),
]


@pytest.mark.parametrize(
    "method,path,body,headers,status,fragment", MISTAKES, ids=[f"{m[0]} {m[1]} {m[5]}" for m in MISTAKES]
)
def test_client_mistakes_are_violations(demo, method, path, body, headers, status, fragment):
    raw = body if isinstance(body, bytes) else None
    r = call(demo, method, path, None if raw is not None else body, headers, raw=raw)
    assert r.status == status, r.data
    assert fragment in r.json()["error"]["message"]
    if status == 405:
        assert r.headers["allow"]
    (violation,) = demo.violations
    assert violation.startswith(f"{method} {urlsplit(path).path}: ") and fragment in violation


def test_a_missing_api_key_is_a_violation_a_wrong_one_is_not(demo):
    r = call(demo, "GET", "/api/v1/healthz", key=None)
    assert (r.status, r.json()["error"]["type"]) == (401, "authentication_error")
    assert demo.violations == ["GET /api/v1/healthz: missing X-API-Key"]
    demo.clear()
    assert call(demo, "GET", "/api/v1/healthz", key="tml-wrong").status == 401
    assert demo.violations == []


NOT_MISTAKES = [
    # a missing resource, a conflict or a refused value: 4xx without a violation
    ("GET", "/api/v1/training_runs/run-999", None, 404),
    ("GET", "/api/v1/training_runs/run-999/checkpoints", None, 404),
    ("GET", RUN1 + "/checkpoints/weights/step-9999/archive", None, 404),
    ("DELETE", RUN1 + "/checkpoints/weights/step-9999", None, 404),
    ("GET", "/api/v1/sessions/session-999", None, 404),
    ("GET", "/api/v1/sessions/session-001?access_scope=owned", None, 200),
    ("POST", "/api/v1/retrieve_future", {"request_id": "no-such-future"}, 404),
    ("POST", "/api/v1/weights_info", {"tinker_path": "tinker://run-999/weights/x"}, 404),
    ("POST", "/api/v1/get_info", {"model_id": "nope:train:0"}, 404),
    ("POST", "/api/v1/unload_model", {"model_id": "nope:train:0"}, 404),
    ("POST", "/api/v1/sessions/session-999/finish", {"reason": {"type": "success"}}, 404),
    ("POST", RUN1 + "/checkpoints/sampler_weights/step-0100/publish", None, 204),
    ("POST", "/api/v1/training_runs/run-002/checkpoints/sampler_weights/step-0100/publish", None, 409),
    ("DELETE", CK + "/publish", None, 409),
    ("PUT", CK + "/ttl", {"ttl_seconds": 60}, 400),
    ("PUT", CK + "/ttl", {"ttl_seconds": None}, 204),
    (
        "POST",
        "/api/v1/create_model",
        {"session_id": "session-030", "model_seq_id": 0, "base_model": "gpt-2"},
        400,
    ),
    (
        "POST",
        "/api/v1/create_model",
        {"session_id": "session-999", "model_seq_id": 0, "base_model": "gpt-2"},
        404,
    ),
]


@pytest.mark.parametrize(
    "method,path,body,status", NOT_MISTAKES, ids=[f"{m[0]} {m[1]} {m[3]}" for m in NOT_MISTAKES]
)
def test_no_violation_for_missing_resources_and_conflicts(demo, method, path, body, status):
    r = call(demo, method, path, body)
    assert r.status == status, r.data
    if status >= 400:
        assert r.json()["error"]["message"]
    assert demo.violations == []


def test_percent_encoded_checkpoint_id_and_run_ids_with_colons(empty):
    empty.add_checkpoint("tinker://s:train:0/weights/step 1", size=10)
    r = call(empty, "GET", "/api/v1/training_runs/s:train:0/checkpoints/weights%2Fstep%201/archive")
    assert r.status == 302
    assert (
        call(empty, "DELETE", "/api/v1/training_runs/s%3Atrain%3A0/checkpoints/weights/step%201").status
        == 204
    )
    assert empty.deleted_checkpoints == ["tinker://s:train:0/weights/step 1"]
    assert empty.violations == []


# -- futures ----------------------------------------------------------------------------------------

FUTURE_ANSWERS = [
    # an answer given to add_future, the status and body (or error type) a poll gets
    (
        {"type": "try_again", "request_id": "f", "queue_state": "paused_rate_limit"},
        200,
        {"type": "try_again", "request_id": "f", "queue_state": "paused_rate_limit"},
    ),
    ({"error": "boom", "category": "user"}, 200, {"error": "boom", "category": "user"}),
    (Fault(status=408), 408, {"type": "try_again", "request_id": "f", "queue_state": "active"}),
    (Fault(status=503), 503, "fault"),
    (Fault(status=429, retry_after=2), 429, "fault"),
    ({"model_id": "m", "type": "create_model"}, 200, {"model_id": "m", "type": "create_model"}),
]


@pytest.mark.parametrize(
    "answer,status,expected", FUTURE_ANSWERS, ids=[str(a[0])[:40] for a in FUTURE_ANSWERS]
)
def test_scripted_future_answers(empty, answer, status, expected):
    empty.add_future("f", answer, {"result": 1})
    r = call(empty, "POST", "/api/v1/retrieve_future", {"request_id": "f"})
    assert r.status == status
    if isinstance(expected, dict):
        assert r.json() == expected
    else:
        assert r.json()["error"]["type"] == expected
    if isinstance(answer, Fault) and answer.retry_after:
        assert r.headers["retry-after"] == "2"
    assert call(empty, "POST", "/api/v1/retrieve_future", {"request_id": "f"}).json() == {"result": 1}
    assert empty.violations == []


def poll(server: MockTinkerServer, request_id: str, limit: int = 10) -> tuple[int, Any]:
    """Poll until an answer that is not try_again: (polls it took, that answer)."""
    for n in range(1, limit + 1):
        r = call(server, "POST", "/api/v1/retrieve_future", {"request_id": request_id})
        body = r.json()
        if r.status == 200 and body.get("type") != "try_again":
            return n, body
    raise AssertionError(f"{request_id} still pending after {limit} polls")


def new_model(server: MockTinkerServer) -> tuple[str, str]:
    session = call(server, "POST", "/api/v1/create_session", {"tags": [], "sdk_version": "0.38.0"}).json()[
        "session_id"
    ]
    body = {
        "session_id": session,
        "model_seq_id": 0,
        "base_model": "Qwen/Qwen3-8B",
        "lora_config": {"rank": 32},
    }
    future = call(server, "POST", "/api/v1/create_model", body).json()
    assert future["model_id"] == f"{session}:train:0"
    return session, future["request_id"]


@pytest.mark.parametrize("polls", [0, 1, 3])
def test_server_futures_need_future_polls_try_agains(empty, polls):
    empty.future_polls = polls
    _, request_id = new_model(empty)
    n, result = poll(empty, request_id)
    assert (n, result["type"]) == (polls + 1, "create_model")
    assert (
        call(empty, "POST", "/api/v1/retrieve_future", {"request_id": request_id}).json() == result
    )  # repeats


def test_a_server_future_scripted_to_fail_has_no_effect(empty):
    empty.add_checkpoint("tinker://src/weights/w", size=1000)
    empty.future_polls = 0
    session, _ = new_model(empty)
    empty.script_future(
        "load_weights", Fault(status=408), Fault(status=503), {"error": "no capacity", "category": "server"}
    )
    future = call(
        empty,
        "POST",
        "/api/v1/load_weights",
        {"model_id": f"{session}:train:0", "path": "tinker://src/weights/w", "optimizer": False},
    ).json()
    answers = [
        call(empty, "POST", "/api/v1/retrieve_future", {"request_id": future["request_id"]}) for _ in range(4)
    ]
    assert [a.status for a in answers] == [408, 503, 200, 200]
    assert answers[2].json() == answers[3].json() == {"error": "no capacity", "category": "server"}
    (model,) = empty.models
    assert model.loaded_path is None
    with pytest.raises(ValueError):
        empty.script_future("nope", {})
    assert empty.violations == []


# -- the export flow ---------------------------------------------------------------------------------


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


@pytest.mark.parametrize("addressing", ["create_model", "create_via_load"])
def test_export_flow_serves_the_archive_content_and_records_the_cleanup(demo, addressing):
    source = "tinker://run-001/weights/step-0100"
    archive = call(demo, "GET", CK + "/archive")
    assert archive.status == 302
    expected = tar_members(call(demo, "GET", archive.headers["location"]).data)
    demo.archive_mode = "export"
    assert call(demo, "GET", CK + "/archive").status == 404

    session = call(
        demo, "POST", "/api/v1/create_session", {"tags": [], "user_metadata": {}, "sdk_version": "0.38.0"}
    ).json()["session_id"]
    info = call(demo, "POST", "/api/v1/weights_info", {"tinker_path": source}).json()
    assert info == {
        "base_model": "Qwen/Qwen3-8B",
        "optimizer_config": {"type": "adamw"},
        "is_lora": True,
        "lora_rank": 16,
        "train_unembed": True,
        "train_mlp": True,
        "train_attn": True,
    }
    model_id = f"{session}:train:0"
    if addressing == "create_model":
        body = {
            "session_id": session,
            "model_seq_id": 0,
            "base_model": info["base_model"],
            "lora_config": {"rank": info["lora_rank"]},
        }
        created = call(demo, "POST", "/api/v1/create_model", body).json()
        assert poll(demo, created["request_id"])[1] == {"model_id": model_id, "type": "create_model"}
        load = {"model_id": model_id, "path": source, "optimizer": False, "seq_id": 1}
    else:
        load = {"session_id": session, "model_seq_id": 0, "path": source, "optimizer": False}
    loaded = call(demo, "POST", "/api/v1/load_weights", load).json()
    assert loaded["model_id"] == model_id
    assert poll(demo, loaded["request_id"])[1] == {
        "path": source,
        "model_id": model_id,
        "type": "load_weights",
    }
    got = call(demo, "POST", "/api/v1/get_info", {"model_id": model_id}).json()
    assert (got["model_id"], got["model_data"]["model_name"], got["lora_rank"]) == (
        model_id,
        "Qwen/Qwen3-8B",
        16,
    )

    saved = call(
        demo,
        "POST",
        "/api/v1/save_weights_external",
        {"model_id": model_id, "path": "download", "ttl_seconds": 3600},
    ).json()
    n, result = poll(demo, saved["request_id"])
    export = f"tinker://{model_id}/external_weights/download"
    assert n == 3 and result == {
        "path": export,
        "size_bytes": demo.checkpoint(source)["size_bytes"],
        "type": "save_weights_external",
    }
    assert demo.checkpoint(export)["expires_at"] is not None
    export_api = f"/api/v1/training_runs/{model_id}/checkpoints/external_weights/download"
    urls = call(demo, "GET", export_api + "/external_weights_urls").json()
    assert sorted(urls["urls"]) == sorted(expected)
    for rel, url in urls["urls"].items():
        assert urlsplit(url).scheme == "http"
        body = call(demo, "GET", url).data
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(expected[rel]).hexdigest()

    assert call(demo, "DELETE", export_api).status == 204
    unload = call(demo, "POST", "/api/v1/unload_model", {"model_id": model_id}).json()
    assert poll(demo, unload["request_id"])[1] == {"model_id": model_id, "type": "unload_model"}
    assert (
        call(
            demo,
            "POST",
            f"/api/v1/sessions/{session}/finish",
            {"reason": {"type": "success"}, "detail": None},
        ).status
        == 204
    )

    assert demo.deleted_checkpoints == [export]
    (model,) = demo.models
    assert (model.model_id, model.loaded_path, model.exports, model.unloaded) == (
        model_id,
        source,
        [export],
        True,
    )
    assert [s.finished for s in demo.sessions if s.session_id == session] == ["success"]
    assert demo.violations == []
    # An unloaded model takes no more work: a client mistake.
    r = call(demo, "POST", "/api/v1/save_weights_external", {"model_id": model_id, "path": "again"})
    assert r.status == 400 and len(demo.violations) == 1


@pytest.mark.parametrize(
    "mode,status", [("archive", 302), ("export", 404), (404, 404), (405, 405), (501, 501)]
)
def test_archive_mode(empty, mode, status):
    empty.add_checkpoint("tinker://r/weights/w", size=100)
    empty.archive_mode = mode
    r = call(empty, "GET", "/api/v1/training_runs/r/checkpoints/weights/w/archive")
    assert r.status == status
    if status != 302:
        assert "export" in r.json()["error"]["message"]
    assert empty.violations == []


# -- sampling -----------------------------------------------------------------------------------------

PROMPT = {"chunks": [{"tokens": [1, 2, 3], "type": "encoded_text"}]}


def test_asample_future_and_response(demo):
    body = {
        "prompt": PROMPT,
        "sampling_params": {"max_tokens": 4, "seed": 7, "temperature": 0.7},
        "num_samples": 2,
        "base_model": "Qwen/Qwen3-8B",
        "prompt_logprobs": True,
    }
    future = call(demo, "POST", "/api/v1/asample", body).json()
    assert future["sample_sequence_ids"] == [f"{future['request_id']}:0", f"{future['request_id']}:1"]
    n, response = poll(demo, future["request_id"])
    assert n == 3 and response["type"] == "sample"
    assert [len(s["tokens"]) for s in response["sequences"]] == [4, 4]
    assert all(s["stop_reason"] == "length" and len(s["logprobs"]) == 4 for s in response["sequences"])
    assert response["prompt_logprobs"][0] is None and len(response["prompt_logprobs"]) == 3
    again = call(demo, "POST", "/api/v1/asample", body).json()
    assert poll(demo, again["request_id"])[1] == response  # deterministic
    missing = {**body, "base_model": None, "model_path": "tinker://run-999/sampler_weights/x"}
    failed = call(demo, "POST", "/api/v1/asample", {k: v for k, v in missing.items() if v is not None}).json()
    assert poll(demo, failed["request_id"])[1]["category"] == "user"
    assert demo.violations == []


def test_stream_sample_takes_sampling_params(empty):
    r = call(
        empty,
        "POST",
        "/api/v1/stream_sample",
        {"prompt": PROMPT, "sampling_params": {"max_tokens": 2}},
        {"Accept": "text/event-stream"},
    )
    events = [json.loads(line[6:]) for line in r.data.split(b"\n") if line.startswith(b"data: ")]
    assert [e["event_type"] for e in events] == ["token", "token", "done"]
    assert empty.violations == []


# -- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args,total", [([], 45), (["--empty"], 0)])
def test_cli_serves_the_demo_data_unless_empty(args, total):
    with demo_server_process(*args) as served:
        line = served.lines[0]
        assert line.startswith("Mock Tinker server at http://127.0.0.1:") and "(api key tml-test-key)" in line
        assert served.lines[1] == f"export TINKER_API_KEY=tml-test-key TINKER_BASE_URL={served.url}"
        conn = http.client.HTTPConnection(*served.host_port, timeout=5)
        conn.request("GET", "/api/v1/training_runs", headers={"X-API-Key": API_KEY})
        assert json.loads(conn.getresponse().read())["cursor"]["total_count"] == total
        conn.close()
    assert served.proc.returncode == 0
