"""docs/request-options.md runs as written: each Python block in a fresh interpreter against the demo
server, and the overrides it shows reach the wire."""

from __future__ import annotations

import pytest
from _doc_pages import python_blocks, run_block

from tinker_sync.testing import MockTinkerServer

BLOCKS = python_blocks("request-options.md")


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=["overrides", "with_options"])
def test_each_example_runs_against_the_demo_server(index: int) -> None:
    with MockTinkerServer(demo_data=True) as server:
        result = run_block(BLOCKS[index], server)
        assert result.returncode == 0, result.stderr
        assert server.violations == []
        requests = server.requests
    if index == 0:
        assert result.stdout.splitlines() == ["5 runs of 48", "200 run-001", "1 sequence"]
        listed = next(r for r in requests if r.path == "/api/v1/training_runs")
        assert listed.headers["x-trace-id"] == "nightly-42" and listed.query["access_scope"] == "accessible"
        assert next(r for r in requests if r.path == "/api/v1/asample").json()["topk_prompt_logprobs"] == 1
    else:
        assert result.stdout.splitlines() == ["ok", "demo session 1"]
        session = next(r for r in requests if r.path == "/api/v1/sessions/session-001")
        assert session.headers["x-team"] == "research"
        assert "x-team" not in next(r for r in requests if r.path == "/api/v1/healthz").headers
