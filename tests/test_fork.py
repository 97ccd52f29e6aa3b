"""Forked children never share a connection: a client made (and used) before ``os.fork()`` gives
the parent and every child their own connections, so each answer goes to the request that asked
for it. Direct, TLS, proxied (absolute form) and tunnelled transports; ``os.fork`` by hand, ``ProcessPoolExecutor`` with the
fork context, and a fork that runs no at-fork handler (the pid check at the point of use).

Every request carries a token the server echoes back; a crossed answer shows a wrong token.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import multiprocessing
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trustme

from tinker_sync import Client, Timeout, _buffers
from tinker_sync._transport import _fork_gate, _pools, _tls
from tinker_sync.testing import ForwardProxy, MockTinkerServer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forking a threaded process: Linux only")

API_KEY = "tml-test-key"
CHILDREN = 4
REQUESTS = 200

_client: Client | None = None  # the client a pool worker inherits (made before the fork)


def _ask(client: Client, who: str, count: int) -> list[str]:
    """``count`` requests with distinct tokens; what went wrong (empty: every answer was its own)."""
    wrong = []
    for i in range(count):
        token = f"{who}-{i}"
        try:
            answer = client.get("/test/echo", params={"token": token}, cast_to=dict)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the caller counts them
            wrong.append(f"{token}: {type(exc).__name__}: {exc}")
            continue
        if answer["query"].get("token") != token:
            wrong.append(f"{token}: got the answer to {answer['query'].get('token')}")
    return wrong


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


# The TLS server runs in a process of its own, as a real server does: its TLS work (handshakes,
# session tickets) is OpenSSL use of a process that is not the client's, which the client cannot
# keep out of a fork (docs/reliability.md, "Forked processes").
_TLS_SERVER = """
import ssl, sys
from tinker_sync.testing import MockTinkerServer
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(sys.argv[1])
with MockTinkerServer(ssl_context=context) as server:
    print(server.url, flush=True)
    sys.stdin.read()  # serves until the test closes this pipe
"""


@pytest.fixture(scope="module")
def tls_url(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of the mock server over HTTPS, one per module (its process started ~0.25 CPU-s):
    the tests share nothing but its records, which no test here reads."""
    with _tls_server(ca, tmp_path_factory.mktemp("tls")) as url:
        yield url


