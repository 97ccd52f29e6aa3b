"""The typed resources against the mock server's demo data, over loopback sockets.

Every test ends with ``server.violations == []``: the mock records any request
of the wrong method, path, headers or JSON shape.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from tinker_sync import ConflictError, NotFoundError
from tinker_sync.resources.checkpoints import parse_tinker_path
from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing.archives import expected_files
from tinker_sync.types import (
    Checkpoint,
    CheckpointArchiveUrl,
    CheckpointList,
    HealthResponse,
    ServerCapabilities,
    Session,
    SessionList,
    TrainingRun,
    TrainingRunList,
)

# The demo dataset (ids in docs/TESTING.md) behind ``tinker_server`` and the ``client`` on it; a
# client mistake the server records fails the test (conftest.py).
pytestmark = pytest.mark.demo_data


def api_requests(server: MockTinkerServer, path: str) -> list[str]:
    """The query strings of the recorded requests to ``path``, in order."""
    return [
        "&".join(f"{k}={v}" for k, v in sorted(r.query.items())) for r in server.requests if r.path == path
    ]


# -- the server -------------------------------------------------------------------------------------


def test_health_and_capabilities(client, tinker_server):
    assert client.health.check() == HealthResponse(status="ok")
    capabilities = client.server.capabilities()
    assert isinstance(capabilities, ServerCapabilities)
    assert [m.model_name for m in capabilities.supported_models] == tinker_server.supported_models
    assert all(m.trainable and m.max_context_length == 32768 for m in capabilities.supported_models)


# -- training runs ----------------------------------------------------------------------------------


def test_training_runs_list_is_a_page_with_a_cursor(client):
    page = client.training_runs.list()
    assert isinstance(page, TrainingRunList)
    assert [r.training_run_id for r in page.training_runs] == [f"run-{i:03d}" for i in range(1, 21)]
    assert (page.cursor.offset, page.cursor.limit, page.cursor.total_count) == (0, 20, 45)
    last = client.training_runs.list(limit=20, offset=40)
    assert [r.training_run_id for r in last.training_runs] == [f"run-{i:03d}" for i in range(41, 46)]
    shared = client.training_runs.list(limit=100, access_scope="accessible")
    assert shared.cursor.total_count == 48
    assert {r.model_owner for r in shared.training_runs} == {"mock-user", "teammate"}


def test_training_runs_get(client):
    run = client.training_runs.get("run-001")
    assert isinstance(run, TrainingRun)
    assert (run.base_model, run.lora_rank, run.is_lora, run.corrupted) == ("Qwen/Qwen3-8B", 16, True, False)
    assert (
        run.last_checkpoint is not None
        and run.last_checkpoint.tinker_path == "tinker://run-001/weights/final"
    )
    assert run.last_request_time.tzinfo is not None
    assert client.training_runs.get("run-013").corrupted
    with pytest.raises(NotFoundError):
        client.training_runs.get("shared-001")  # another owner's: only with access_scope="accessible"
    assert client.training_runs.get("shared-001", access_scope="accessible").model_owner == "teammate"


def test_iter_sends_nothing_until_iterated_then_one_page_at_a_time(client, tinker_server):
    runs = client.training_runs.iter()
    assert api_requests(tinker_server, "/api/v1/training_runs") == []  # lazy: not sent yet
    first = next(runs)
    assert first.training_run_id == "run-001"
    assert api_requests(tinker_server, "/api/v1/training_runs") == ["access_scope=owned&limit=20&offset=0"]
    for _ in range(19):
        next(runs)
    assert len(api_requests(tinker_server, "/api/v1/training_runs")) == 1  # page 2 not needed yet
    rest = list(runs)
    assert [r.training_run_id for r in rest][-1] == "run-045" and len(rest) == 25
    # stops at total_count: no request for a page past the last one
    assert api_requests(tinker_server, "/api/v1/training_runs") == [
        "access_scope=owned&limit=20&offset=0",
        "access_scope=owned&limit=20&offset=20",
        "access_scope=owned&limit=20&offset=40",
    ]


@pytest.mark.parametrize(
    ("kwargs", "expected", "requests"),
    [
        ({"max_items": 3}, ["run-001", "run-002", "run-003"], ["limit=3&offset=0"]),
        ({"max_items": 0}, [], []),
        (
            {"limit": 10, "max_items": 25},
            None,
            ["limit=10&offset=0", "limit=10&offset=10", "limit=5&offset=20"],
        ),
        ({"offset": 43}, ["run-044", "run-045"], ["limit=20&offset=43"]),
        ({"limit": 15}, None, ["limit=15&offset=0", "limit=15&offset=15", "limit=15&offset=30"]),
    ],
    ids=["max_items", "max_items_0", "last_page_asks_less", "offset", "exact_pages"],
)
def test_iter_bounds(client, tinker_server, kwargs, expected, requests):
    got = [r.training_run_id for r in client.training_runs.iter(**kwargs)]
    if expected is not None:
        assert got == expected
    else:
        start = kwargs.get("offset", 0)
        count = min(45 - start, kwargs.get("max_items", 45))
        assert got == [f"run-{i:03d}" for i in range(start + 1, start + 1 + count)]
    sent = [
        q.replace("access_scope=owned&", "") for q in api_requests(tinker_server, "/api/v1/training_runs")
    ]
    assert sent == requests


@pytest.mark.parametrize(
    ("cap", "kwargs", "count", "offsets"),
    [
        (7, {}, 45, [0, 7, 14, 21, 28, 35, 42]),
        (7, {"limit": 7}, 45, [0, 7, 14, 21, 28, 35, 42]),
        (10, {"offset": 30}, 15, [30, 40]),
        (7, {"max_items": 10}, 10, [0, 7]),
        (50, {"limit": 100}, 45, [0]),
    ],
    ids=["capped", "exact_cap", "capped_offset", "capped_max_items", "cap_above_total"],
)
def test_iter_goes_on_past_pages_a_server_caps(client, tinker_server, cap, kwargs, count, offsets):
    """A server that answers fewer items than the limit asked (it caps its pages) is not at its
    end while the cursor's total_count says there are more."""
    tinker_server.max_page_size = cap
    got = [r.training_run_id for r in client.training_runs.iter(**kwargs)]
    start = kwargs.get("offset", 0)
    assert got == [f"run-{i:03d}" for i in range(start + 1, start + 1 + count)]
    sent = [r.query for r in tinker_server.requests if r.path == "/api/v1/training_runs"]
    assert [int(q["offset"]) for q in sent] == offsets


