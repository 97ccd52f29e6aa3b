"""The official client's handshake and auth, over real sockets: client/config, JWTs, credential sources."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from _front import Front

from tinker_sync import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    Client,
    InternalServerError,
    PermissionDeniedError,
    TinkerError,
)
from tinker_sync._auth import REFRESH_MARGIN, _Token, jwt_claims
from tinker_sync._credentials import run_credential_command, save_credentials
from tinker_sync._version import SDK_VERSION
from tinker_sync.testing import Fault, MockTinkerServer


@pytest.fixture
def server():
    with MockTinkerServer(demo_data=True) as server:
        server.future_polls = 0
        yield server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("TINKER_API_KEY", "TINKER_CREDENTIAL_CMD", "TINKER_PROJECT_ID", "TINKER_TAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _client(server: MockTinkerServer, **kw) -> Client:
    kw.setdefault("api_key", server.api_key)
    return Client(base_url=server.url, trust_env=False, **kw)


def _api(server: MockTinkerServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests if r.path.startswith("/api/")]


@pytest.mark.parametrize("pjwt", [False, True])
def test_the_handshake_comes_first_and_once_per_client_and_its_copies(server, pjwt):
    server.client_config["pjwt_auth_enabled"] = pjwt
    with _client(server) as client:
        client.training_runs.get("run-001")
        client.with_options(timeout=30).training_runs.get("run-002")
        client.checkpoints.list()
    calls = _api(server)
    assert calls[0] == ("POST", "/api/v1/client/config")
    assert calls.count(("POST", "/api/v1/client/config")) == 1
    assert calls.count(("POST", "/api/v1/auth/token")) == (1 if pjwt else 0)
    config = next(r for r in server.requests if r.path == "/api/v1/client/config")
    assert config.json() == {"sdk_version": SDK_VERSION} and config.headers["x-api-key"] == server.api_key
    for request in server.requests:
        if request.path.startswith("/api/v1/") and request.path not in (
            "/api/v1/client/config",
            "/api/v1/auth/token",
        ):
            assert request.headers["x-api-key"].startswith("eyJ" if pjwt else "tml-"), request.path
    assert server.violations == []


def test_a_server_without_client_config_means_the_defaults(server):
    server.script("/api/v1/client/config", Fault(status=404))
    with _client(server) as client:
        assert client.training_runs.get("run-001").training_run_id == "run-001"
    assert server.tokens_issued == 0 and server.violations == []


def test_a_default_client_follows_jwt_auth_without_any_flag(server):
    server.client_config["pjwt_auth_enabled"] = True
    with Client(api_key=server.api_key, base_url=server.url) as client:  # no handshake argument
        assert client.training_runs.get("run-001").training_run_id == "run-001"
    assert _api(server) == [
        ("POST", "/api/v1/client/config"),
        ("POST", "/api/v1/auth/token"),
        ("GET", "/api/v1/training_runs/run-001"),
    ]
    assert server.requests[-1].headers["x-api-key"].startswith("eyJ")
    assert server.tokens_issued == 1 and server.violations == []


CONFIG = "/api/v1/client/config"
TARGET = ("GET", "/api/v1/training_runs/run-001")

# How client/config may fail, and what the call that needed it does: (faults queued on client/config,
# the call's max_retries, the exception or None, the client/config requests sent). The handshake is
# part of that call: its timeout and retries; the call's own request goes only after it.
HANDSHAKE_FAILURES = {
    "5xx_retried_in_the_call": ([Fault(status=503, retry_after=0)], 2, None, 2),
    "5xx_past_the_call_budget": ([Fault(status=503, retry_after=0)] * 2, 1, InternalServerError, 2),
    "5xx_with_no_retries": ([Fault(status=500)], 0, InternalServerError, 1),
    "429_retried": ([Fault(status=429, retry_after=0)], 1, None, 2),
    "401_never_retried": ([Fault(status=401)], 3, AuthenticationError, 1),
    "403_never_retried": ([Fault(status=403)], 3, PermissionDeniedError, 1),
    "cut_before_the_body_retried": ([Fault(reset_after=0)], 1, None, 2),
    "cut_every_time": ([Fault(reset_after=0)] * 3, 2, APIConnectionError, 3),
    "no_answer_within_the_call_timeout": ([Fault(delay_headers=30)], 0, APITimeoutError, 1),
}


@pytest.mark.parametrize(
    ("faults", "retries", "error", "sent"), HANDSHAKE_FAILURES.values(), ids=HANDSHAKE_FAILURES.keys()
)
def test_a_failing_handshake_fails_its_call_within_its_budget_and_is_asked_again(
    server, waits, faults, retries, error, sent
):
    server.script(CONFIG, *faults)
    with _client(server, sleep=waits.append) as client:
        # a short timeout only where the server keeps still (elsewhere a slow answer under load must pass)
        call = client.with_options(max_retries=retries, timeout=0.5 if faults[0].delay_headers else None)
        if error is None:
            assert call.training_runs.get("run-001").training_run_id == "run-001"
        else:
            with pytest.raises(error) as raised:
                call.training_runs.get("run-001")
            assert "POST client/config" in "".join(raised.value.__notes__)  # says what failed
            assert TARGET not in _api(server)  # the call's own request never went
            assert len(waits) == sent - 1
            # A failure is not remembered: the next call asks again, and goes on.
            assert client.training_runs.get("run-001").training_run_id == "run-001"
            sent += 1
    calls = _api(server)
    assert calls.count(("POST", CONFIG)) == sent and calls[-1] == TARGET
    server.clear()  # the faults were the point


def test_the_handshake_belongs_to_the_call_that_needed_it_in_the_hooks(server, waits):
    """One logical call, one request / response / stream_end; the handshake's retry is reported."""
    seen: dict[str, list] = {name: [] for name in ("request", "response", "stream_end", "retry")}
    server.script(CONFIG, Fault(status=503, retry_after=0))
    hooks = {name: [records.append] for name, records in seen.items()}
    with _client(server, sleep=waits.append, event_hooks=hooks) as client:
        client.training_runs.get("run-001")
    assert [r.url.split("?")[0] for r in seen["request"]] == [server.url + TARGET[1]]
    assert len(seen["response"]) == len(seen["stream_end"]) == 1
    assert seen["stream_end"][0].attempts == 1  # the call's own sends
    (retry,) = seen["retry"]
    assert retry.url == server.url + CONFIG and retry.reason == "HTTP 503"
    server.clear()


