"""``client.sessions``: list (a page of ids), iterate (every id, lazily), get one, export a trace."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Unpack

from .._exceptions import APITimeoutError, TinkerError
from .._options import Overrides, RequestOptions
from ._paths import segment
from ._resource import M, Parsed, Raw, Streamed, SyncAPIResource, endpoint, iterate_pages, view
from .training_runs import AccessScope
from .types import Session, SessionList, TraceExport

# Between polls of a trace export being built (the official SDK's interval).
TRACE_POLL_INTERVAL = 5.0

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

        def fetch(offset: int, limit: int) -> tuple[list[str], int | None, int | None]:
            page = self.list(limit=limit, offset=offset, access_scope=access_scope, **overrides)
            return page.sessions, None, None

        return iterate_pages(fetch, limit=limit, offset=offset, max_items=max_items)

    def export_trace(
        self: Sessions[Parsed],
        session_id: str,
        *,
        timeout: float = 600.0,
        poll_interval: float = TRACE_POLL_INTERVAL,
        on_pending: Callable[[], None] | None = None,
    ) -> str:
        """Have the server build the session's Perfetto trace (``.pftrace``); its signed download URL.

        Polls ``GET sessions/{id}/trace_export`` until it is ready (``on_pending`` is called once,
        at the first "pending"). The URL lives about an hour and needs no key: fetch it with
        ``client.download(url, dest, credentials=False)``.

        Raises:
            TinkerError: the export failed on the server.
            APITimeoutError: not ready within ``timeout`` seconds.
        """
        self._plain_only("export_trace")
        path = f"/api/v1/sessions/{segment(session_id, 'session id')}/trace_export"
        deadline = time.monotonic() + timeout
        pending = False
        while True:
            answer = self._client.get(path, cast_to=TraceExport)
            if answer.status == "ready" and answer.url:
                return answer.url
            if answer.status == "failed":
                raise TinkerError(f"Trace export failed for session {session_id}: {answer.error}")
            if not pending:
                pending = True
                if on_pending is not None:
                    on_pending()
            left = deadline - time.monotonic()
            if left <= 0:
                raise APITimeoutError(
                    f"The trace of session {session_id} was not ready after {timeout:g} s", None
                )
            self._client._wait(min(poll_interval, left), f"trace of session {session_id} being built")
