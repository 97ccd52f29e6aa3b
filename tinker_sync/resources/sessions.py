"""``client.sessions``: list (a page of ids), iterate (every id, lazily), get one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Unpack

from .._options import Overrides, RequestOptions
from ._paths import segment
from ._resource import M, Parsed, Raw, Streamed, SyncAPIResource, endpoint, iterate_pages, view
from .training_runs import AccessScope
from .types import Session, SessionList

__all__ = ["Sessions"]


class Sessions(SyncAPIResource[M]):
    """``client.sessions``: the caller's sessions (each client run of the SDK is one)."""

    with_raw_response: Sessions[Raw] = view(Raw)
    with_streaming_response: Sessions[Streamed] = view(Streamed)

    @endpoint
    def list(
        self,
        *,
        limit: int = 20,
        offset: int = 0,
        access_scope: AccessScope = "owned",
        **overrides: Unpack[Overrides],
    ) -> SessionList:
        """One page of session ids (the API gives no total: a short page is the last)."""
        params = {"limit": limit, "offset": offset, "access_scope": access_scope}
        return self._json(RequestOptions("GET", "/api/v1/sessions", params=params), SessionList, overrides)

    @endpoint
    def get(
        self, session_id: str, *, access_scope: AccessScope = "owned", **overrides: Unpack[Overrides]
    ) -> Session:
        """One session: its training runs and samplers."""
        path = f"/api/v1/sessions/{segment(session_id, 'session id')}"
        return self._json(
            RequestOptions("GET", path, params={"access_scope": access_scope}), Session, overrides
        )

    def iter(
        self: Sessions[Parsed],
        *,
        limit: int = 20,
        offset: int = 0,
        access_scope: AccessScope = "owned",
        max_items: int | None = None,
        **overrides: Unpack[Overrides],
    ) -> Iterator[str]:
        """Every session id from ``offset`` on, lazily, one ``list`` request per ``limit`` ids, sent
        only when the loop gets there; stops at a short page or ``max_items``. ``overrides`` apply
        to every page's request."""

        self._plain_only("iter")

        def fetch(offset: int, limit: int) -> tuple[list[str], int | None]:
            return self.list(
                limit=limit, offset=offset, access_scope=access_scope, **overrides
            ).sessions, None

        return iterate_pages(fetch, limit=limit, offset=offset, max_items=max_items)
