"""Shared fixtures: both SSE decoder twins, and a client on the loopback mock Tinker server."""

from __future__ import annotations

import importlib
import time

import pytest

API_KEY = "tml-test-key"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-extensions",
        action="store_true",
        help="deselect the Cython decoder's params (for a pure-Python install); never implied",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--no-extensions"):
        return
    kept = [item for item in items if "[cython" not in item.nodeid and "-cython" not in item.nodeid]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


@pytest.fixture(params=["py", "cython"])
def decoder_class(request: pytest.FixtureRequest) -> type:
    """Each SSE decoder twin in turn. A missing extension fails the cython param, never skips it."""
    if request.param == "py":
        return importlib.import_module("tinker_sync._sse_py").PySSEDecoder
    return importlib.import_module("tinker_sync._sse").SSEDecoder


@pytest.fixture(params=["py", "cython"])
def sse_implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a client-level test once per decoder twin, by swapping the class the responses use."""
    module = "tinker_sync._sse_py" if request.param == "py" else "tinker_sync._sse"
    name = "PySSEDecoder" if request.param == "py" else "SSEDecoder"
    cls = getattr(importlib.import_module(module), name)
    import tinker_sync._event_stream as event_stream_module

    monkeypatch.setattr(event_stream_module, "SSEDecoder", cls)
    return request.param


# ``tinker_server`` (a fresh MockTinkerServer per test, API key tml-test-key) comes from
# the package's own pytest plugin, tinker_sync.testing.pytest_plugin (entry point pytest11).


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
