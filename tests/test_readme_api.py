"""The README's "## API" section, executed as written against the mock server's demo data.

Its python blocks run in order in one namespace (later ones use the ``client`` of the
first), from a scratch directory, with ``TINKER_API_KEY`` and ``TINKER_BASE_URL`` set
as a user would, twice (they must not depend on a fresh server); then a few of the
values they computed are checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tinker_sync.testing import MockTinkerServer

README = Path(__file__).resolve().parents[1] / "README.md"


def api_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("\n## API\n")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], re.S)
    assert len(blocks) >= 5, "the API section lost its examples"
    return blocks


def test_the_api_section_covers_every_resource_and_view():
    code = "\n".join(api_blocks())
    for needle in (
        "client.health.",
        "client.server.",
        "client.training_runs.",
        "client.checkpoints.",
        "client.sessions.",
        "client.futures.",
        "client.sampling.",
        ".iter(",
        "client.with_raw_response.",
        ".with_raw_response.",
        "client.with_streaming_response.",
    ):
        assert needle in code, needle


def test_the_api_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    with MockTinkerServer(demo_data=True) as server:
        monkeypatch.setenv("TINKER_API_KEY", server.api_key)
        monkeypatch.setenv("TINKER_BASE_URL", server.url)
        monkeypatch.chdir(tmp_path)
        # Twice against the same server, as a user re-running them against `python -m tinker_sync.testing`.
        for _ in range(2):
            namespace: dict[str, Any] = {"__name__": "readme"}
            for number, block in enumerate(api_blocks(), 1):
                exec(compile(block, f"README.md API example {number}", "exec"), namespace)
            namespace["client"].close()
        assert server.violations == []
        step = server.checkpoint("tinker://run-001/weights/step-0100")
        assert step is not None and step["public"] is False and step["expires_at"] is not None
        publish = [r.method for r in server.requests if r.path.endswith("/weights/step-0100/publish")]
        assert publish == ["POST", "DELETE"] * 2

    out = capsys.readouterr().out
    assert "Qwen/Qwen3-8B 16 tinker://run-001/weights/final" in out
    assert "queue: active" in out and "queue: paused_capacity" in out
    assert "future-failed server" in out
    assert namespace["models"] == ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B"]
    assert namespace["page"].cursor.total_count == 45
    assert [c.tinker_path for c in namespace["newest"]][0] == "tinker://run-044/sampler_weights/step-0400"
    assert len(namespace["newest"]) == 5 and len(namespace["session_ids"]) == 30
    assert namespace["model"].model_id == "run-001"
    assert namespace["text"] == "".join(f"tok{i}" for i in range(8))
    assert len(namespace["result"].sequences[0].tokens) == 16
    assert namespace["tokens"] == [f"tok{i}" for i in range(8)] + [None]
    assert namespace["checkpoint"].tinker_path == "tinker://run-001/weights/final"
    tar = (tmp_path / "model.tar").read_bytes()
    assert tar[257:262] == b"ustar" and len(tar) > 2 * (1 << 20)  # run-001/weights/final: 2 MiB of files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar"]
