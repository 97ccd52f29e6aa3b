"""The mock's ``retrieve_futures``: a session's completions in the order their results became ready.

Ready times here are in the past (negative delays) or far ahead, so the order is decided by the
times set, never by how fast the test runs.
"""

from __future__ import annotations

import pytest
import urllib3

from tinker_sync.testing import MockTinkerServer

NEVER = 3600.0  # ready an hour from now: still pending when the test polls


def completions(server: MockTinkerServer, session: str, cursor: int = 0) -> tuple[list[str], int]:
    body = {
        "target": {"type": "sampling", "sampling_session_id": session},
        "prev_cursor": cursor,
        "timeout": 0,
    }
    with urllib3.PoolManager() as http:
        response = http.request(
            "POST",
            f"{server.url}/api/v1/retrieve_futures",
            json=body,
            headers={"X-API-Key": server.api_key},
        )
    assert response.status == 200, response.data
    answer = response.json()
    return [c["request_id"] for c in answer["completions"]], answer["cursor"]


@pytest.mark.parametrize(
    "resolves, order",
    [
        ([(0, -1.0), (1, -3.0), (2, -2.0)], [1, 2, 0]),
        ([(0, NEVER), (1, -1.0), (2, -2.0)], [2, 1]),
        ([(0, -1.0), (1, -2.0), (0, -5.0)], [0, 1]),  # resolved again, earlier: once, at its new time
        ([(0, -1.0), (1, -2.0), (0, NEVER)], [1]),  # resolved again, later: not ready yet
        ([(0, -1.0)], [0]),  # 1 and 2 never resolved
        ([], []),
    ],
    ids=["by-time", "one-pending", "again-earlier", "again-later", "unresolved", "none"],
)
def test_completions_come_in_the_order_results_became_ready(
    resolves: list[tuple[int, float]], order: list[int]
) -> None:
    with MockTinkerServer() as server:
        promises = [server.promises.create("Sample", session="s:sample:0") for _ in range(3)]
        other = server.promises.create("Sample", session="s:sample:1")
        server.promises.resolve(other, json={"type": "sample"}, delay=-4.0)  # another session's
        for index, delay in resolves:
            server.promises.resolve(promises[index], json={"type": "sample"}, delay=delay)
        ids, cursor = completions(server, "s:sample:0")
        assert ids == [promises[i].request_id for i in order] and cursor == len(order)
        assert completions(server, "s:sample:0", cursor) == ([], cursor)  # nothing twice
        assert completions(server, "s:sample:1") == ([other.request_id], 1)
        server.promises.resolve(promises[2], json={"type": "sample"}, delay=-0.5)  # now ready too
        ids, _ = completions(server, "s:sample:0", cursor)
        assert ids == ([] if 2 in order else [promises[2].request_id])
