"""ServiceClient details over real sockets: the session's project, checkpoints as new training clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tinker_sync import ServiceClient
from tinker_sync.testing import MockTinkerServer

BASE = "Qwen/Qwen3-8B"
UNSET = object()


@pytest.fixture
def server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer() as mock:
        yield mock


@pytest.mark.parametrize(
    ("argument", "environment", "filed_under"),
    [
        (None, "proj-env", "proj-env"),
        ("proj-arg", "proj-env", "proj-arg"),
        ("proj-arg", UNSET, "proj-arg"),
        (None, "", None),
        (None, UNSET, None),
    ],
)
def test_the_project_falls_back_to_tinker_project_id(
    server: MockTinkerServer,
    monkeypatch: pytest.MonkeyPatch,
    argument: str | None,
    environment: object,
    filed_under: str | None,
) -> None:
    if environment is UNSET:
        monkeypatch.delenv("TINKER_PROJECT_ID", raising=False)
    else:
        monkeypatch.setenv("TINKER_PROJECT_ID", str(environment))
    with ServiceClient(api_key=server.api_key, base_url=server.url, project_id=argument) as service:
        session_id = service.session_id
    (record,) = [r for r in server.sessions if r.session_id == session_id]
    assert record.project_id == filed_under
    (create,) = [r.json() for r in server.requests if r.path == "/api/v1/create_session"]
    assert create.get("project_id") == filed_under and ("project_id" in create) == (filed_under is not None)


@pytest.mark.parametrize(
    ("method", "optimizer"),
    [
        ("create_training_client_from_state", False),
        ("create_training_client_from_state_with_optimizer", True),
    ],
)
def test_both_from_state_methods_take_the_sdks_arguments(
    server: MockTinkerServer, method: str, optimizer: bool
) -> None:
    with ServiceClient(api_key=server.api_key, base_url=server.url) as service:
        trained = service.create_lora_training_client(BASE).result(30)
        saved = trained.save_state("ckpt").result(30).path
        made = getattr(service, method)(saved, BASE, {"run": "7"}, "token-1").result(30)
        assert made.model_id.startswith(f"{service.session_id}:train:")
        assert getattr(service, method).__doc__
    (load,) = [r.json() for r in server.requests if r.path == "/api/v1/load_weights"]
    assert load["optimizer"] is optimizer and load["path"] == saved and load["base_model"] == BASE
    assert load["user_metadata"] == {"run": "7"} and load["weights_access_token"] == "token-1"


@pytest.mark.parametrize("handshake", [True, False], ids=["handshake", "no-handshake"])
@pytest.mark.parametrize("jwt", [False, True], ids=["key", "jwt"])
def test_a_session_asks_for_the_servers_flags_once_and_follows_them(
    server: MockTinkerServer, handshake: bool, jwt: bool
) -> None:
    """As the official SDK: one client/config a session, whether the client's handshake or the
    session (a client made with handshake=False) asks; the engine follows the flags it answered."""
    import tinker_sync

    server.client_config.update(pjwt_auth_enabled=jwt and handshake, sample_use_retrieve_futures=True)
    client = tinker_sync.Client(api_key=server.api_key, base_url=server.url, handshake=handshake)
    service = ServiceClient(client=client)
    try:
        service.create_sampling_client(base_model=BASE).result(30)
        assert service._engine.retrieve_futures is True
    finally:
        service.close()
        client.close()
    assert [r.path for r in server.requests].count("/api/v1/client/config") == 1
    assert [r.path for r in server.requests].count("/api/v1/auth/token") == (1 if jwt and handshake else 0)
