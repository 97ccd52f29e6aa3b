"""Running a docs page as written: its Python blocks, each in a fresh interpreter, against a demo server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tinker_sync.testing import MockTinkerServer

DOCS = Path(__file__).parent.parent / "docs"


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``, in order."""
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def run_block(block: str, server: MockTinkerServer) -> subprocess.CompletedProcess[str]:
    """Run ``block`` with the demo server's ``TINKER_BASE_URL`` and ``TINKER_API_KEY`` exported."""
    env = {**os.environ, "TINKER_BASE_URL": server.url, "TINKER_API_KEY": server.api_key}
    return subprocess.run([sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=300)
