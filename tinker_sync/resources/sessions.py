"""``client.sessions``: list (a page of ids), iterate (every id, lazily), get one, search (a page of
summaries, or every match lazily), move one into a project, export a trace."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Unpack

from .._exceptions import APITimeoutError, TinkerError
from .._options import BodyOverrides, Extras, Overrides, RequestOptions
from ._paths import segment
from ._resource import M, Parsed, Raw, Streamed, SyncAPIResource, endpoint, iterate_pages, no_content, view
from .training_runs import AccessScope
from .types import (
    Session,
    SessionList,
    SessionSearchCursor,
    SessionSearchResponse,
    SessionSummary,
    TraceExport,
)

# Between polls of a trace export being built (the official SDK's interval).
TRACE_POLL_INTERVAL = 5.0

__all__ = ["SearchOwner", "SessionState", "Sessions"]

# Whose sessions a search looks at: your own, every one you may list, or those of the users named
# (1 to 10 owner URNs, ``tml:user:...``).
SearchOwner = Literal["own", "accessible"] | Sequence[str]
# The states a search may match (any of those given).
SessionState = Literal["active", "cancelled", "failed", "client_finished"]
FinishReason = Literal["success", "errored", "interrupted"]
MAX_SEARCH_LIMIT = 200  # the API's largest page


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

    @endpoint
    def search(
        self,
        *,
        session_id: str | None = None,
        display_name: str | None = None,
        project_ids: Sequence[str] | None = None,
        user_metadata: Mapping[str, str] | None = None,
        owner: SearchOwner = "own",
        statuses: Sequence[SessionState] | None = None,
        finish_reasons: Sequence[FinishReason] | None = None,
        limit: int = 50,
        cursor: SessionSearchCursor | None = None,
        **overrides: Unpack[BodyOverrides],
    ) -> SessionSearchResponse:
        """One page of the sessions that match, newest first (the SDK's ``search_sessions``, experimental
        there: the API may change). Pass a page's ``next_cursor`` as ``cursor`` for the next one, or
        let ``search_iter`` do it.

        ``session_id`` and ``display_name`` (words found in the name, ignoring case) match either;
        every ``user_metadata`` pair must hold; ``statuses`` match any (``finish_reasons`` narrows
        ``client_finished``); None and empty mean any.

        Raises:
            ValueError: a ``limit`` outside 1..200, an empty ``display_name``, a bad ``owner``, or
                ``finish_reasons`` without ``client_finished`` in ``statuses`` (nothing sent).
        """
        body = _search_body(
            session_id, display_name, project_ids, user_metadata, owner, statuses, finish_reasons, limit
        )
        if cursor is not None:
            body["cursor"] = cursor
        options = RequestOptions("POST", "/api/v1/sessions/search", json=body)
        return self._json(options, SessionSearchResponse, overrides)

    def search_iter(
        self: Sessions[Parsed],
        *,
        session_id: str | None = None,
        display_name: str | None = None,
        project_ids: Sequence[str] | None = None,
        user_metadata: Mapping[str, str] | None = None,
        owner: SearchOwner = "own",
        statuses: Sequence[SessionState] | None = None,
        finish_reasons: Sequence[FinishReason] | None = None,
        limit: int = 50,
        max_items: int | None = None,
        **overrides: Unpack[BodyOverrides],
    ) -> Iterator[SessionSummary]:
        """Every session ``search`` matches, newest first, lazily: one ``search`` per ``limit``
        sessions, sent only when the loop gets there, following ``next_cursor`` to its end (or
        ``max_items``). Arguments are checked now; nothing is sent before the first ``next()``.

        Raises:
            TinkerError: the server answered the same cursor twice (it would never end).
        """
        self._plain_only("search_iter")
        _search_body(
            session_id, display_name, project_ids, user_metadata, owner, statuses, finish_reasons, limit
        )
        if max_items is not None and max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")

        def pages() -> Iterator[SessionSummary]:
            cursor: SessionSearchCursor | None = None
            given = 0
            while max_items is None or given < max_items:
                page = self.search(
                    session_id=session_id,
                    display_name=display_name,
                    project_ids=project_ids,
                    user_metadata=user_metadata,
                    owner=owner,
                    statuses=statuses,
                    finish_reasons=finish_reasons,
                    limit=limit if max_items is None else min(limit, max_items - given),
                    cursor=cursor,
                    **overrides,
                )
                found = page.sessions if max_items is None else page.sessions[: max_items - given]
                yield from found
                given += len(found)
                if page.next_cursor is None or not page.sessions:
                    return
                if page.next_cursor == cursor:
                    raise TinkerError(
                        "The server answered the same search cursor twice; stopping rather than "
                        "listing sessions again"
                    )
                cursor = page.next_cursor

        return pages()

    @endpoint
    def assign_project(self, session_id: str, project_id: str, **overrides: Unpack[BodyOverrides]) -> None:
        """Move the session, with its training runs and samplers, into ``project_id`` (the SDK's
        ``assign_session_project``). A session cannot leave projects altogether once in one.

        Raises:
            ValueError: an empty ``project_id`` (nothing sent).
            PermissionDeniedError: no access to that project. NotFoundError: no such session.
        """
        if not isinstance(project_id, str) or not project_id:
            raise ValueError(f"project_id must be a non-empty string, got {project_id!r}")
        path = f"/api/v1/sessions/{segment(session_id, 'session id')}/project"
        options = RequestOptions("PUT", path, json={"project_id": project_id})
        return self._request(options, no_content, overrides)

    def export_trace(
        self: Sessions[Parsed],
        session_id: str,
        *,
        timeout: float = 600.0,
        poll_interval: float = TRACE_POLL_INTERVAL,
        on_pending: Callable[[], None] | None = None,
        **extras: Unpack[Extras],
    ) -> str:
        """Have the server build the session's Perfetto trace (``.pftrace``); its signed download URL.

        Polls ``GET sessions/{id}/trace_export`` until it is ready (``on_pending`` is called once,
        at the first "pending"). The URL lives about an hour and needs no key: fetch it with
        ``client.download(url, dest, credentials=False)``. ``timeout`` is the whole wait;
        ``extra_headers``, ``extra_query`` and ``max_retries`` go with every poll.

        Raises:
            TinkerError: the export failed on the server.
            APITimeoutError: not ready within ``timeout`` seconds.
        """
        self._plain_only("export_trace")
        options = RequestOptions("GET", f"/api/v1/sessions/{segment(session_id, 'session id')}/trace_export")
        options = options.overridden(extras)
        deadline = time.monotonic() + timeout
        pending = False
        while True:
            answer = self._json(options, TraceExport)
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


def _search_body(
    session_id: str | None,
    display_name: str | None,
    project_ids: Sequence[str] | None,
    user_metadata: Mapping[str, str] | None,
    owner: SearchOwner,
    statuses: Sequence[SessionState] | None,
    finish_reasons: Sequence[FinishReason] | None,
    limit: int,
) -> dict[str, Any]:
    """The SDK's SessionSearchRequest body (its defaults sent, None left out), checked first."""
    if type(limit) is not int or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_SEARCH_LIMIT}, got {limit!r}")
    if display_name == "":
        raise ValueError("display_name must not be empty (None searches every name)")
    if owner in ("own", "accessible"):
        who: dict[str, Any] = {"type": owner}
    elif isinstance(owner, str) or not 1 <= len(owner) <= 10 or not all(isinstance(u, str) for u in owner):
        raise ValueError(f"owner must be 'own', 'accessible' or a list of 1 to 10 owner URNs, got {owner!r}")
    else:
        who = {"type": "user", "owner_urns": list(owner)}
    body: dict[str, Any] = {"user_metadata": dict(user_metadata or {}), "owner": who, "limit": limit}
    if session_id is not None:
        body["session_id"] = session_id
    if display_name is not None:
        body["display_name"] = display_name
    if project_ids is not None:
        body["project_ids"] = list(project_ids)
    if finish_reasons is not None and "client_finished" not in (statuses or ()):
        raise ValueError("finish_reasons narrows the client_finished status: add it to statuses")
    if statuses:
        queries: list[dict[str, Any]] = []
        for state in statuses:
            query: dict[str, Any] = {"type": state}
            if state == "client_finished" and finish_reasons:
                query["reasons"] = list(finish_reasons)
            queries.append(query)
        body["statuses"] = queries
    return body
