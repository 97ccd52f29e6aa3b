"""docs/reliability.md runs as written: each Python block as ``python -c`` runs it, against the demo
server (as tests/test_training_docs.py does for the training page, through ``tests/_zygote.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import _zygote
import pytest
from _helpers import client_env

from tinker_sync.testing import MockTinkerServer

DOC = Path(__file__).parent.parent / "docs" / "reliability.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_page_has_its_examples() -> None:
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=["max_response_size", "refused_id"])
def test_each_example_runs_against_the_demo_server(index: int) -> None:
    with MockTinkerServer(demo_data=True) as server:
        result = _zygote.run_python(["-c", BLOCKS[index]], client_env(server.api_key, server.url), None, 120)
    assert result.returncode == 0, result.stderr
    assert ("runs" in result.stdout) if index == 0 else result.stdout.startswith("refused:")
