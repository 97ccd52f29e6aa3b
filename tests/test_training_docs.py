"""docs/training.md runs as written: each Python block, saved as a script, run as ``python SCRIPT``
against the demo server (forked from a process that imported the package: ``tests/_zygote.py``).

The blocks are the cookbook's minimal supervised (``sl_loop``) and RL (``rl_loop``) loops ported
to tinker_sync, ``sample_many``, and sampling in worker processes (``spawn`` re-imports the script
in each worker); they assert their own outcomes (the loss falls).
"""

from __future__ import annotations

import re
from pathlib import Path

import _zygote
import pytest
from _helpers import client_env

from tinker_sync.testing import MockTinkerServer

DOC = Path(__file__).parent.parent / "docs" / "training.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_page_has_the_loops() -> None:
    assert len(BLOCKS) == 5
    assert any("cross_entropy" in b for b in BLOCKS) and any("importance_sampling" in b for b in BLOCKS)


@pytest.mark.parametrize(
    "index", range(len(BLOCKS)), ids=["imports", "sl_loop", "rl_loop", "sample_many", "workers"]
)
@pytest.mark.slow
def test_each_example_runs_against_the_demo_server(index: int, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(BLOCKS[index])
    with MockTinkerServer(demo_data=True) as server:
        env = client_env(server.api_key, server.url)
        result = _zygote.run_python([str(script)], env, tmp_path, 300)
        assert result.returncode == 0, result.stderr
        if index == 1:
            assert "saved tinker://" in result.stdout and result.stdout.count("step ") == 4
            assert server.sessions[-1].finished == "success"
        if index == 2:
            assert result.stdout.count("step ") == 3
        if index == 3:
            assert result.stdout.strip() == "4000 tokens sampled"
        if index == 4:
            assert result.stdout.strip() == "4 prompts sampled in worker processes"
            asamples = [r.json() for r in server.requests if r.path == "/api/v1/asample"]
            assert len(asamples) == 4 and all(body["seq_id"] >= 1_000_000_000 for body in asamples)
            paths = [r.path for r in server.requests]
            assert paths.count("/api/v1/create_session") == 1 and server.sessions[-1].finished == "success"
