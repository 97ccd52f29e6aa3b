"""Arguments are checked before the network: a malformed ``expected_sha256`` or ``expected_size``,
a ``progress`` that cannot be called, a bad ``connections``, a missing CA file
(``TLS(extra_ca=...)``, ``verify=path``), a bad ``max_retries`` or ``pool_maxsize`` fail at once,
with the argument named. The server is a real listener that counts connections: it must see none
(and a dead host must not cost a minute of retries first).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tinker_sync import TLS, Client, TinkerError

API_KEY = "tml-test-key"


class Counting:
    """A loopback listener that accepts and counts connections (and answers nothing)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def counting() -> Iterator[Counting]:
    server = Counting()
    yield server
    server.close()


BAD_SHA256 = {
    "short": "abc",
    "63_digits": "a" * 63,
    "65_digits": "a" * 65,
    "not_hex": "g" * 64,
    "spaces_inside": "a" * 32 + " " + "a" * 31,
    "with_prefix": "sha256:" + "a" * 64,
    "empty": "",
    "bytes": b"a" * 64,
    "int": 12345,
    "list": ["a" * 64],
}
BAD_SIZE = {"negative": -1, "float": 10.5, "string": "100", "bool": True}
BAD_CONNECTIONS = {
    "zero": 0,
    "negative": -2,
    "float": 2.5,
    "string_number": "2",
    "word": "many",
    "none": None,
    "bool": True,
}
BAD_PROGRESS = {"int": 5, "string": "bar"}


def _calls(client: Client, dest) -> dict:
    return {
        "Client.download": lambda **kw: client.download("/test/bytes?size=100", dest, **kw),
        "Client.download(url)": lambda **kw: client.download(client.base_url + "/f", dest, **kw),
    }


@pytest.mark.parametrize("value", BAD_SHA256.values(), ids=BAD_SHA256.keys())
def test_a_malformed_expected_sha256_fails_before_connecting(counting, tmp_path, value):
    with Client(api_key=API_KEY, base_url=counting.url, max_retries=10) as client:
        for name, call in _calls(client, tmp_path / "f").items():
            started = time.monotonic()
            with pytest.raises(ValueError, match="expected_sha256"):
                call(expected_sha256=value)
            assert time.monotonic() - started < 5, name
    assert counting.accepted == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", BAD_SIZE.values(), ids=BAD_SIZE.keys())
def test_a_malformed_expected_size_fails_before_connecting(counting, tmp_path, value):
    with Client(api_key=API_KEY, base_url=counting.url) as client:
        for call in _calls(client, tmp_path / "f").values():
            with pytest.raises(ValueError, match="expected_size"):
                call(expected_size=value)
    assert counting.accepted == 0


@pytest.mark.parametrize("value", BAD_CONNECTIONS.values(), ids=BAD_CONNECTIONS.keys())
def test_a_bad_connections_value_fails_before_connecting(counting, tmp_path, value):
    with Client(api_key=API_KEY, base_url=counting.url) as client:
        for call in _calls(client, tmp_path / "f").values():
            with pytest.raises(ValueError, match="connections"):
                call(connections=value)
        with pytest.raises(ValueError, match="connections"):
            client.checkpoints.download("tinker://run-1/weights/final", tmp_path, connections=value)
        with pytest.raises(ValueError, match="connections"):
            client.checkpoints.sync("run-1", tmp_path / "m", connections=value)
    assert counting.accepted == 0


@pytest.mark.parametrize("value", BAD_PROGRESS.values(), ids=BAD_PROGRESS.keys())
def test_a_progress_that_cannot_be_called_fails_before_connecting(counting, tmp_path, value):
    with Client(api_key=API_KEY, base_url=counting.url) as client:
        for call in _calls(client, tmp_path / "f").values():
            with pytest.raises(TypeError, match="progress"):
                call(progress=value)
    assert counting.accepted == 0


MISSING_CA = {
    "extra_ca_file": lambda p: TLS(extra_ca=str(p / "missing.pem")),
    "extra_ca_pathlike": lambda p: TLS(extra_ca=p / "missing.pem"),
    "extra_ca_dir": lambda p: TLS(extra_ca=p / "no-such-dir" / ""),
    "extra_ca_with_system": lambda p: TLS(extra_ca=p / "missing.pem", system=True),
    "verify_path": lambda p: str(p / "missing.pem"),
    "verify_pathlike": lambda p: p / "missing.pem",
}


@pytest.mark.parametrize("make", MISSING_CA.values(), ids=MISSING_CA.keys())
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_missing_ca_file_fails_when_the_client_is_made(counting, tmp_path, make, scheme):
    base = counting.url.replace("http://", f"{scheme}://")
    with pytest.raises(TinkerError, match="does not exist") as caught:
        Client(api_key=API_KEY, base_url=base, verify=make(tmp_path))
    assert "missing.pem" in str(caught.value) or "no-such-dir" in str(caught.value)
    assert counting.accepted == 0


BAD_CLIENT = {
    "max_retries_negative": {"max_retries": -1},
    "max_retries_float": {"max_retries": 2.5},
    "max_retries_string": {"max_retries": "3"},
    "max_retries_none": {"max_retries": None},
    "pool_maxsize_zero": {"pool_maxsize": 0},
    "pool_maxsize_negative": {"pool_maxsize": -4},
    "pool_maxsize_string": {"pool_maxsize": "8"},
}


@pytest.mark.parametrize("options", BAD_CLIENT.values(), ids=BAD_CLIENT.keys())
def test_bad_client_options_fail_when_the_client_is_made(counting, options):
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        Client(api_key=API_KEY, base_url=counting.url, **options)
    assert counting.accepted == 0


def test_good_values_still_pass(tinker_server, tmp_path):
    """The checks refuse only what cannot be right: every form a user writes still downloads."""
    import hashlib

    data = None
    with Client(api_key=API_KEY, base_url=tinker_server.url, max_retries=0, pool_maxsize=1) as client:
        client.download(
            "/test/bytes?size=1000&seed=3", tmp_path / "a", connections="auto", expected_size=1000
        )
        data = (tmp_path / "a").read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        for i, sha in enumerate([digest, digest.upper(), f" {digest} "]):
            client.download(
                "/test/bytes?size=1000&seed=3", tmp_path / f"b{i}", expected_sha256=sha, connections=1
            )
    assert len(data) == 1000