def test_checkpoints_iter_goes_on_past_capped_pages(client, tinker_server):
    everything = [c.tinker_path for c in client.checkpoints.iter()]
    tinker_server.max_page_size = 30
    assert [c.tinker_path for c in client.checkpoints.iter()] == everything
    assert len(everything) > 60  # several capped pages


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"max_items": -1}, {"offset": -5}])
def test_iter_checks_its_arguments_at_once(client, tinker_server, kwargs):
    with pytest.raises(ValueError):
        client.training_runs.iter(**kwargs)
    assert tinker_server.requests == []


# -- sessions ---------------------------------------------------------------------------------------


def test_sessions(client, tinker_server):
    page = client.sessions.list(limit=5)
    assert page == SessionList(sessions=[f"session-{k:03d}" for k in range(1, 6)])
    everything = list(client.sessions.iter(limit=7))
    assert everything == [f"session-{k:03d}" for k in range(1, 31)]
    # no total in the API: the short page (30 = 4 * 7 + 2) is the last one
    assert len(api_requests(tinker_server, "/api/v1/sessions")) == 1 + 5
    session = client.sessions.get("session-001")
    assert session == Session(
        training_run_ids=["run-001", "run-031"],
        sampler_ids=["session-001:sample:0"],
        user_metadata=None,
        display_name="demo session 1",
    )
    assert list(client.sessions.iter(max_items=2)) == ["session-001", "session-002"]
    with pytest.raises(NotFoundError):
        client.sessions.get("session-999")


