"""Per-call overrides on the download methods (``Client.download``, ``checkpoints.download``,
``checkpoints.sync``), over real loopback sockets: where the extra headers and query go (the API's
requests and the URL the caller named, never a signed URL nor another origin a redirect leads to),
and the call's own timeout and retry budget. And ``FileOptions``: checked before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _sockets import RecordingServer

from tinker_sync import APITimeoutError, Client, InternalServerError
from tinker_sync._options import FileOptions, RequestOptions
from tinker_sync.testing import Fault, MockTinkerServer

API_KEY = "tml-test-key"
HEADERS = {"X-Trace-Id": "trace-1"}
QUERY = {"trace": "q1"}
W = "tinker://run-002/weights/step-0100"
X = "tinker://run-001/external_weights/hf-export"


@pytest.fixture
def demo():
    with MockTinkerServer(demo_data=True) as server:
        yield server
        assert server.violations == []


def _header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def _target(head: bytes) -> str:
    return head.decode("latin-1").split(" ", 2)[1]


# -- Client.download: the URL named, and where a redirect leads ----------------------------------

# Headers a caller may add, the sensitive ones included: each goes to the URL the caller named
# (as curl's -H), and never to another origin a redirect leads to (as the API key).
EXTRA = [
    {"X-Trace-Id": "trace-1"},
    {"Authorization": "Bearer caller-token"},
    {"Cookie": "session=caller"},
    {"X-Trace-Id": "trace-1", "X-Amz-Security-Token": "caller-store-token"},
]


@pytest.mark.parametrize("extra", EXTRA, ids=lambda e: "+".join(e))
def test_download_overrides_go_to_the_api_path_named(demo, tmp_path: Path, extra):
    with Client(api_key=demo.api_key, base_url=demo.url) as client:
        client.download("/test/bytes?size=5000", tmp_path / "f", extra_headers=extra, extra_query=QUERY)
    (request,) = [r for r in demo.requests if r.path == "/test/bytes"]
    for name, value in extra.items():
        assert request.headers[name.lower()] == value
    assert request.query == {"size": "5000", **QUERY}
    assert request.headers["x-api-key"] == demo.api_key
    assert request.headers["accept-encoding"] == "identity"  # the download's own header stays


@pytest.mark.parametrize("extra", EXTRA, ids=lambda e: "+".join(e))
@pytest.mark.parametrize("credentials", [True, False])
def test_download_overrides_go_to_a_signed_url_named(tmp_path: Path, extra, credentials):
    """A URL of another origin, named by the caller (a signed URL): its headers go there, the key never."""
    with RecordingServer("127.0.0.1") as api, RecordingServer("127.0.0.2") as store:
        with Client(api_key=API_KEY, base_url=api.url, max_retries=0) as client:
            client.download(
                f"{store.url}/file?sig=s", tmp_path / "f", credentials=credentials, extra_headers=extra
            )
        assert api.heads == []
        (head,) = store.heads
        for name, value in extra.items():
            assert _header(head, name) == value
        assert store.api_keys() == [False]


@pytest.mark.parametrize("extra", EXTRA, ids=lambda e: "+".join(e))
@pytest.mark.parametrize("where", ["another origin", "the same origin"])
def test_a_redirect_carries_the_extra_headers_only_within_the_origin(tmp_path: Path, extra, where):
    """An API path that redirects (to a signed URL): within its origin the extra headers and key
    go on; to another origin neither does, nor the extra query (the hop has its own URL)."""
    with RecordingServer("127.0.0.1") as api, RecordingServer("127.0.0.2") as store:
        hop = f"{store.url}/file?sig=s" if where == "another origin" else f"{api.url}/file?sig=s"
        api.redirects["/start?trace=q1"] = hop
        with Client(api_key=API_KEY, base_url=api.url, max_retries=0) as client:
            client.download("/start", tmp_path / "f", extra_headers=extra, extra_query=QUERY)
        first, *rest = api.heads
        assert _target(first) == "/start?trace=q1"
        for name, value in extra.items():
            assert _header(first, name) == value
        (followed,) = store.heads if where == "another origin" else rest
        assert _target(followed) == "/file?sig=s"
        for name, value in extra.items():
            assert _header(followed, name) == (None if where == "another origin" else value)
        assert (_header(followed, "X-API-Key") is not None) is (where == "the same origin")
        assert _header(followed, "Accept-Encoding") == "identity"  # the transfer's own header goes on


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_download_max_retries_per_call(tinker_server, tmp_path: Path, max_retries):
    tinker_server.script("/test/bytes", *[Fault(status=503)] * 5)
    waits: list[float] = []
    with Client(api_key=API_KEY, base_url=tinker_server.url, max_retries=10, sleep=waits.append) as client:
        with pytest.raises(InternalServerError):
            client.download("/test/bytes?size=1000", tmp_path / "f", max_retries=max_retries)
    assert len(tinker_server.requests) == max_retries + 1
    assert len(waits) == max_retries
    assert not (tmp_path / "f").exists()


def test_download_timeout_per_call(tinker_server, tmp_path: Path):
    # The client waits a minute for a head; this download only a fraction of a second.
    tinker_server.script("/test/bytes", Fault(delay_headers=30))
    with Client(api_key=API_KEY, base_url=tinker_server.url, timeout=60, max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            client.download("/test/bytes?size=1000", tmp_path / "f", timeout=0.2)


UNKNOWN: dict[str, Any] = {"extra_heders": {"a": "b"}}
CALLS = {
    "download": lambda c, out: c.download("/test/bytes?size=10", out / "f", **UNKNOWN),
    "checkpoints.download": lambda c, out: c.checkpoints.download(W, out, **UNKNOWN),
    "checkpoints.sync": lambda c, out: c.checkpoints.sync("run-001", out, **UNKNOWN),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_the_download_methods_refuse_an_unknown_override(client, tinker_server, tmp_path: Path, call):
    with pytest.raises(TypeError, match="extra_heders"):
        call(client, tmp_path)
    assert tinker_server.requests == []
    assert list(tmp_path.iterdir()) == []


# -- checkpoints.download and sync: every API request, never a signed URL -----------------------


def _check_routes(server: MockTinkerServer) -> None:
    # the call's API requests (the handshake, client/config, is the client's: once, before any)
    api = [r for r in server.requests if r.path.startswith("/api/") and r.path != "/api/v1/client/config"]
    signed = [r for r in server.requests if r.path.startswith("/signed/")]
    assert api and signed, [r.path for r in server.requests]
    for request in api:
        assert request.headers["x-trace-id"] == "trace-1", request.path
        if request.path != "/api/v1/retrieve_future":  # a future's polls: the headers, not the query
            assert request.query.get("trace") == "q1", request.path
    for request in signed:  # its own authorization: neither the key nor the caller's headers and query
        assert "x-api-key" not in request.headers and "x-trace-id" not in request.headers, request.path
        assert "trace" not in request.query, request.path


@pytest.mark.parametrize("path", [W, X], ids=["weights (archive)", "external_weights"])
def test_checkpoint_download_overrides_go_to_every_api_request(demo, tmp_path: Path, path):
    with Client(api_key=demo.api_key, base_url=demo.url) as client:
        target = client.checkpoints.download(
            path, tmp_path, extra_headers=HEADERS, extra_query=QUERY, timeout=30, max_retries=2
        )
    assert any(target.iterdir())
    _check_routes(demo)


def test_checkpoint_download_overrides_in_the_export_flow(tinker_server, tmp_path: Path):
    tinker_server.add_checkpoint(W, size=300_000, seed=3, n_files=2)
    tinker_server.archive_mode = "export"
    with Client(api_key=API_KEY, base_url=tinker_server.url) as client:
        target = client.checkpoints.download(W, tmp_path, extra_headers=HEADERS, extra_query=QUERY)
    assert any(target.iterdir())
    _check_routes(tinker_server)
    posts = {r.path for r in tinker_server.requests if r.method == "POST"}
    assert {"/api/v1/create_session", "/api/v1/save_weights_external"} <= posts  # the flow ran
    assert tinker_server.violations == []


def test_checkpoint_sync_overrides_go_to_every_api_request(demo, tmp_path: Path):
    with Client(api_key=demo.api_key, base_url=demo.url) as client:
        report = client.checkpoints.sync(
            "run-001", tmp_path, latest=2, extra_headers=HEADERS, extra_query=QUERY, timeout=30
        )
    assert report.status == "synced" and len(report.downloaded) == 2
    _check_routes(demo)


@pytest.mark.parametrize("max_retries", [0, 2])
def test_checkpoint_download_max_retries_per_call(tinker_server, tmp_path: Path, max_retries):
    tinker_server.add_checkpoint(W, size=100_000, seed=4, n_files=1)
    archive = "/api/v1/training_runs/run-002/checkpoints/weights/step-0100/archive"
    tinker_server.script(archive, *[Fault(status=500)] * 5)
    waits: list[float] = []
    with Client(api_key=API_KEY, base_url=tinker_server.url, max_retries=10, sleep=waits.append) as client:
        with pytest.raises(InternalServerError):
            client.checkpoints.download(W, tmp_path, max_retries=max_retries)
    assert len([r for r in tinker_server.requests if r.path == archive]) == max_retries + 1
    assert len(waits) == max_retries
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []  # no target, no temp directory


# -- FileOptions: checked when built, before any request -------------------------------------------

BAD_FILE_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"connections": 0}, ValueError, "connections"),
    ({"connections": "many"}, ValueError, "connections"),
    ({"connections": 2.0}, ValueError, "connections"),
    ({"expected_size": -1}, ValueError, "expected_size"),
    ({"expected_size": 1.5}, ValueError, "expected_size"),
    ({"expected_sha256": "abc"}, ValueError, "expected_sha256"),
    ({"progress": 3}, TypeError, "progress"),
]


@pytest.mark.parametrize(("fields", "error", "match"), BAD_FILE_OPTIONS)
def test_file_options_refuse_a_bad_value_before_anything_is_sent(
    client, tinker_server, tmp_path: Path, fields, error, match
):
    with pytest.raises(error, match=match):
        FileOptions(**fields)
    with pytest.raises(error, match=match):
        client.download("/test/bytes?size=10", tmp_path / "f", **fields)
    if "expected_size" not in fields and "expected_sha256" not in fields:
        with pytest.raises(error, match=match):
            client.checkpoints.download(W, tmp_path, **fields)
    assert tinker_server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_request_options_carry_the_file_options_unchanged():
    file = FileOptions(expected_size=10, connections=2)
    options = RequestOptions("GET", "/x", file=file).overridden({"extra_headers": HEADERS, "timeout": 5})
    assert options.file is file
    assert options.for_resume().file is file
    signed = options.signed("https://store.example/f?sig=s")
    assert signed.file is file and signed.timeout == 5
    assert signed.headers is None and signed.params is None and signed.credentials is False


def test_export_trace_takes_the_extras_on_every_poll(demo, tmp_path: Path):
    """``timeout`` is export_trace's whole wait; the other overrides go with every poll, and the
    trace's signed URL is fetched with none of them unless given to that download."""
    with Client(api_key=demo.api_key, base_url=demo.url, sleep=lambda seconds: None) as client:
        url = client.sessions.export_trace(
            "session-001", poll_interval=0.01, extra_headers=HEADERS, extra_query=QUERY, max_retries=1
        )
        path = client.download(url, tmp_path / "t.pftrace", credentials=False)
    assert path.stat().st_size > 0
    polls = [r for r in demo.requests if r.path.endswith("/trace_export")]
    assert len(polls) == 2  # pending, then ready
    for poll in polls:
        assert poll.headers["x-trace-id"] == "trace-1" and poll.query == QUERY
    _check_routes(demo)


def test_export_trace_max_retries_per_call(tinker_server):
    tinker_server.script("/api/v1/sessions/", *[Fault(status=503)] * 5)
    waits: list[float] = []
    with Client(api_key=API_KEY, base_url=tinker_server.url, max_retries=10, sleep=waits.append) as client:
        with pytest.raises(InternalServerError):
            client.sessions.export_trace("session-001", max_retries=1)
    polls = [r for r in tinker_server.requests if r.path.endswith("/trace_export")]
    assert len(polls) == 2 and len(waits) == 1
