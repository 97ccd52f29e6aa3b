"""Every ```python block of README.md and docs/*.md, run as written against the demo server.

The convention (docs/TESTING.md, "Examples that run"): the blocks of one page run in order, in
one namespace (a later block may use the ``client`` of an earlier one), in a process of its own
(``tests/_zygote.py``: as a fresh interpreter after ``import tinker_sync``) whose environment holds ``TINKER_API_KEY`` and ``TINKER_BASE_URL`` as the ``export`` line of
``python -m tinker_sync.testing`` sets them, from a scratch directory. The pages that change the
server's data (``RERUN``) run twice against the same server, each time in a new directory: a reader
re-runs examples, and they must not depend on a fresh server. A block that cannot run as written is preceded by ``<!-- not run: REASON -->``.

Tracebacks name the page and its line: each block is compiled at its own line of the page.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import _zygote
import pytest
from _helpers import ROOT, client_env, demo_server_process

from tinker_sync.testing import MockTinkerServer

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Pages whose blocks a test of their own runs, as written, with checks of what they print (one
# self-contained program per block there): not run twice.
OWN_TESTS = {"docs/training.md": "tests/test_training_docs.py"}
NOT_RUN = re.compile(r"^<!-- not run: (\S.*?) -->$")
FENCE = re.compile(r"^(`{3,})(\S*)(.*)$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the checkout
    line: int  # of the first line of code
    code: str
    not_run: str | None  # the reason, for a block marked not to run


def parse(path: Path) -> tuple[list[Block], list[int]]:
    """The fenced ``python`` blocks of a Markdown page (fences of 3+ backticks; blocks nested in
    another fence are text), and the lines of every ``not run`` marker outside fences."""
    lines = path.read_text().splitlines()
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    blocks: list[Block] = []
    markers: list[int] = []
    i = 0
    while i < len(lines):
        if NOT_RUN.match(lines[i].strip()):
            markers.append(i + 1)
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        if lang == "python":
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.match(previous.strip())
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(name, i + 2, code, marker.group(1) if marker else None))
        i = end + 1
    return blocks, markers


def blocks_of(path: Path) -> list[Block]:
    """The fenced ``python`` blocks of a Markdown page."""
    return parse(path)[0]


RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for page, line, code in json.load(sys.stdin):
    exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
"""


def run_page(blocks: list[Block], env: dict[str, str], cwd: Path, checks: str = "") -> str:
    """Run the blocks (then ``checks``, in their namespace) as ``python -c`` does (forked from a
    process that imported the package: ``tests/_zygote.py``); its stdout."""
    payload = [(b.page, b.line, b.code) for b in blocks if b.not_run is None]
    if checks:
        payload.append(("checks", 1, checks))
    result = _zygote.run_python(["-c", RUNNER], env, cwd, 120, stdin=json.dumps(payload))
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_every_page_is_read() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/quickstart.md", "docs/resources.md", "docs/TESTING.md"} <= names
    runnable = [b for p in PAGES for b in blocks_of(p) if b.not_run is None]
    assert len(runnable) >= 15, "the docs lost their examples"


def test_a_block_that_does_not_run_says_why() -> None:
    # The marker is for what needs the reader's own account, proxy or certificate: rare.
    skipped = [b for p in PAGES for b in blocks_of(p) if b.not_run is not None]
    assert len(skipped) <= 3, [f"{b.page}:{b.line}" for b in skipped]
    for path in PAGES:
        blocks, markers = parse(path)
        assert len(markers) == len([b for b in blocks if b.not_run]), (
            f"{path.name}: a marker before no python block"
        )


def test_the_block_reader(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n```python\nx = 1\n```\n\n<!-- not run: needs your proxy -->\n```python\ny = 2\n```\n\n"
        "````markdown\n```python\nnested = True\n```\n````\n\n```\nnot python\n```\n"
    )
    blocks, markers = parse(page)
    assert [(b.line, b.code, b.not_run) for b in blocks] == [
        (4, "x = 1\n", None),
        (9, "y = 2\n", "needs your proxy"),
    ]
    assert markers == [7]


# Pages whose examples change the server's data (publish, TTLs, ...): run twice against one server.
RERUN = {"docs/resources.md"}

