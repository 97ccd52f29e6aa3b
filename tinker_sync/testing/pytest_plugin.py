"""pytest plugin: the ``tinker_server`` fixture, a fresh MockTinkerServer per test.

Registered under the ``pytest11`` entry point, so any project with
tinker_sync installed can ask for it::

    def test_health(tinker_server):
        client = tinker_sync.Client(api_key=tinker_server.api_key, base_url=tinker_server.url)
        assert client.get("/api/v1/healthz") == {"status": "ok"}

Cheap to load: the server module is imported only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._server import MockTinkerServer


@pytest.fixture
def tinker_server() -> Iterator[MockTinkerServer]:
    """A MockTinkerServer on 127.0.0.1 (ephemeral port, API key ``tml-test-key``), stopped after the test."""
    from ._server import MockTinkerServer

    with MockTinkerServer() as server:
        yield server
