"""``client.health`` and ``client.server``: is the API up, and what can it do."""

from __future__ import annotations

from typing import Unpack

from .._options import Overrides, RequestOptions
from ._resource import M, Raw, Streamed, SyncAPIResource, endpoint, view
from .types import HealthResponse, ServerCapabilities

__all__ = ["Health", "Server"]


class Health(SyncAPIResource[M]):
    """``client.health``."""

    with_raw_response: Health[Raw] = view(Raw)
    with_streaming_response: Health[Streamed] = view(Streamed)

    @endpoint
    def check(self, **overrides: Unpack[Overrides]) -> HealthResponse:
        """``GET /healthz``: ``HealthResponse(status="ok")`` when the API is up."""
        return self._json(RequestOptions("GET", "/api/v1/healthz"), HealthResponse, overrides)


class Server(SyncAPIResource[M]):
    """``client.server``."""

    with_raw_response: Server[Raw] = view(Raw)
    with_streaming_response: Server[Streamed] = view(Streamed)

    @endpoint
    def capabilities(self, **overrides: Unpack[Overrides]) -> ServerCapabilities:
        """``GET /get_server_capabilities``: the models the server can train and sample."""
        options = RequestOptions("GET", "/api/v1/get_server_capabilities")
        return self._json(options, ServerCapabilities, overrides)