# -- checkpoints ------------------------------------------------------------------------------------


def test_checkpoints_iter_newest_first_across_pages(client, tinker_server):
    checkpoints = list(client.checkpoints.iter())
    assert len(checkpoints) == 268 and all(isinstance(c, Checkpoint) for c in checkpoints)
    assert checkpoints[0].tinker_path == "tinker://run-044/sampler_weights/step-0400"
    times = [c.time for c in checkpoints]
    assert times == sorted(times, reverse=True)
    assert api_requests(tinker_server, "/api/v1/checkpoints") == [
        "limit=100&offset=0",
        "limit=100&offset=100",
        "limit=100&offset=200",
    ]
    assert [c.tinker_path for c in client.checkpoints.iter(max_items=2)] == [
        c.tinker_path for c in checkpoints[:2]
    ]


def test_checkpoints_list_get_and_management(client, tinker_server, waits):
    assert isinstance(client.checkpoints.list(), CheckpointList)
    listed = client.checkpoints.list("run-003").checkpoints
    assert {c.checkpoint_id for c in listed} == {
        "weights/step-0100",
        "weights/step-0200",
        "sampler_weights/step-0100",
        "sampler_weights/step-0200",
    }
    assert listed == client.checkpoints.list_for_run("run-003").checkpoints
    final = client.checkpoints.get("tinker://run-001/weights/final")
    assert (final.checkpoint_type, final.size_bytes, final.public) == ("training", 2 << 20, False)
    with pytest.raises(LookupError, match="No checkpoint tinker://run-001/weights/nope"):
        client.checkpoints.get("tinker://run-001/weights/nope")

    path = "tinker://run-001/weights/step-0100"
    assert client.checkpoints.publish(path) is None
    assert client.checkpoints.get(path).public
    with pytest.raises(ConflictError):
        client.checkpoints.publish(path)  # "already public" is the answer: not retried
    assert waits == []
    client.checkpoints.unpublish(path)
    with pytest.raises(ConflictError):
        client.checkpoints.unpublish(path)  # already private
    assert waits == []
    assert not client.checkpoints.get(path).public
    client.checkpoints.set_ttl(path, 7200)
    expires = client.checkpoints.get(path).expires_at
    assert expires is not None and 7100 < (expires - datetime.now(UTC)).total_seconds() <= 7200
    client.checkpoints.set_ttl(path, None)
    assert client.checkpoints.get(path).expires_at is None
    client.checkpoints.delete(path)
    assert tinker_server.deleted_checkpoints == [path]
    with pytest.raises(LookupError):
        client.checkpoints.get(path)


def test_archive_url_is_the_302_not_followed(client, tinker_server):
    found = client.checkpoints.archive_url("tinker://run-001/weights/final")
    assert isinstance(found, CheckpointArchiveUrl)
    assert found.url.startswith(tinker_server.url + "/signed/") and "sig=" in found.url
    assert found.expires is not None
    assert 800 < (found.expires - datetime.now(UTC)).total_seconds() <= 901
    assert not [r for r in tinker_server.requests if r.path.startswith("/signed/")]  # not followed


def test_archive_and_external_weights_urls(client, tinker_server):
    body = client.checkpoints.archive("tinker://run-001/weights/final")
    assert body[257:262] == b"ustar"  # a tar archive
    signed = [r for r in tinker_server.requests if r.path.startswith("/signed/")]
    assert len(signed) == 1 and "x-api-key" not in signed[0].headers
    urls = client.checkpoints.external_weights_urls("tinker://run-001/external_weights/hf-export")
    assert sorted(urls.urls) == sorted(expected_files(1998, 3 * (1 << 20) + 512, 5))
    assert urls.expires > datetime.now(UTC)
    with pytest.raises(ValueError, match="Only external_weights"):
        client.checkpoints.external_weights_urls("tinker://run-001/weights/final")