def test_a_copy_spends_its_own_budget_on_the_handshake(server, waits):
    server.script(CONFIG, Fault(status=503, retry_after=0), Fault(status=503, retry_after=0))
    with _client(server, sleep=waits.append, max_retries=5) as client:
        with pytest.raises(InternalServerError):
            client.with_options(max_retries=0).training_runs.get("run-001")
        assert client.training_runs.get("run-001").training_run_id == "run-001"  # retries the second 503
    assert _api(server).count(("POST", CONFIG)) == 3 and len(waits) == 1
    server.clear()


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"[]", "answered list, not a JSON object"), (b'"ok"', "answered str, not a JSON object")],
)
def test_a_config_that_is_not_a_json_object_is_a_clear_error(server, body, message):
    with Front(server.url, {CONFIG: lambda query, upstream: (200, body)}) as front:
        with Client(api_key=server.api_key, base_url=front.url, max_retries=0) as client:
            with pytest.raises(TinkerError, match=message) as raised:
                client.training_runs.get("run-001")
            assert "handshake=False" in str(raised.value)
        with Client(api_key=server.api_key, base_url=front.url, handshake=False) as client:
            assert client.training_runs.get("run-001").training_run_id == "run-001"
    assert _api(server) == [TARGET]  # only the opted-out client reached the API


def test_signed_urls_trigger_no_handshake(server, tmp_path):
    urls = None
    with _client(server) as client:
        urls = client.checkpoints.external_weights_urls("tinker://run-001/external_weights/hf-export")
    server.clear()
    with _client(server) as client:
        url = next(iter(urls.urls.values()))
        client.download(url, tmp_path / "f", credentials=False)
    assert _api(server) == [] and server.violations == []


