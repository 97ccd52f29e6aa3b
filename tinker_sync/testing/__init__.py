"""A loopback mock of the Tinker API for tests and benchmarks (stdlib + msgspec; never imports the client).

    from tinker_sync.testing import MockTinkerServer, Fault

    with MockTinkerServer(api_key="tml-test-key") as server:
        server.url                # "http://127.0.0.1:PORT"
        server.script("/test/bytes", Fault(reset_after=1000), Fault(status=503, retry_after=1))
        server.add_checkpoint("tinker://run-1/weights/final", size=1 << 20)
        server.requests, server.connections, server.violations

Run it by hand with ``python -m tinker_sync.testing [--port N] [--api-key K]``.
Everything is imported lazily, so importing this package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._server import Fault, MockTinkerServer, RecordedRequest, serve

__all__ = ["Fault", "MockTinkerServer", "RecordedRequest", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
