"""Shared fixtures: both SSE decoder twins, and a client on the loopback mock Tinker server.

The Cython twin's tests run wherever the extension exists, and error where it
is missing but must exist: in CI (``CI`` set) and in any install built with a
compiler. An install that says it is pure (its build wrote
``tinker_sync/_pure_build``: no C compiler, or ``TINKER_SYNC_NO_EXTENSIONS``)
reports them as not applicable, in one line, and deselects them.
"""

from __future__ import annotations

import compileall
import importlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tinker_sync.testing import MockTinkerServer

API_KEY = "tml-test-key"
PURE_INSTALL = pytest.StashKey[str | None]()
# The environment variables that would send the loopback tests through a proxy, or change which
# CAs a client trusts: every test starts without them (a test that wants one sets it).
NETWORK_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "TINKER_MAX_RETRIES",
)


def pure_install_reason() -> str | None:
    """Why the Cython twin is absent on purpose from this install, or None (present, or required)."""
    if importlib.util.find_spec("tinker_sync._sse") is not None or os.environ.get("CI"):
        return None
    spec = importlib.util.find_spec("tinker_sync")
    if spec is None or spec.origin is None:
        return None
    marker = Path(spec.origin).parent / "_pure_build"
    try:
        return marker.read_text().strip() or "pure-Python install"
    except OSError:
        return None


# Big test files (2 GiB downloads, fsynced) go to RAM when a tmpfs has room: the same code paths
# (real files, real renames), without waiting for a disk; CI disks can also be small.
SHM = "/dev/shm"
SHM_NEEDED = 8 << 30


def _temp_files_in_ram() -> None:
    if os.environ.get("TMPDIR") or not os.path.isdir(SHM):
        return
    try:
        free = shutil.disk_usage(SHM).free
    except OSError:
        return
    if free >= SHM_NEEDED:
        os.environ["TMPDIR"] = SHM  # inherited by xdist workers and subprocesses
        tempfile.tempdir = None  # re-read by the next gettempdir()


def _compile_the_package() -> None:
    """Byte-compile tinker_sync once, in the run's first process, as an install would: the suite
    starts hundreds of subprocesses that import it (the CLI, the demo server), and where bytecode
    is never written (a fresh checkout with PYTHONDONTWRITEBYTECODE set) each compiled all of it
    again: 0.7 CPU-s instead of 0.15 s per CLI run. Already compiled files cost one stat each."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    spec = importlib.util.find_spec("tinker_sync")
    if spec is not None and spec.origin is not None:
        compileall.compile_dir(Path(spec.origin).parent, quiet=2)


def _rewrite_once_for_the_workers(config: pytest.Config) -> None:
    """In the first process of an xdist run, cache the assert-rewritten code of the test modules
    and of the package (pytest rewrites both: the package is a pytest plugin) before the workers
    start, in pytest's own cache files: each worker rewrote all of them itself (3 CPU-s each)
    wherever bytecode is not written (PYTHONDONTWRITEBYTECODE, as in CI). Uses pytest's private
    rewrite helpers; if they change, this does nothing and the workers rewrite as before."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        return
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        tests = Path(__file__).parent
        spec = importlib.util.find_spec("tinker_sync")
        package = [] if spec is None or spec.origin is None else Path(spec.origin).parent.rglob("*.py")
        for source in [tests / "conftest.py", *sorted(tests.glob("test_*.py")), *package]:
            cache = rewrite.get_cache_dir(source)
            pyc = cache / (source.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(source, pyc) is None and rewrite.try_makedirs(cache):
                source_hash, code = rewrite._rewrite_test(source, config)
                rewrite._write_pyc(state, code, source_hash, pyc)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError):
        return


# Third-party packages that pytest assert-rewrites only because their distribution ships a pytest
# plugin (pytest marks every module of such a distribution): their asserts are their own, never the
# suite's, and their rewritten code is never cached where bytecode is not written, so every worker
# rewrote hypothesis's 73 modules again on import (0.5 CPU-s per process).
NOT_REWRITTEN = ("hypothesis",)


def _leave_third_party_plugins_unrewritten(config: pytest.Config) -> None:
    """Import NOT_REWRITTEN as installed (the rewrite hook's private set of marked names; if that
    changes, they are rewritten as before)."""
    marked = getattr(config.pluginmanager.rewrite_hook, "_must_rewrite", None)
    if isinstance(marked, set):
        marked.difference_update(NOT_REWRITTEN)


