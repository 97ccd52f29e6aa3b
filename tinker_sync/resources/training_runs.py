"""``client.training_runs``: list (a page), iterate (every run, lazily), get one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Unpack

from .._options import Overrides, RequestOptions
from ._paths import segment
from ._resource import M, Parsed, Raw, Streamed, SyncAPIResource, endpoint, iterate_pages, view
from .types import TrainingRun, TrainingRunList

__all__ = ["AccessScope", "TrainingRuns"]

AccessScope = Literal["owned", "accessible"]


class TrainingRuns(SyncAPIResource[M]):
    """``client.training_runs``: the caller's training runs (``access_scope="accessible"``: with
    those shared with the caller)."""

    with_raw_response: TrainingRuns[Raw] = view(Raw)
    with_streaming_response: TrainingRuns[Streamed] = view(Streamed)

    @endpoint
    def list(
        self,
        *,
        limit: int = 20,
        offset: int = 0,
        access_scope: AccessScope = "owned",
        **overrides: Unpack[Overrides],
    ) -> TrainingRunList:
        """One page of training runs; ``.cursor`` says where it is and how many there are."""
        params = {"limit": limit, "offset": offset, "access_scope": access_scope}
        options = RequestOptions("GET", "/api/v1/training_runs", params=params)
        return self._json(options, TrainingRunList, overrides)

    @endpoint
    def get(
        self, run_id: str, *, access_scope: AccessScope = "owned", **overrides: Unpack[Overrides]
    ) -> TrainingRun:
        """One training run (NotFoundError if unknown, or not the caller's with ``owned``)."""
        path = f"/api/v1/training_runs/{segment(run_id, 'training run id')}"
        options = RequestOptions("GET", path, params={"access_scope": access_scope})
        return self._json(options, TrainingRun, overrides)

    def iter(
        self: TrainingRuns[Parsed],
        *,
        limit: int = 20,
        offset: int = 0,
        access_scope: AccessScope = "owned",
        max_items: int | None = None,
        **overrides: Unpack[Overrides],
    ) -> Iterator[TrainingRun]:
        """Every training run from ``offset`` on, lazily: one ``list`` request per ``limit`` runs,
        sent only when the loop gets there; stops at the cursor's ``total_count`` or ``max_items``.
        ``overrides`` apply to every page's request."""

        self._plain_only("iter")

        def fetch(offset: int, limit: int) -> tuple[list[TrainingRun], int | None, int | None]:
            page = self.list(limit=limit, offset=offset, access_scope=access_scope, **overrides)
            return page.training_runs, page.cursor.total_count, page.cursor.offset

        return iterate_pages(fetch, limit=limit, offset=offset, max_items=max_items)
