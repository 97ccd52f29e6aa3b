"""docs/reliability.md runs as written: each Python block in a fresh interpreter against the demo
server (as tests/test_training_docs.py does for the training page)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinker_sync.testing import MockTinkerServer

DOC = Path(__file__).parent.parent / "docs" / "reliability.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_page_has_its_examples() -> None:
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=["max_response_size", "refused_id"])
def test_each_example_runs_against_the_demo_server(index: int) -> None:
    with MockTinkerServer(demo_data=True) as server:
        env = {**os.environ, "TINKER_BASE_URL": server.url, "TINKER_API_KEY": server.api_key}
        result = subprocess.run(
            [sys.executable, "-c", BLOCKS[index]], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 0, result.stderr
    assert ("runs" in result.stdout) if index == 0 else result.stdout.startswith("refused:")
