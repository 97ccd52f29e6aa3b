"""The raw and streaming views of every API method, and typed decoding, against real sockets.

``client.with_raw_response.<resource>.<method>`` (and ``client.<resource>.with_raw_response``)
return an ``APIResponse`` whose body was read and whose connection was released;
``client.with_streaming_response...`` is a ``with`` block whose body is unread until the
caller reads it, and whose connection is released on exit whatever happened.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _sockets import raw_server

import tinker_sync
from tinker_sync import (
    APIResponse,
    APIResponseValidationError,
    NotFoundError,
    ResponseContextManager,
    StreamEndInfo,
)
from tinker_sync.testing import Fault, MockTinkerServer
from tinker_sync.types import SampleStreamChunk, TrainingRunList

MiB = 1 << 20
FINAL = "tinker://run-001/weights/final"


# The demo dataset (ids in docs/TESTING.md) behind ``tinker_server`` and the ``client`` on it; a
# client mistake the server records fails the test (conftest.py).
pytestmark = pytest.mark.demo_data


def signed(server: MockTinkerServer) -> list:
    return [r for r in server.requests if r.path.startswith("/signed/")]


# -- the raw view -----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["client", "resource"])
def test_raw_view(client, tinker_server, form):
    raw = client.with_raw_response if form == "client" else None
    runs = raw.training_runs if raw is not None else client.training_runs.with_raw_response
    response = runs.list(limit=2)
    assert isinstance(response, APIResponse)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.http_request.method == "GET"
    assert (
        response.http_request.url
        == f"{tinker_server.url}/api/v1/training_runs?limit=2&offset=0&access_scope=owned"
    )
    assert response.retries_taken == 0 and response.elapsed > 0
    assert response.is_closed  # the body was read and the connection released
    page = response.parse()
    assert isinstance(page, TrainingRunList) and [r.training_run_id for r in page.training_runs] == [
        "run-001",
        "run-002",
    ]
    assert response.parse() is page  # parsed once
    assert response.json()["cursor"] == {"offset": 0, "limit": 2, "total_count": 45}
    assert response.text().startswith('{"training_runs":')
    assert response.read() == response.text().encode()
    assert b"".join(response.iter_bytes(7)) == response.read()
    # the connection went back to the pool: the next call reuses it
    before = tinker_server.connections
    client.health.check()
    assert tinker_server.connections == before


def test_views_are_built_once_and_typed_by_mode(client):
    assert client.with_raw_response is client.with_raw_response
    assert client.with_raw_response.checkpoints is client.with_raw_response.checkpoints
    assert client.checkpoints.with_streaming_response is client.checkpoints.with_streaming_response
    assert "Raw" in repr(client.with_raw_response.sessions)
    assert "Streamed" in repr(client.sessions.with_streaming_response)
    copy = client.with_options(max_retries=1)
    assert copy.with_raw_response is not client.with_raw_response
    assert copy.with_raw_response.checkpoints._client is copy


def test_raw_view_counts_retries(client, tinker_server, waits):
    tinker_server.script("/api/v1/sessions", Fault(status=503, retry_after=1), Fault(status=502))
    response = client.with_raw_response.sessions.list(limit=1)
    assert response.retries_taken == 2 and waits == [1.0, pytest.approx(waits[1])]
    assert response.parse().sessions == ["session-001"]


def test_raw_view_raises_status_errors_like_the_plain_call(client):
    with pytest.raises(NotFoundError):
        client.with_raw_response.training_runs.get("run-999")
    with pytest.raises(NotFoundError):
        with client.with_streaming_response.training_runs.get("run-999"):
            pytest.fail("never entered")


def test_raw_view_of_delete_and_of_a_redirect(client, tinker_server):
    deleted = client.with_raw_response.checkpoints.delete("tinker://run-002/weights/step-0100")
    assert deleted.status_code == 204 and deleted.parse() is None and deleted.read() == b""
    archive = client.with_raw_response.checkpoints.archive_url(FINAL)
    assert archive.status_code == 302
    assert archive.parse().url == archive.headers["location"]
    assert signed(tinker_server) == []


def test_raw_view_of_an_event_stream_replays_the_body_read(client):
    response = client.with_raw_response.sampling.stream_sample("Hi", max_tokens=3)
    assert response.is_closed and response.headers["content-type"].startswith("text/event-stream")
    assert [c.token for c in response.parse()] == ["tok0", "tok1", "tok2", None]
    assert [e.event for e in response.iter_events()] == ["message"] * 4
    assert [c.index for c in response.iter_events(SampleStreamChunk)] == [0, 1, 2, None]


# -- the streaming view -----------------------------------------------------------------------------


def test_streaming_view_sends_on_entry_with_the_body_unread(client, tinker_server):
    block = client.with_streaming_response.checkpoints.archive(FINAL)
    assert isinstance(block, ResponseContextManager)
    assert tinker_server.requests == []  # nothing sent before the with block
    with block as response:
        assert response.status_code == 200 and response.http_response.num_bytes_downloaded == 0
        assert not response.is_closed
        size = sum(len(chunk) for chunk in response.iter_bytes(65536))
    assert size == int(response.headers["content-length"]) and response.is_closed
    assert len(signed(tinker_server)) == 1 and "x-api-key" not in signed(tinker_server)[0].headers


@pytest.mark.parametrize("form", ["client", "resource"])
def test_streaming_view_parse_iter_text_and_lines(client, form):
    view = client.with_streaming_response.training_runs if form == "client" else None
    runs = view if view is not None else client.training_runs.with_streaming_response
    with runs.get("run-002") as response:
        assert response.parse().training_run_id == "run-002"
    with runs.list(limit=1) as response:
        text = "".join(response.iter_text())
    assert '"run-001"' in text
    with client.with_streaming_response.sessions.list(limit=1) as response:
        assert list(response.iter_lines()) == ['{"sessions":["session-001"]}']


def test_streaming_view_releases_the_connection_whatever_happens(tinker_server):
    ends: list[StreamEndInfo] = []
    with tinker_sync.Client(
        api_key=tinker_server.api_key, base_url=tinker_server.url, event_hooks={"stream_end": [ends.append]}
    ) as client:
        with pytest.raises(RuntimeError, match="boom"):
            with client.with_streaming_response.checkpoints.archive(FINAL) as response:
                next(response.iter_bytes(1024))
                raise RuntimeError("boom")
        assert response.is_closed  # closed mid-body, not drained
        assert ends[-1].error is not None and "boom" in ends[-1].error
        assert 0 < ends[-1].bytes < (2 * MiB)
        with client.with_streaming_response.sampling.stream_sample("Hi", max_tokens=50) as response:
            stream = response.parse()
            assert next(iter(stream)).token == "tok0"
        assert response.is_closed and ends[-1].error is None


def test_streaming_view_of_an_event_stream(client):
    with client.with_streaming_response.sampling.stream_sample("Hi", max_tokens=2) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    assert [c.event_type for c in chunks] == ["token", "token", "done"]
    with client.with_streaming_response.sampling.stream_sample("Hi", max_tokens=2) as response:
        assert [e.id for e in response.iter_events()] == ["0", "1", "1"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_stream_to_file_resumes_and_re_signs(client, tinker_server, tmp_path: Path, waits):
    path = "tinker://run-9/weights/big"
    tinker_server.add_checkpoint(path, size=12 * MiB, seed=5)
    whole = client.checkpoints.archive(path)
    tinker_server.clear()
    # cut at 3 MiB, then the storage refuses the URL (expired): signed again and resumed at the same byte
    tinker_server.script("/signed/", Fault(reset_after=3 * MiB), Fault(status=403))
    progress: list[tuple[int, int | None]] = []
    with client.with_streaming_response.checkpoints.archive(path) as response:
        size = response.stream_to_file(tmp_path / "model.tar", progress=lambda d, t: progress.append((d, t)))
    assert size == len(whole) and sha256((tmp_path / "model.tar").read_bytes()) == sha256(whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar"]  # no .part, sidecar or lock left
    ranges = [r.headers.get("range") for r in signed(tinker_server)]
    assert ranges == [None, f"bytes={3 * MiB}-", f"bytes={3 * MiB}-"]
    archive_calls = [r for r in tinker_server.requests if r.path.endswith("/archive") and "/api/" in r.path]
    assert len(archive_calls) == 2  # re-signed once
    assert progress[-1] == (len(whole), len(whole))


def test_stream_to_file_leaves_nothing_when_it_fails(client, tinker_server, tmp_path: Path, waits):
    tinker_server.script("/signed/", Fault(reset_after=MiB), Fault(status=404))
    with pytest.raises(NotFoundError):
        with client.with_streaming_response.checkpoints.archive(FINAL) as response:
            response.stream_to_file(tmp_path / "model.tar")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.limit_memory("32 MB", current_thread_only=True)
def test_stream_to_file_in_constant_memory(client, tinker_server, tmp_path: Path):
    path = "tinker://run-9/weights/large"
    tinker_server.add_checkpoint(path, size=256 * MiB, seed=6, n_files=2)
    with client.with_streaming_response.checkpoints.archive(path) as response:
        size = response.stream_to_file(tmp_path / "model.tar")
    assert size > 256 * MiB and (tmp_path / "model.tar").stat().st_size == size


# -- typed decoding ---------------------------------------------------------------------------------


def canned(body: bytes, content_type: str = "application/json"):
    def script(conn, head, stop):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (content_type.encode(), len(body), body)
        )

    return script


RUN = (
    b'{"training_run_id": "r", "base_model": "m", "model_owner": "o", "is_lora": true,'
    b' "last_request_time": "2025-06-15T15:06:40Z"'
)
BAD_BODIES = [
    (
        "training_runs.list",
        b'{"training_runs": [], "cursor": {"offset": 0, "limit": 20, "total_count": "many"}}',
        "Expected `int`, got `str` - at `$.cursor.total_count`",
    ),
    (
        "training_runs.get",
        b'{"training_run_id": "r", "is_lora": true}',
        "missing required field `base_model`",
    ),
    (
        "checkpoints.list",
        b'{"checkpoints": [{"checkpoint_id": "weights/x", "checkpoint_type": "training"}]}',
        "missing required field `time` - at `$.checkpoints[0]`",
    ),
    ("sessions.list", b"<html>Bad gateway</html>", "not valid JSON"),
]


@pytest.mark.parametrize(("call", "body", "message"), BAD_BODIES, ids=[c for c, _, _ in BAD_BODIES])
def test_a_body_that_does_not_fit_names_the_field_and_shows_the_body(call, body, message):
    resource, method = call.split(".")
    with raw_server(canned(body), canned(body)) as url:
        client = tinker_sync.Client(api_key="tml-test-key", base_url=url, max_retries=0, handshake=False)
        with pytest.raises(APIResponseValidationError) as raised:
            getattr(getattr(client, resource), method)(*(["r"] if method == "get" else []))
        assert message in str(raised.value)
        assert f"the body starts with {body[:200]!r}" in str(raised.value)
        assert raised.value.status_code == 200
        # the raw view hands out the response; only parse() raises
        response = getattr(getattr(client.with_raw_response, resource), method)(
            *(["r"] if method == "get" else [])
        )
        assert response.read() == body
        with pytest.raises(APIResponseValidationError):
            response.parse()
        client.close()


def test_unknown_fields_are_tolerated_and_optional_ones_default():
    body = RUN + b', "a_new_field": {"nested": [1, 2]}}'
    with raw_server(canned(body)) as url:
        with tinker_sync.Client(api_key="tml-test-key", base_url=url, handshake=False) as client:
            run = client.training_runs.get("r")
    assert (run.training_run_id, run.corrupted, run.lora_rank, run.last_checkpoint) == (
        "r",
        False,
        None,
        None,
    )


@pytest.mark.parametrize(
    "call", ["training_runs.iter", "sessions.iter", "checkpoints.iter", "checkpoints.download"]
)
def test_helpers_that_are_not_one_call_have_no_views(client, tinker_server, call):
    resource, method = call.split(".")
    for view in (client.with_raw_response, client.with_streaming_response):
        with pytest.raises(TypeError, match=f"{method}\\(\\) has no"):
            getattr(getattr(view, resource), method)(
                *(["tinker://r/weights/x"] if method == "download" else [])
            )
    assert tinker_server.requests == []


def test_raw_view_writes_its_body_to_a_file(client, tmp_path: Path):
    response = client.with_raw_response.checkpoints.archive(FINAL)
    assert response.write_to_file(tmp_path / "model.tar") == len(response.read()) > 2 * MiB
    assert (tmp_path / "model.tar").read_bytes() == response.parse()
