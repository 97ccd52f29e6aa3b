"""The base of every API resource: a group of typed methods over one client.

Rule: a resource uses only the public (and ``_``-protected) methods of
``BaseClient``; it never reaches into the client's state.
"""

from __future__ import annotations

from .._base_client import BaseClient

__all__ = ["SyncAPIResource"]


class SyncAPIResource:
    """A group of API methods (``client.checkpoints``, ...), sharing the client's pool and settings."""

    def __init__(self, client: BaseClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._client!r}>"
