"""The official RestClient's copy_weights, search_sessions, get_sampler and assign_session_project as
typed methods (``checkpoints.copy``, ``sessions.search`` / ``search_iter``, ``sampling.get_sampler``,
``sessions.assign_project``), over real sockets on the demo mock: results, the bodies sent (the
SDK's), their raw and streaming views, and bad input refused before anything is sent.
tests/test_official_parity.py compares the same calls with the official SDK's requests."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import unquote

import pytest

from tinker_sync import APIResponse, Client, NotFoundError
from tinker_sync.testing import MockTinkerServer
from tinker_sync.types import GetSamplerResponse, SessionSearchResponse, SessionSummary

FINAL = "tinker://run-001/weights/final"
SAMPLER = "session-001:sample:0"


@pytest.fixture
def server():
    with MockTinkerServer(demo_data=True) as server:
        yield server
        assert server.violations == []


@pytest.fixture
def client(server, monkeypatch):
    for name in ("TINKER_API_KEY", "TINKER_PROJECT_ID", "TINKER_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with Client(api_key=server.api_key, base_url=server.url, trust_env=False) as client:
        yield client


def _sent(server: MockTinkerServer, path: str) -> list:
    return [r for r in server.requests if unquote(r.path) == path]  # ours percent-encodes an id's ":"


# -- get_sampler ---------------------------------------------------------------------------------------


def test_get_sampler_names_its_base_model(client, server):
    sampler = client.sampling.get_sampler(SAMPLER)
    assert sampler == GetSamplerResponse(sampler_id=SAMPLER, base_model="Qwen/Qwen3-8B", model_path=None)
    with pytest.raises(NotFoundError):
        client.sampling.get_sampler("session-001:sample:99")
    assert [r.method for r in _sent(server, f"/api/v1/samplers/{SAMPLER}")] == ["GET"]
    server.clear()  # the 404 was asked for


def test_get_sampler_refuses_an_id_that_is_not_one_segment(client, server):
    with pytest.raises(ValueError, match="sampler id"):
        client.sampling.get_sampler("../sessions")
    assert [r.path for r in server.requests] == []


# -- search_sessions ------------------------------------------------------------------------------------


def test_a_search_sends_the_sdk_body_and_pages_newest_first(client, server):
    first = client.sessions.search(limit=4)
    assert _sent(server, "/api/v1/sessions/search")[-1].json() == {
        "user_metadata": {},
        "owner": {"type": "own"},
        "limit": 4,
    }
    assert isinstance(first, SessionSearchResponse) and len(first.sessions) == 4
    assert (
        first.next_cursor is not None and first.next_cursor.last_session_id == first.sessions[-1].session_id
    )
    second = client.sessions.search(limit=4, cursor=first.next_cursor)
    assert _sent(server, "/api/v1/sessions/search")[-1].json()["cursor"]["last_session_id"] == (
        first.sessions[-1].session_id
    )
    found = first.sessions + second.sessions
    times = [s.created_at for s in found]
    assert times == sorted(times, reverse=True) and all(isinstance(t, datetime) for t in times)
    assert len({s.session_id for s in found}) == 8


@pytest.mark.parametrize(("limit", "max_items"), [(7, None), (50, None), (200, None), (4, 10), (3, 0)])
def test_search_iter_follows_the_cursor_lazily_to_the_end(client, server, limit, max_items):
    everyone = client.sessions.list(limit=200).sessions
    server.clear()
    found = client.sessions.search_iter(limit=limit, max_items=max_items)
    assert _sent(server, "/api/v1/sessions/search") == []  # lazy: nothing before the first next()
    ids = [s.session_id for s in found]
    expected = len(everyone) if max_items is None else min(max_items, len(everyone))
    assert len(ids) == len(set(ids)) == expected and set(ids) <= set(everyone)
    pages = _sent(server, "/api/v1/sessions/search")
    assert len(pages) == (0 if expected == 0 else -(-expected // limit))
    assert all(page.json()["limit"] <= limit for page in pages)


# Filters: (arguments, the body's fields beside the defaults, a check of every session found).
FILTERS = {
    "display_name": (
        {"display_name": "session 2"},
        {"display_name": "session 2"},
        lambda s: all(word in (s.display_name or "") for word in ("session", "2")),  # every word
    ),
    "session_id": (
        {"session_id": "session-003"},
        {"session_id": "session-003"},
        lambda s: s.session_id == "session-003",
    ),
    "metadata": (
        {"user_metadata": {"experiment": "exp-2"}},
        {"user_metadata": {"experiment": "exp-2"}},
        lambda s: (s.user_metadata or {}).get("experiment") == "exp-2",
    ),
    "active": (
        {"statuses": ["active"]},
        {"statuses": [{"type": "active"}]},
        lambda s: s.status.type == "active",
    ),
    "finished_successfully": (
        {"statuses": ["client_finished"], "finish_reasons": ["success"]},
        {"statuses": [{"type": "client_finished", "reasons": ["success"]}]},
        lambda s: s.status.type == "client_finished" and s.status.reason == {"type": "success"},
    ),
    "accessible": ({"owner": "accessible"}, {"owner": {"type": "accessible"}}, lambda s: True),
    "users": (
        {"owner": ["tml:user:mock-user"]},
        {"owner": {"type": "user", "owner_urns": ["tml:user:mock-user"]}},
        lambda s: s.owner == "tml:user:mock-user",
    ),
    "project": ({"project_ids": ["proj-default"]}, {"project_ids": ["proj-default"]}, lambda s: True),
}


@pytest.mark.parametrize(("arguments", "fields", "check"), FILTERS.values(), ids=FILTERS.keys())
def test_each_search_filter_is_sent_as_the_sdk_sends_it(client, server, arguments, fields, check):
    found = list(client.sessions.search_iter(**arguments))
    assert found and all(isinstance(s, SessionSummary) and check(s) for s in found)
    body = _sent(server, "/api/v1/sessions/search")[0].json()
    assert body == {"user_metadata": {}, "owner": {"type": "own"}, "limit": 50, **fields}


BAD_SEARCHES = {
    "limit_0": ({"limit": 0}, "limit"),
    "limit_201": ({"limit": 201}, "limit"),
    "limit_float": ({"limit": 5.0}, "limit"),
    "empty_name": ({"display_name": ""}, "display_name"),
    "owner_word": ({"owner": "mine"}, "owner"),
    "owner_no_urns": ({"owner": []}, "owner"),
    "owner_eleven": ({"owner": [f"tml:user:{i}" for i in range(11)]}, "owner"),
    "reasons_alone": ({"finish_reasons": ["success"]}, "finish_reasons"),
    "reasons_other_state": ({"statuses": ["active"], "finish_reasons": ["errored"]}, "finish_reasons"),
}


@pytest.mark.parametrize(("arguments", "named"), BAD_SEARCHES.values(), ids=BAD_SEARCHES.keys())
@pytest.mark.parametrize("how", ["search", "search_iter"])
def test_a_bad_search_is_refused_before_anything_is_sent(client, server, arguments, named, how):
    with pytest.raises(ValueError, match=named):
        getattr(client.sessions, how)(**arguments)
    assert server.requests == []


# -- assign_session_project ---------------------------------------------------------------------------


def test_assign_project_moves_the_session(client, server):
    assert client.sessions.assign_project("session-002", "proj-archive") is None
    (sent,) = _sent(server, "/api/v1/sessions/session-002/project")
    assert (sent.method, sent.json()) == ("PUT", {"project_id": "proj-archive"})
    (moved,) = client.sessions.search(session_id="session-002").sessions
    assert moved.project_id == "proj-archive"
    with pytest.raises(NotFoundError):
        client.sessions.assign_project("session-999", "proj-archive")
    server.clear()  # the 404 was asked for


@pytest.mark.parametrize("project", ["", None, 7])
def test_assign_project_refuses_no_project_before_sending(client, server, project):
    with pytest.raises(ValueError, match="project_id"):
        client.sessions.assign_project("session-002", project)
    assert server.requests == []


# -- copy_weights -------------------------------------------------------------------------------------


def test_copy_returns_the_copy_path_and_the_copy_is_a_checkpoint(client, server):
    copied = client.checkpoints.copy(FINAL, "proj-archive", ttl_seconds=7200)
    assert copied.startswith("tinker://copy-") and copied.endswith("/weights/final")
    (sent,) = _sent(server, "/api/v1/copy_weights")
    assert sent.json() == {
        "source_path": FINAL,
        "destination_project_id": "proj-archive",
        "ttl_seconds": 7200,
    }
    assert "x-tinker-weights-access-token" not in sent.headers
    copy = client.checkpoints.get(copied)
    assert copy.tinker_path == copied and copy.expires_at is not None


def test_copy_takes_the_project_from_the_environment_or_refuses(client, server, monkeypatch):
    with pytest.raises(ValueError, match="TINKER_PROJECT_ID"):
        client.checkpoints.copy(FINAL)
    with pytest.raises(ValueError, match="tinker://"):
        client.checkpoints.copy("run-001/weights/final", "proj-archive")
    assert server.requests == []
    monkeypatch.setenv("TINKER_PROJECT_ID", "proj-env")
    with pytest.raises(ValueError, match="destination_project_id"):
        client.checkpoints.copy(FINAL, "")  # given, but empty: not the environment's (as the SDK)
    assert server.requests == []
    client.checkpoints.copy(FINAL)
    assert _sent(server, "/api/v1/copy_weights")[0].json() == {
        "source_path": FINAL,
        "destination_project_id": "proj-env",
    }


def test_the_access_token_goes_as_a_header_and_is_never_shown(server, monkeypatch, caplog):
    monkeypatch.delenv("TINKER_PROJECT_ID", raising=False)
    token = "wat-secret-0123456789"
    caplog.set_level(logging.DEBUG, logger="tinker_sync")
    with Client(api_key=server.api_key, base_url=server.url, trust_env=False, dump_headers=True) as client:
        client.checkpoints.copy(FINAL, "proj-archive", weights_access_token=token)
    (sent,) = _sent(server, "/api/v1/copy_weights")
    assert sent.headers["x-tinker-weights-access-token"] == token
    assert "weights_access_token" not in sent.json()
    assert "x-tinker-weights-access-token" in caplog.text.lower() and token not in caplog.text


# -- the views ----------------------------------------------------------------------------------------

VIEWS = {
    "get_sampler": (lambda r: r.sampling.get_sampler(SAMPLER), GetSamplerResponse),
    "search": (lambda r: r.sessions.search(limit=3), SessionSearchResponse),
    "assign_project": (lambda r: r.sessions.assign_project("session-004", "proj-x"), type(None)),
    "copy": (lambda r: r.checkpoints.copy(FINAL, "proj-archive"), str),
}


@pytest.mark.parametrize(("call", "result"), VIEWS.values(), ids=VIEWS.keys())
def test_raw_and_streaming_views_parse_to_the_plain_result(client, call, result):
    raw = call(client.with_raw_response)
    assert isinstance(raw, APIResponse) and raw.status_code in (200, 204)
    assert isinstance(raw.parse(), result)
    with call(client.with_streaming_response) as streamed:
        assert isinstance(streamed.parse(), result)