@pytest.mark.parametrize(("lifetime", "tokens"), [(3600.0, 1), (30.0, 3)])
def test_a_jwt_is_replaced_only_when_it_nears_expiry(server, lifetime, tokens):
    server.client_config["pjwt_auth_enabled"] = True
    server.jwt_lifetime = lifetime
    with _client(server) as client:
        for run in ("run-001", "run-002", "run-003"):
            client.training_runs.get(run)
    assert server.tokens_issued == tokens and server.violations == []


@pytest.mark.parametrize(
    ("lifetime", "refresh_after"), [(7200.0, 3600.0), (200.0, 100.0), (100.0, 40.0), (30.0, -30.0)]
)
def test_refresh_at_half_life_or_with_60_s_left(server, lifetime, refresh_after):
    token = _Token(server.mint_jwt(lifetime))
    issued = float(jwt_claims(token.value)["iat"])
    assert token.refresh_at - issued == pytest.approx(refresh_after, abs=0.5)
    assert token.expires - issued == pytest.approx(lifetime)
    assert REFRESH_MARGIN == 60.0
    assert "eyJ" not in repr(token)


def test_a_refused_jwt_is_replaced_and_the_request_replayed_once(server):
    server.client_config["pjwt_auth_enabled"] = True
    with _client(server) as client:
        client.training_runs.get("run-001")
        server.refuse_jwt(1)
        assert client.training_runs.get("run-002").training_run_id == "run-002"
        server.refuse_jwt(2)
        with pytest.raises(AuthenticationError):
            client.training_runs.get("run-003")
    sent = [r for r in server.requests if r.path == "/api/v1/training_runs/run-002"]
    assert len(sent) == 2 and sent[0].headers["x-api-key"] != sent[1].headers["x-api-key"]
    assert len([r for r in server.requests if r.path == "/api/v1/training_runs/run-003"]) == 2
    assert server.violations == []


def test_a_revoked_jwt_on_a_stream_is_replaced_too(server, tmp_path):
    server.client_config["pjwt_auth_enabled"] = True
    with _client(server) as client:
        client.training_runs.get("run-001")
        server.revoke_tokens()
        time.sleep(0.01)
        result = client.checkpoints.download("tinker://run-001/weights/final", tmp_path)
    assert result.is_dir() and any(result.iterdir())
    assert server.violations == []


@pytest.mark.slow
def test_expiry_mid_download_needs_no_jwt_and_the_next_call_refreshes(server, tmp_path):
    server.client_config["pjwt_auth_enabled"] = True
    server.jwt_lifetime = 2.0
    server.add_checkpoint("tinker://long/weights/big", size=256 * 1024, n_files=1)
    server.script("/signed/", Fault(rate=64 * 1024))  # the archive takes ~4 s: the JWT expires meanwhile
    with _client(server) as client:
        client.checkpoints.download("tinker://long/weights/big", tmp_path)
        before = server.tokens_issued
        client.training_runs.get("run-001")
    assert server.tokens_issued == before + 1
    signed = [r for r in server.requests if r.path.startswith("/signed/")]
    assert signed and all("x-api-key" not in r.headers for r in signed)
    assert server.violations == []


def test_the_jwt_is_never_logged_or_shown(server, caplog):
    server.client_config["pjwt_auth_enabled"] = True
    caplog.set_level(logging.DEBUG, logger="tinker_sync")
    with _client(server, dump_headers=True) as client:
        client.training_runs.get("run-001")
        server.refuse_jwt(2)
        with pytest.raises(AuthenticationError) as info:
            client.training_runs.get("run-002")
        shown = [caplog.text, repr(client), repr(client._auth), str(info.value), repr(client._auth.source)]
    tokens = [
        r.headers["x-api-key"] for r in server.requests if r.headers.get("x-api-key", "").startswith("eyJ")
    ]
    assert tokens
    for text in shown:
        for token in tokens:
            assert token not in text and token[-20:] not in text
        assert server.api_key not in text


# -- credential sources ------------------------------------------------------------------------------


