"""TLS contexts: none for plain HTTP, one per trust setting per process for HTTPS.

Over real sockets: the mock server plain and behind TLS with a certificate from a ``trustme`` CA.
Every client-side ``ssl.SSLContext`` built is counted by wrapping ``SSLContext.__new__``.
"""

from __future__ import annotations

import os
import ssl
import threading
import warnings

import pytest
import trustme

from tinker_sync import TLS, APIConnectionError, Client, InsecureRequestWarning
from tinker_sync._transport import _tls
from tinker_sync.testing import MockTinkerServer

API_KEY = "tml-test-key"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_server(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with MockTinkerServer(ssl_context=context) as server:
        yield server


@pytest.fixture
def built(monkeypatch) -> list[ssl.SSLContext]:
    """Every client-side ssl.SSLContext built from now on, in order (a server's is not counted)."""
    contexts: list[ssl.SSLContext] = []
    original = ssl.SSLContext.__new__

    def counting(cls, *args, **kwargs):
        context = original(cls, *args, **kwargs)
        if context.protocol != ssl.PROTOCOL_TLS_SERVER:
            contexts.append(context)
        return context

    monkeypatch.setattr(ssl.SSLContext, "__new__", counting)
    monkeypatch.setattr(_tls, "_shared", {})  # nothing shared from earlier tests
    return contexts


def _work(client: Client) -> None:
    """A call, a stream and a download: everything that opens connections."""
    client.get("/test/bytes?size=10&seed=1", cast_to=bytes)
    assert len(list(client.stream_get("/test/sse?count=3", cast_to=dict))) == 3
    with client.stream("GET", "/test/bytes?size=100000&seed=2") as response:
        assert sum(len(chunk) for chunk in response.iter_bytes()) == 100_000


def _verify(name: str, ca_file: str) -> object:
    return {
        "default": True,
        "extra_ca": TLS(extra_ca=ca_file),
        "only_ca": ca_file,
        "insecure": False,
    }[name]


SETTINGS = ["default", "extra_ca", "only_ca", "insecure"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_plain_http_builds_no_tls_context(setting, built, ca_file, tinker_server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        client = Client(api_key=API_KEY, base_url=tinker_server.url, verify=_verify(setting, ca_file))
    with client:
        _work(client)
        assert client._transport._context is None
    assert built == []


@pytest.mark.parametrize("setting", ["extra_ca", "only_ca", "insecure"])
def test_clients_with_one_trust_setting_share_one_context(setting, built, ca_file, tls_server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        clients = [
            Client(api_key=API_KEY, base_url=tls_server.url, verify=_verify(setting, ca_file))
            for _ in range(3)
        ]
    for client in clients:
        with client:
            _work(client)
    contexts = {id(client._transport._context) for client in clients}
    assert len(contexts) == 1
    assert len(built) == 1  # the CA files were loaded once, for all three


# Pairs of trust settings: (first, second, whether they share a context).
PAIRS = [
    ("default", "default", True),
    ("extra_ca", "extra_ca", True),
    ("only_ca", "only_ca", True),
    ("insecure", "insecure", True),
    ("default", "extra_ca", False),
    ("default", "only_ca", False),
    ("extra_ca", "only_ca", False),
    ("only_ca", "insecure", False),
    ("default", "insecure", False),
]


@pytest.mark.parametrize(("first", "second", "shared"), PAIRS)
def test_only_the_same_trust_setting_shares(first, second, shared, built, ca_file, tls_server):
    contexts = []
    for setting in (first, second):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            client = Client(
                api_key=API_KEY, base_url=tls_server.url, verify=_verify(setting, ca_file), max_retries=0
            )
        with client:
            try:
                client.get("/test/bytes?size=10&seed=1", cast_to=bytes)
            except APIConnectionError:
                assert setting == "default"  # the test CA is not in the default trust
        contexts.append(client._transport._context)
    assert None not in contexts
    assert (contexts[0] is contexts[1]) is shared
    assert len(built) == (1 if shared else 2)


def test_the_environments_ca_is_its_own_setting(built, ca_file, tls_server, monkeypatch):
    """SSL_CERT_FILE names another default trust: not the one of a client built without it."""
    contexts = []
    for env in (None, ca_file):
        if env is not None:
            monkeypatch.setenv("SSL_CERT_FILE", env)
        with Client(api_key=API_KEY, base_url=tls_server.url, max_retries=0) as client:
            try:
                client.get("/test/bytes?size=10&seed=1", cast_to=bytes)
            except APIConnectionError:
                assert env is None
        contexts.append(client._transport._context)
    assert contexts[0] is not contexts[1]


def test_a_changed_ca_file_is_loaded_again(built, ca, tmp_path, tls_server):
    path = tmp_path / "ca.pem"
    other = trustme.CA()
    other.cert_pem.write_to_path(str(path))  # first, a CA that did not sign the server's certificate
    with Client(api_key=API_KEY, base_url=tls_server.url, verify=str(path), max_retries=0) as client:
        with pytest.raises(APIConnectionError):
            client.get("/test/bytes?size=10&seed=1", cast_to=bytes)
    path.write_bytes(ca.cert_pem.bytes() + b"\n")  # the right CA now (another size)
    with Client(api_key=API_KEY, base_url=tls_server.url, verify=str(path), max_retries=0) as client:
        assert client.get("/test/bytes?size=10&seed=1", cast_to=bytes)
    assert len(built) == 2


def test_a_given_context_is_used_as_it_is(built, ca_file, tls_server):
    mine = ssl.create_default_context(cafile=ca_file)
    with Client(api_key=API_KEY, base_url=tls_server.url, verify=mine) as client:
        _work(client)
        assert client._transport._context is mine
    assert built == [mine]


def test_threads_share_one_context_built_once(built, ca_file, tls_server):
    contexts: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def one() -> None:
        try:
            start.wait()
            with Client(api_key=API_KEY, base_url=tls_server.url, verify=TLS(extra_ca=ca_file)) as client:
                client.get("/test/bytes?size=10&seed=1", cast_to=bytes)
                contexts.append(client._transport._context)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(contexts) == 8 and len({id(c) for c in contexts}) == 1
    assert len(built) == 1


def test_a_bad_ca_path_still_fails_at_the_first_https_request(built, tmp_path, tls_server):
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate")
    with Client(
        api_key=API_KEY, base_url=tls_server.url, verify=TLS(extra_ca=str(bad)), max_retries=0
    ) as client:
        with pytest.raises(Exception, match="cannot load CA certificates"):
            client.get("/test/bytes?size=10&seed=1", cast_to=bytes)
    assert not _tls._shared  # nothing kept from a failed build
    assert os.path.exists(bad)