# Pages whose examples leave values worth checking, beyond running: assertions run in the page's
# namespace after its blocks (in the subprocess).
CHECKS = {
    "docs/resources.md": """
assert models == ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B"]
assert page.cursor.total_count == 45
assert [c.tinker_path for c in newest][0] == "tinker://run-044/sampler_weights/step-0400"
assert len(newest) == 5 and len(session_ids) == 30
assert model.model_id == "run-001"
assert text == "".join(f"tok{i}" for i in range(8))
assert len(result.sequences[0].tokens) == 16
assert tokens == [f"tok{i}" for i in range(8)] + [None]
assert checkpoint.tinker_path == "tinker://run-001/weights/final"
assert sampler.base_model == "Qwen/Qwen3-8B"
assert len(found.sessions) == len(more.sessions) == 5 and found.sessions[-1].created_at > more.sessions[0].created_at
assert done and len(done) == len(set(done)) < len(session_ids)  # the finished ones, each once
client.close()
""",
    "README.md": """
assert run.training_run_id == "run-001"
assert target.name == "run-001_weights_final" and target.is_dir()
import hashlib, pathlib
assert pathlib.Path("final.tar").read_bytes()[257:262] == b"ustar"
""",
    "docs/streaming.md": """
assert stream.response.is_closed
""",
}


def runnable_pages() -> list[Path]:
    return [
        p
        for p in PAGES
        if p.relative_to(ROOT).as_posix() not in OWN_TESTS and any(b.not_run is None for b in blocks_of(p))
    ]


def test_pages_with_their_own_test_have_one() -> None:
    for page, test in OWN_TESTS.items():
        assert (ROOT / page).exists() and (ROOT / test).exists(), page
        assert page.rsplit("/", 1)[1] in (ROOT / test).read_text()


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: p.name)
def test_the_examples_of_a_page_run_as_written(page: Path, tmp_path: Path) -> None:
    blocks = blocks_of(page)
    name = page.relative_to(ROOT).as_posix()
    with MockTinkerServer(demo_data=True) as server:
        env = client_env(server.api_key, server.url)
        outputs = []
        for run in (1, 2) if name in RERUN else (1,):
            cwd = tmp_path / f"run-{run}"
            cwd.mkdir()
            outputs.append(run_page(blocks, env, cwd, CHECKS.get(name, "")))
        assert server.violations == []
    if name == "docs/resources.md":
        check_the_api_page(server, "".join(outputs), tmp_path / "run-2")


def check_the_api_page(server: MockTinkerServer, out: str, cwd: Path) -> None:
    """What the API page's examples did to the server, printed (both runs), and left on disk."""
    step = server.checkpoint("tinker://run-001/weights/step-0100")
    assert step is not None and step["public"] is False and step["expires_at"] is not None
    publish = [r.method for r in server.requests if r.path.endswith("/weights/step-0100/publish")]
    assert publish == ["POST", "DELETE"] * 2
    assert "Qwen/Qwen3-8B 16 tinker://run-001/weights/final" in out
    assert "queue: active" in out and "queue: paused_capacity" in out
    assert "future-failed server" in out
    tar = (cwd / "model.tar").read_bytes()
    assert tar[257:262] == b"ustar" and len(tar) > 2 * (1 << 20)  # run-001/weights/final: 2 MiB of files
    assert sorted(p.name for p in cwd.iterdir()) == ["model.tar"]


def test_the_api_page_covers_every_resource_and_view() -> None:
    code = "\n".join(b.code for b in blocks_of(ROOT / "docs" / "resources.md"))
    assert len(blocks_of(ROOT / "docs" / "resources.md")) >= 5, "the API page lost its examples"
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


def test_the_readme_runs_against_the_printed_export_line(tmp_path: Path) -> None:
    """What a reader does: start ``python -m tinker_sync.testing``, paste its export line, run the tour."""
    with demo_server_process() as served:
        exported = next(line for line in served.lines if line.startswith("export "))
        words = shlex.split(exported)
        assert words[0] == "export" and [w.split("=", 1)[0] for w in words[1:]] == [
            "TINKER_API_KEY",
            "TINKER_BASE_URL",
        ]
        variables = dict(w.split("=", 1) for w in words[1:])
        assert variables == {"TINKER_API_KEY": served.api_key, "TINKER_BASE_URL": served.url}
        env = client_env(variables["TINKER_API_KEY"], variables["TINKER_BASE_URL"])
        out = run_page(blocks_of(ROOT / "README.md"), env, tmp_path)
    assert "Qwen/Qwen3-8B 16 tinker://run-001/weights/final" in out