# -- path encoding ----------------------------------------------------------------------------------

NAMES = {
    "space": "my checkpoint",
    "percent": "100%done",
    "hash": "v1#final",
    "question": "what?now",
    "unicode": "étape-été-🚀",
    "plus_and_colon": "a+b:c",
}


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_checkpoint_ids_are_encoded_component_by_component(client, tinker_server, name):
    run = f"run {name}"
    weights = f"tinker://{run}/weights/{name}"
    external = f"tinker://{run}/external_weights/{name}"
    tinker_server.add_checkpoint(weights, size=4096, seed=3, n_files=2)
    tinker_server.add_checkpoint(external, size=4096, seed=4, n_files=2)

    assert client.training_runs.get(run).training_run_id == run
    assert client.checkpoints.get(weights).checkpoint_id == f"weights/{name}"
    assert {c.tinker_path for c in client.checkpoints.list(run).checkpoints} == {weights, external}
    assert client.checkpoints.archive_url(weights).url.startswith(tinker_server.url + "/signed/")
    assert len(client.checkpoints.external_weights_urls(external).urls) == 2
    assert client.checkpoints.archive(weights)[257:262] == b"ustar"
    client.checkpoints.publish(weights)
    client.checkpoints.set_ttl(weights, 3600)
    client.checkpoints.delete(weights)
    assert tinker_server.deleted_checkpoints == [weights]

    # On the wire: each component percent-encoded alone, the kind's "/" kept, nothing in a query.
    base = f"/api/v1/training_runs/{quote(run, safe='')}"
    checkpoint = f"{base}/checkpoints/weights/{quote(name, safe='')}"
    sent = [(r.method, r.path) for r in tinker_server.requests if r.path.startswith("/api/")]
    for expected in [
        ("GET", base),
        ("GET", base + "/checkpoints"),
        ("GET", checkpoint + "/archive"),
        ("POST", checkpoint + "/publish"),
        ("PUT", checkpoint + "/ttl"),
        ("DELETE", checkpoint),
        ("GET", f"{base}/checkpoints/external_weights/{quote(name, safe='')}/external_weights_urls"),
    ]:
        assert expected in sent
    assert all(path.isascii() and not set(" #?") & set(path) for _, path in sent)


@pytest.mark.parametrize(
    ("path", "api_path"),
    [
        ("tinker://run-1/weights/final", "/api/v1/training_runs/run-1/checkpoints/weights/final"),
        ("tinker://a b/weights/c d", "/api/v1/training_runs/a%20b/checkpoints/weights/c%20d"),
        ("tinker://r/sampler_weights/50%", "/api/v1/training_runs/r/checkpoints/sampler_weights/50%25"),
        ("tinker://r#1/weights/x?y", "/api/v1/training_runs/r%231/checkpoints/weights/x%3Fy"),
        (
            "tinker://s:train:0/external_weights/é",
            "/api/v1/training_runs/s%3Atrain%3A0/checkpoints/external_weights/%C3%A9",
        ),
    ],
)
def test_api_path_encoding(path, api_path):
    assert parse_tinker_path(path).api_path == api_path


@pytest.mark.parametrize(
    "bad", ["", "tinker://", "tinker://r/weights", "tinker://r/blob/x", "tinker://r/weights/.."]
)
def test_bad_paths_are_refused_before_sending(client, tinker_server, bad):
    with pytest.raises(ValueError):
        client.checkpoints.get(bad)
    with pytest.raises(ValueError):
        client.with_streaming_response.checkpoints.archive(bad)
    assert tinker_server.requests == []


@pytest.mark.parametrize("call", ["training_runs.get", "sessions.get", "checkpoints.list_for_run"])
def test_empty_ids_are_refused(client, tinker_server, call):
    resource, method = call.split(".")
    with pytest.raises(ValueError, match="empty"):
        getattr(getattr(client, resource), method)("")
    assert tinker_server.requests == []