def pytest_configure(config: pytest.Config) -> None:
    _temp_files_in_ram()
    _leave_third_party_plugins_unrewritten(config)
    _compile_the_package()
    _rewrite_once_for_the_workers(config)
    reason = pure_install_reason()
    config.stash[PURE_INSTALL] = reason
    if reason is not None:
        config.option.no_extensions = True  # deselect the cython params, as --no-extensions does


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The one line a pure-Python install gets about the Cython twin's tests."""
    reason = config.stash.get(PURE_INSTALL, None)
    if reason is not None:
        terminalreporter.write_line(
            f"tinker_sync: Cython twin not applicable to this install ({reason}): its tests were deselected"
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-extensions",
        action="store_true",
        help="deselect the Cython decoder's params (for a pure-Python install); never implied",
    )


@pytest.hookimpl(trylast=True)  # after -k and -m: the order is of the items that run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--no-extensions"):
        kept = [item for item in items if "[cython" not in item.nodeid and "-cython" not in item.nodeid]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    _slow_tests_first(config, items)


DIST = "tinker_sync_dist"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker the run's ``--dist`` (a worker's own option says ``no``)."""
    node.workerinput[DIST] = node.config.getoption("dist")


def _slow_tests_first(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, each ``slow`` test (seconds of pip, of the official SDK, of a paced or multi-GB
    transfer) starts first on its worker: one left for last set the run's end (a 20 s install
    begun at 75 s of a 130 s run). ``--dist worksteal`` hands each worker one contiguous run of
    the collection and lets idle workers take the far end of a busy one's, so the slow tests go to
    the heads of those runs, spread evenly over them; ``--dist load`` deals from the front. Every
    worker collects the same order (it depends on the collection alone); outside xdist, or with
    another ``--dist``, nothing moves."""
    workerinput = getattr(config, "workerinput", {})
    workers, dist = int(workerinput.get("workercount", 0)), workerinput.get(DIST)
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if workers < 2 or not slow or dist not in ("worksteal", "load"):
        return
    rest = [item for item in items if item.get_closest_marker("slow") is None]
    if dist == "load":
        items[:] = slow + rest
        return
    ordered: list[pytest.Item] = []
    left = len(items)
    for worker in range(workers):  # the run xdist's worksteal gives this worker: an even share
        size = left // (workers - worker)
        left -= size
        head = slow[worker::workers]
        ordered += head + rest[: max(0, size - len(head))]
        rest = rest[max(0, size - len(head)) :]
    items[:] = ordered + rest


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA setting of the machine running the tests leaks into them."""
    for name in NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["py", "cython"])
def decoder_class(request: pytest.FixtureRequest) -> type:
    """Each SSE decoder twin in turn (ids ``py``, ``cython``): the one fixture every test that reaches
    the decoder asks for, directly or through ``sse_implementation``. A missing extension fails the
    cython param, never skips it."""
    if request.param == "py":
        return importlib.import_module("tinker_sync._sse_py").PySSEDecoder
    return importlib.import_module("tinker_sync._sse").SSEDecoder


@pytest.fixture
def sse_implementation(decoder_class: type, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a client-level test once per decoder twin (``decoder_class``'s params), by swapping the
    class the event streams use; the twin's name."""
    import tinker_sync._event_stream as event_stream_module

    monkeypatch.setattr(event_stream_module, "SSEDecoder", decoder_class)
    return "py" if decoder_class.__module__ == "tinker_sync._sse_py" else "cython"


@pytest.fixture
def tinker_server(request: pytest.FixtureRequest) -> Iterator[MockTinkerServer]:
    """A fresh MockTinkerServer per test (API key tml-test-key), as the package's pytest plugin gives
    any project (``tinker_sync.testing.pytest_plugin``, tested on its own). In a test or module marked
    ``demo_data`` it serves the demo dataset (its ids: docs/TESTING.md), and a client mistake the
    server recorded (a violation) fails the test."""
    from tinker_sync.testing import MockTinkerServer

    demo = request.node.get_closest_marker("demo_data") is not None
    with MockTinkerServer(demo_data=demo) as server:
        yield server
        if demo:
            assert server.violations == []


@pytest.fixture
def waits() -> list[float]:
    """The waits of the ``client`` fixture, recorded instead of slept (ask for both)."""
    return []


@pytest.fixture
def client(tinker_server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """A Client pointed at ``tinker_server``, closed after the test; it records its waits in ``waits``
    instead of sleeping when the test asks for that fixture too."""
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    import tinker_sync

    sleep = request.getfixturevalue("waits").append if "waits" in request.fixturenames else time.sleep
    with tinker_sync.Client(api_key=API_KEY, base_url=tinker_server.url, sleep=sleep) as c:
        yield c
