"""A loopback mock of the Tinker API for tests, benchmarks and trying the client.

stdlib + msgspec only, and it never imports the client: it is an independent
oracle. Importing this package costs nothing (everything loads lazily).

    from tinker_sync.testing import Fault, MockTinkerServer

    with MockTinkerServer(api_key="tml-test-key", demo_data=True) as server:  # 127.0.0.1, ephemeral port
        server.url                                             # "http://127.0.0.1:PORT", no trailing /
        server.script("/test/bytes", Fault(reset_after=1000), Fault(status=503, retry_after=1))
        server.requests, server.connections, server.violations

``python -m tinker_sync.testing`` serves the demo data in the foreground and prints the
``export TINKER_API_KEY=... TINKER_BASE_URL=...`` line to paste; pytest users ask for the
``tinker_server`` fixture. The manual (every option, fault, route and the demo data's ids)
is docs/TESTING.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._proxy import ForwardProxy, ProxyRequest
    from ._server import MockTinkerServer, serve
    from ._sessions import ModelRecord, SessionRecord
    from ._types import Fault, RecordedRequest

__all__ = [
    "Fault",
    "ForwardProxy",
    "MockTinkerServer",
    "ModelRecord",
    "ProxyRequest",
    "RecordedRequest",
    "SessionRecord",
    "serve",
]

# Lazy: importing the package must not load the server (http.server, threads) or tarfile.
_HOMES = {
    "Fault": "_types",
    "ForwardProxy": "_proxy",
    "MockTinkerServer": "_server",
    "ModelRecord": "_sessions",
    "ProxyRequest": "_proxy",
    "RecordedRequest": "_types",
    "SessionRecord": "_sessions",
    "serve": "_server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
