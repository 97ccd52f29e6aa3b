"""Pagination ends: against a server that ignores ``offset`` (the same page again, or a cursor
naming another offset), ``iter()`` and the CLI's lists raise a clear ``TinkerError`` after at most
one repeated page, never yielding an item twice. Real sockets: a loopback front (tests/_front.py)
answers the list routes with each kind of broken paging; honest servers (the mock, and the front
paging correctly) still list everything.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import pytest
from _front import CLIENT_CONFIG, Front, older_server
from _helpers import run_cli

from tinker_sync import Client, TinkerError

API_KEY = "tml-test-key"
NOWHERE = "http://127.0.0.1:9"  # the front answers every route these tests use itself
TOTAL = 257  # over the command line's page size (100)

# How a broken server picks the items of a page and the offset its cursor names, given the offset
# and limit asked. ``None`` for the cursor's offset: echo the one asked.
Paging = Callable[[int, int], tuple[int, int | None]]

BROKEN: dict[str, Paging] = {
    "first_page_always": lambda offset, limit: (0, None),
    "first_page_cursor_says_zero": lambda offset, limit: (0, 0),
    "cursor_off_by_one": lambda offset, limit: (max(offset - 1, 0), max(offset - 1, 0)),
    "page_number_not_offset": lambda offset, limit: (offset // limit, offset // limit),
    "stuck_at_second_page": lambda offset, limit: (min(offset, limit), None),
    "stuck_at_second_page_cursor_true": lambda offset, limit: (min(offset, limit), min(offset, limit)),
    "offset_halved": lambda offset, limit: (offset // 2, offset // 2),
    "offset_halved_cursor_lies": lambda offset, limit: (offset // 2, None),
    "offset_ignored_after_third": lambda offset, limit: (min(offset, 2 * limit), None),
}
# Broken only in a way the cursor shows (one item again a page): without a cursor, the list must
# still end and never yield an item twice.
CURSOR_ONLY = {"cursor_off_by_one"}
HONEST: Paging = lambda offset, limit: (offset, None)  # noqa: E731


def _run(i: int) -> dict:
    return {
        "training_run_id": f"run-{i:03d}",
        "base_model": "Qwen/Qwen3-8B",
        "model_owner": "mock-user",
        "is_lora": True,
        "last_request_time": "2025-01-01T00:00:00Z",
    }


def _checkpoint(i: int) -> dict:
    return {
        "checkpoint_id": f"weights/c{i:03d}",
        "checkpoint_type": "training",
        "time": "2025-01-01T00:00:00Z",
        "tinker_path": f"tinker://run-1/weights/c{i:03d}",
    }


def routes(paging: Paging, *, total: int | None = TOTAL, cursor: bool = True) -> dict:
    """The three list routes, paging as ``paging`` says (over ``TOTAL`` items)."""

    def answer(key: str, make: Callable[[int], object]) -> Callable:
        def respond(query, upstream):
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
            start, said = paging(offset, limit)
            items = [make(i) for i in range(start, min(start + limit, TOTAL))]
            body: dict = {key: items}
            if cursor and key != "sessions":
                body["cursor"] = {
                    "offset": offset if said is None else said,
                    "limit": limit,
                    "total_count": TOTAL if total is None else total,
                }
            return 200, json.dumps(body).encode()

        return respond

    return {
        CLIENT_CONFIG: older_server,  # no upstream: the handshake learns the default flags
        "/api/v1/training_runs": answer("training_runs", _run),
        "/api/v1/checkpoints": answer("checkpoints", _checkpoint),
        "/api/v1/sessions": answer("sessions", lambda i: f"session-{i:03d}"),
    }


LISTS = {
    "training_runs": lambda c, **kw: (r.training_run_id for r in c.training_runs.iter(**kw)),
    "checkpoints": lambda c, **kw: (x.tinker_path for x in c.checkpoints.iter(**kw)),
    "sessions": lambda c, **kw: iter(c.sessions.iter(**kw)),
}
SHAPES = {
    "cursor_with_total": {"cursor": True, "total": None},
    "cursor_huge_total": {"cursor": True, "total": 10**9},
    "no_cursor": {"cursor": False, "total": None},
}
# Training runs always come with a cursor (a required field): no "no_cursor" case for them.
LIST_SHAPES = [
    pytest.param(which, shape, id=f"{which}-{name}")
    for which in LISTS
    for name, shape in SHAPES.items()
    if shape["cursor"] or which != "training_runs"
]
PAGE_ARGS = {"limit_10": {"limit": 10}, "limit_7_offset_3": {"limit": 7, "offset": 3}}


@pytest.mark.parametrize("page_args", PAGE_ARGS.values(), ids=PAGE_ARGS.keys())
@pytest.mark.parametrize(("which", "shape"), LIST_SHAPES)
@pytest.mark.parametrize("paging", BROKEN.values(), ids=BROKEN.keys())
def test_a_server_ignoring_offset_is_an_error_not_endless_duplicates(paging, which, shape, page_args):
    with (
        Front(NOWHERE, routes(paging, **shape)) as front,
        Client(api_key=API_KEY, base_url=front.url, max_retries=0) as client,
    ):
        got: list[str] = []
        shows = (shape["cursor"] and which != "sessions") or paging not in [BROKEN[k] for k in CURSOR_ONLY]
        with (
            pytest.raises(TinkerError, match="ignores offset")
            if shows
            else contextlib.nullcontext() as caught
        ):
            for item in LISTS[which](client, **page_args):
                got.append(item)
                assert len(got) <= TOTAL, "listed more items than there are"
        assert len(got) == len(set(got)), "an item was yielded twice"
        pages = len([hit for hit in front.hits if not hit.startswith(CLIENT_CONFIG)])
        assert pages <= TOTAL // page_args["limit"] + 2  # at most one repeated page was fetched
    if shows:
        assert "offset" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("page_args", PAGE_ARGS.values(), ids=PAGE_ARGS.keys())
@pytest.mark.parametrize(("which", "shape"), LIST_SHAPES)
def test_an_honest_server_still_lists_everything_once(which, shape, page_args):
    if shape["total"] == 10**9 and (which == "sessions" or shape["cursor"]):
        shape = {**shape, "total": None}  # a total larger than the list is no honest server
    with (
        Front(NOWHERE, routes(HONEST, **shape)) as front,
        Client(api_key=API_KEY, base_url=front.url, max_retries=0) as client,
    ):
        got = list(LISTS[which](client, **page_args))
    start = page_args.get("offset", 0)
    assert len(got) == len(set(got)) == TOTAL - start


@pytest.mark.parametrize("command", [["run", "list", "--limit", "0"], ["checkpoint", "list", "--limit", "0"]])
@pytest.mark.parametrize("paging", ["first_page_always", "cursor_off_by_one", "stuck_at_second_page"])
def test_the_command_line_lists_stop_with_a_clear_error(command, paging):
    with Front(NOWHERE, routes(BROKEN[paging])) as front:
        result = run_cli(front, *command)
    assert result.returncode == 1, result.stderr
    assert "ignores offset" in result.stderr and "Traceback" not in result.stderr