@contextlib.contextmanager
def _tls_server(ca: trustme.CA, tmp_path: Path) -> Iterator[str]:
    """The mock server over HTTPS, in a subprocess: its URL."""
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    command = [sys.executable, "-c", _TLS_SERVER, str(pem)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as server:
        assert server.stdin is not None and server.stdout is not None
        try:
            url = server.stdout.readline().strip()
            assert url.startswith("https://"), url
            yield url
        finally:
            server.stdin.close()
            server.wait(60)


@pytest.fixture(params=["direct", "tls", "proxied", "tunnelled"])
def make_client(request, ca, tmp_path) -> Iterator:
    """A factory of clients for one transport kind, with its server (and proxy) running: proxied
    sends http:// in absolute form to the proxy, tunnelled through CONNECT (``proxy_tunnel``)."""
    kind = request.param
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with contextlib.ExitStack() as stack:
        url = request.getfixturevalue("tls_url") if kind == "tls" else None
        if url is None:
            url = stack.enter_context(MockTinkerServer()).url
        proxy = stack.enter_context(ForwardProxy()) if kind in ("proxied", "tunnelled") else None

        def make(**options: Any) -> Client:
            settings: dict[str, Any] = {
                "verify": str(ca_file) if kind == "tls" else True,
                "proxy": None if proxy is None else proxy.url,
                "proxy_tunnel": kind == "tunnelled",
                "trust_env": False,
                "max_retries": 0,
            }
            return Client(api_key=API_KEY, base_url=url, **{**settings, **options})

        yield make


def _fork_children(
    client: Client, count: int, requests: int, then: Callable[[], list[str]] | None = None
) -> list[tuple[int, int]]:
    """Fork ``count`` children that each ask ``requests`` times (and run ``then``); their pids and
    read ends. A child that hangs ends with its stacks printed (a failure, never a hung suite)."""
    children = []
    for n in range(count):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, leave without pytest's cleanup
            try:
                # A hang prints the child's stack (in the test's captured output) and ends it: a
                # signal (faulthandler's timer thread would be the parent's, gone in the child).
                faulthandler.register(signal.SIGALRM, all_threads=True, chain=True)
                signal.alarm(120)
                os.close(read)
                wrong = _ask(client, f"child{n}", requests)
                if then is not None:
                    wrong += then()
                os.write(write, json.dumps(wrong).encode())
            finally:
                os._exit(0)
        os.close(write)
        children.append((pid, read))
    return children


def _collect(children: list[tuple[int, int]]) -> list[str]:
    wrong = []
    for pid, read in children:
        with os.fdopen(read, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        wrong += json.loads(data or b'["no report"]')
    return wrong


@pytest.mark.slow
def test_parent_and_children_at_once_never_get_each_others_answers(make_client):
    with make_client() as client:
        assert _ask(client, "warm", 3) == []  # the pool now holds an idle connection
        children = _fork_children(client, CHILDREN, REQUESTS)
        parent_wrong = _ask(client, "parent", REQUESTS)
        wrong = _collect(children)
    assert parent_wrong == [] and wrong == []


@pytest.mark.slow
def test_a_parent_busy_in_threads_at_the_fork(make_client):
    """Threads of the parent are mid-request when it forks, some on kept-alive connections, some
    opening new ones (over TLS: a handshake each, deep in OpenSSL's process-wide locks): the child
    takes none of their connections, nor their pool lock, nor a lock of OpenSSL they held."""
    with make_client() as client:
        stop = threading.Event()
        wrong: list[str] = []

        def busy(n: int) -> None:
            while not stop.is_set():
                wrong.extend(_ask(client, f"thread{n}", 5))
                with make_client() as fresh:  # a new connection: connect, and a handshake over TLS
                    wrong.extend(_ask(fresh, f"fresh{n}", 1))

        threads = [threading.Thread(target=busy, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            children = _fork_children(client, CHILDREN, REQUESTS // 2)
            wrong += _collect(children)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert wrong == []


def _hold(lock: Any) -> tuple[threading.Event, threading.Thread]:
    """A parent thread that takes ``lock`` and holds it until told: a thread mid-request at the fork."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(60)
    return release, thread


# Every lock a child's requests may take, and where it lives: the budget of read buffers (every body
# read), the TLS contexts' cache (a new client's first https pool), the transport's pools, the
# deadline watchdog (a call with a total deadline), the credential (the handshake, JWTs).
LOCKS: dict[str, Callable[[Client], Any]] = {
    "read-buffers": lambda client: _buffers._lock,
    "tls-contexts": lambda client: _tls._shared_lock,
    "transport": lambda client: client._transport._lock,
    "watchdog": lambda client: _pools.watchdog._cond,
    "auth": lambda client: client._auth._lock,
}


@pytest.mark.parametrize("held", sorted(LOCKS))
def test_a_lock_held_by_a_parent_thread_at_the_fork_is_free_in_the_child(held, make_client):
    """Whichever lock a parent thread holds when another forks, the child's requests go through, on
    the client made before the fork (it owes the server its handshake) and on a new one."""
    deadline = Timeout(5, 30, total=60)
    with make_client(handshake=True, timeout=deadline) as client:
        release, thread = _hold(LOCKS[held](client))
        try:

            def api_call_and_a_new_client() -> list[str]:
                wrong = [] if client.get("/api/v1/healthz") == {"status": "ok"} else ["healthz"]
                with make_client(handshake=True, timeout=deadline) as other:
                    with other.stream("GET", "/test/bytes?size=100000&seed=1") as response:
                        body = response.read()
                    return wrong + _ask(other, "fresh", 3) + ([] if len(body) == 100_000 else ["short body"])

            wrong = _collect(_fork_children(client, 1, 3, then=api_call_and_a_new_client))
        finally:
            release.set()
            thread.join()
        assert _ask(client, "parent", 3) == []
    assert wrong == []


def _pool_work(n: int) -> list[str]:
    assert _client is not None
    return _ask(_client, f"worker{os.getpid()}-{n}", REQUESTS // 4)


def test_a_process_pool_with_the_fork_context_and_a_client_made_before(make_client):
    global _client
    with make_client() as client:
        _client = client
        try:
            assert _ask(client, "warm", 3) == []
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=CHILDREN, mp_context=context) as pool:
                futures = [pool.submit(_pool_work, n) for n in range(CHILDREN * 2)]
                parent_wrong = _ask(client, "parent", REQUESTS)
                wrong = [w for future in futures for w in future.result(timeout=300)]
        finally:
            _client = None
    assert parent_wrong == [] and wrong == []


def test_a_fork_without_at_fork_handlers_is_caught_where_the_pool_is_used(make_client, monkeypatch):
    """A C library's fork() runs no Python at-fork handler: the pid check at the point of use
    gives the child fresh pools all the same."""
    import tinker_sync._transport as transport_module

    monkeypatch.setattr(transport_module, "_after_fork_in_child", lambda: None)
    with make_client() as client:
        assert _ask(client, "warm", 3) == []
        children = _fork_children(client, 2, REQUESTS // 2)
        parent_wrong = _ask(client, "parent", REQUESTS // 2)
        wrong = _collect(children)
    assert parent_wrong == [] and wrong == []


# Every lock, condition, semaphore and event the package makes (outside tinker_sync.testing), by
# module and owner, and why a forked child never blocks on one a parent's thread held at the fork.
RESET = "freed in a forked child (at-fork handler): test_a_lock_held_by_a_parent_thread_at_the_fork_..."
ONE_CALL = "one call's own (its threads only): a child runs none of its parent's calls"
TRAINING = "the training clients' (with threads of their own, the parent's): make them after the fork"
GATE = "the fork gate's: the fork takes it (its before handler), the child gets a new gate: test_..._gate_..."
LOCK_OWNERS = {
    ("_auth.py", "Auth"): RESET,
    ("_buffers.py", "<module>"): RESET,
    ("_transport/__init__.py", "Transport"): RESET,
    ("_transport/_pools.py", "_Watchdog"): RESET,
    ("_transport/_tls.py", "<module>"): RESET,
    ("_transport/_fork_gate.py", "_Gate"): GATE,
    ("_range_plan.py", "RangePlan"): ONE_CALL,
    ("_ranges.py", "Tally"): ONE_CALL,
    ("_receive.py", "RangeSource"): ONE_CALL,
    ("_retry.py", "RetryBudget"): ONE_CALL,
    ("_sampling_client.py", "SamplingClient"): TRAINING,
    ("_sampling_holder.py", "<module>"): RESET,  # the shadow holders' cache: a child starts afresh
    ("_sampling_holder.py", "DispatchBytes"): TRAINING,
    ("_sampling_holder.py", "SampleDispatch"): TRAINING,
    ("_service.py", "ServiceClient"): TRAINING,
    ("_train_engine.py", "Engine"): TRAINING,
    ("_train_pace.py", "Pace"): TRAINING,
    ("_train_pace.py", "SubmitPool"): TRAINING,
    ("_train_future.py", "BillingPause"): TRAINING,
    ("_train_wire.py", "Wire"): TRAINING,
    ("_training_client.py", "TrainingClient"): TRAINING,
}


def test_every_lock_in_the_package_is_accounted_for_at_the_fork():
    """A new lock fails this test until it is freed at the fork (and added to LOCKS) or shown to be
    out of a child's reach: a forked child blocking for ever on it is the bug this prevents."""
    import ast
    from pathlib import Path

    import tinker_sync

    root = Path(tinker_sync.__file__).parent
    kinds = {"Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier"}
    found: set[tuple[str, str]] = set()

    def walk(node: ast.AST, owner: str, module: str) -> None:
        for child in ast.iter_child_nodes(node):
            call = child.func if isinstance(child, ast.Call) else None
            if (
                isinstance(call, ast.Attribute)
                and call.attr in kinds
                and getattr(call.value, "id", "") == "threading"
            ):
                found.add((module, owner))
            walk(child, child.name if isinstance(child, ast.ClassDef) else owner, module)

    for path in root.rglob("*.py"):
        module = path.relative_to(root).as_posix()
        if not module.startswith("testing/"):
            walk(ast.parse(path.read_text()), "<module>", module)
    assert found == set(LOCK_OWNERS)


# -- the fork gate: no thread of ours inside OpenSSL at the fork ----------------------------------


def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a state another thread reaches: an order of events, never a duration."""
    for _ in range(6000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("never reached")


def _fork_reporting(report: Callable[[], object]) -> tuple[int, int]:
    """Fork a child that writes ``report()`` (JSON) to a pipe and leaves; its pid and read end."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(60)  # a child blocked on the gate ends, and the test fails on its status
            os.close(read)
            os.write(write, json.dumps(report()).encode())
        finally:
            os._exit(0)
    os.close(write)
    return pid, read


def _child_report(pid: int, read: int) -> Any:
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


def test_a_fork_waits_until_no_thread_of_ours_is_inside_openssl(monkeypatch):
    """A thread inside OpenSSL (holding the gate) when another forks: the fork waits for it to
    leave; a thread arriving meanwhile waits for the fork; the child's gate is open."""
    monkeypatch.setattr(_fork_gate, "FORK_WAIT", 600.0)
    gate = _fork_gate.gate
    events: list[str] = []
    inside, leave = threading.Event(), threading.Event()

    def in_openssl() -> None:
        with gate:
            inside.set()
            leave.wait()
            events.append("left")

    def arriving() -> None:
        with gate:
            events.append("entered")

    def in_child() -> list[str]:
        with _fork_gate.gate:  # the child's own gate, open
            return list(events)

    holder = threading.Thread(target=in_openssl)
    holder.start()
    assert inside.wait(60)
    child: list[tuple[int, int]] = []
    forker = threading.Thread(target=lambda: child.append(_fork_reporting(in_child)))
    forker.start()
    _until(lambda: gate._closed)  # the fork is at the gate, waiting for the holder
    latecomer = threading.Thread(target=arriving)
    latecomer.start()
    assert child == [] and events == []
    leave.set()
    for thread in (holder, forker, latecomer):
        thread.join()
    assert _child_report(*child[0]) == ["left"]  # forked after the holder left, before anyone entered
    assert sorted(events) == ["entered", "left"]


def test_a_fork_waits_for_the_gate_a_bounded_time_then_goes_ahead(monkeypatch, caplog):
    """A thread that never leaves OpenSSL (stopped in a debugger) delays a fork by FORK_WAIT, not
    for ever: the fork goes ahead with a debug line, and both sides can use the gate after it."""
    monkeypatch.setattr(_fork_gate, "FORK_WAIT", 0.05)
    inside, leave = threading.Event(), threading.Event()

    def stuck() -> None:
        with _fork_gate.gate:
            inside.set()
            leave.wait()

    holder = threading.Thread(target=stuck)
    holder.start()
    assert inside.wait(60)
    try:
        with caplog.at_level(logging.DEBUG, logger="tinker_sync"):

            def in_child_gate() -> str:
                with _fork_gate.gate:  # closed in the parent at the fork, new and open in the child
                    return "entered"

            assert _child_report(*_fork_reporting(in_child_gate)) == "entered"
    finally:
        leave.set()
        holder.join()
    with _fork_gate.gate:  # open again in the parent
        pass
    assert any("1 thread(s) still inside OpenSSL" in r.getMessage() for r in caplog.records)


def _pooled_sockets(client: Client) -> list[Any]:
    """The sockets of the connections a client keeps alive (urllib3's pools, read, not changed)."""
    sockets = []
    for manager in client._transport._managers.values():
        for pool in manager.pools._container.values():
            sockets += [
                conn.sock for conn in list(pool.pool.queue) if conn is not None and conn.sock is not None
            ]
    return sockets


@pytest.mark.parametrize("how", ["verify=CA file", "verify=SSLContext", "through a CONNECT tunnel"])
def test_every_tls_connection_holds_the_gate_in_openssl(how, ca, tmp_path):
    """Direct, with a context of the caller's, through a proxy's tunnel: each TLS socket the
    client keeps is a gated one, and does what an ssl.SSLSocket does (requests, keep-alive)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    verify: Any = str(ca_file)
    if how == "verify=SSLContext":
        verify = ssl.create_default_context(cafile=str(ca_file))
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(MockTinkerServer(ssl_context=server_context))
        proxy = stack.enter_context(ForwardProxy()).url if how == "through a CONNECT tunnel" else None
        client = stack.enter_context(
            Client(api_key=API_KEY, base_url=server.url, verify=verify, proxy=proxy, trust_env=False)
        )
        assert _ask(client, how, 20) == []
        sockets = _pooled_sockets(client)
        assert sockets and all(type(sock) is _fork_gate.ForkSafeSSLSocket for sock in sockets)
        assert server.connections == 1  # kept alive: the 20 requests on one connection


def test_tls_over_memory_buffers_holds_the_gate():
    """TLS inside a proxy's TLS runs on an ssl.SSLObject: gated too, handshake, write and read."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("example.test").configure_cert(server_context)
    client_context = _fork_gate.fork_safe(ssl.create_default_context())
    ca.configure_trust(client_context)
    ends = [ssl.MemoryBIO() for _ in range(4)]
    client = client_context.wrap_bio(ends[0], ends[1], server_hostname="example.test")
    server = server_context.wrap_bio(ends[2], ends[3], server_side=True)
    assert type(client) is _fork_gate.ForkSafeSSLObject

    def pump() -> None:  # what each side wrote, to the other's incoming buffer
        ends[2].write(ends[1].read())
        ends[0].write(ends[3].read())

    for _ in range(10):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        pump()
        if done == 2:
            break
    assert client.write(b"through the tunnel") == len(b"through the tunnel")
    pump()
    assert server.read(100) == b"through the tunnel"