def _store(home: Path, key: str, mode: int = 0o600) -> Path:
    path = home / ".tinker" / "credentials.json"
    save_credentials(
        path, {"version": 1, "default": "7", "keys": {"7": {"type": "manual", "key": key, "name": "k"}}}
    )
    os.chmod(path, mode)
    return path


def test_the_credentials_file_is_the_last_source(server, tmp_path, monkeypatch):
    path = _store(tmp_path / "home", server.api_key)
    assert (os.stat(path).st_mode & 0o777, os.stat(path.parent).st_mode & 0o777) == (0o600, 0o700)
    with Client(base_url=server.url, trust_env=False) as client:
        assert client._auth.source.origin == str(path)
        client.training_runs.get("run-001")
    monkeypatch.setenv("TINKER_API_KEY", "tml-from-env")
    with Client(base_url=server.url, trust_env=False) as client:
        assert client._auth.source.key == "tml-from-env"
    with Client(api_key="tml-from-arg", base_url=server.url, trust_env=False) as client:
        assert client._auth.source.key == "tml-from-arg"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_credentials_file_others_can_read_is_refused(server, tmp_path, mode):
    path = _store(tmp_path / "home", server.api_key, mode)
    with pytest.raises(TinkerError, match=r"others can access it .*chmod 600") as info:
        Client(base_url=server.url, trust_env=False)
    assert server.api_key not in str(info.value) and str(path) in str(info.value)


def test_the_credential_command_runs_for_each_token_exchange(server, tmp_path, monkeypatch):
    server.client_config["pjwt_auth_enabled"] = True
    server.jwt_lifetime = 30.0  # replaced before every request
    runs = tmp_path / "runs"
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", f"echo run >> {runs}; printf '%s\\n' {server.api_key}")
    with Client(base_url=server.url, trust_env=False) as client:
        client.training_runs.get("run-001")
        client.training_runs.get("run-002")
    assert runs.read_text().count("run") == 1 + server.tokens_issued  # the handshake's and each exchange's
    assert server.tokens_issued == 2 and server.violations == []


def test_a_credential_command_without_jwt_auth_is_a_clear_error(server, monkeypatch):
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", f"printf {server.api_key}")
    with Client(base_url=server.url, trust_env=False) as client:
        with pytest.raises(TinkerError, match="needs a server with JWT auth"):
            client.training_runs.get("run-001")


@pytest.mark.parametrize(
    ("command", "timeout", "message"),
    [
        ("echo tml-half-a-secret; exit 3", 10.0, "failed with exit status 3"),
        ("printf ''", 10.0, "printed an empty credential"),
        ("echo tml-half-a-secret; sleep 5", 0.5, "did not finish within 0.5 s"),
    ],
)
def test_credential_command_failures_never_echo_its_output(command, timeout, message):
    with pytest.raises(TinkerError, match=message) as info:
        run_credential_command(command, timeout)
    assert "half-a-secret" not in str(info.value)


def test_no_credential_at_all_says_every_source():
    with pytest.raises(TinkerError, match="No API key") as info:
        Client(base_url="http://127.0.0.1:9", trust_env=False)
    assert "TINKER_CREDENTIAL_CMD" in str(info.value) and "auth login" in str(info.value)


def test_a_stored_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "home" / ".tinker" / "credentials.json"
    save_credentials(path, {"version": 1})
    path.write_text("{not json")
    with pytest.raises(TinkerError, match="not valid JSON"):
        Client(base_url="http://127.0.0.1:9", trust_env=False)


def test_without_the_handshake_the_key_goes_as_is(server):
    server.client_config["pjwt_auth_enabled"] = True  # not asked: this client never learns of it
    with Client(api_key=server.api_key, base_url=server.url, trust_env=False, handshake=False) as client:
        with pytest.raises(AuthenticationError):
            client.training_runs.get("run-001")
    assert _api(server) == [("GET", "/api/v1/training_runs/run-001")]
    assert server.requests[0].headers["x-api-key"] == server.api_key
    server.clear()  # the refusal was the point: a client that ignored the flag is a violation
