"""docs/migration.md, executed: every public official RestClient method and CLI command is in its
tables (read from the installed official SDK), and every tinker_sync equivalent exists."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from _official import official_venv

from tinker_sync import Client
from tinker_sync.cli import main

PAGE = Path(__file__).parent.parent / "docs" / "migration.md"
ROW = re.compile(r"^\| `([^`]+)` \| (?:`([^`]+)`|none) \|", re.M)

OFFICIAL_SURFACE = """
import json, click, inspect, importlib
import tinker
from tinker.cli.__main__ import main_cli
methods = sorted(n for n, v in vars(tinker.RestClient).items()
                 if not n.startswith("_") and not n.endswith("_async") and callable(v))
commands = []
for group, target in sorted(main_cli.lazy_subcommands.items()):
    module, attr = target.split(":")
    cmd = getattr(importlib.import_module(module), attr)
    if isinstance(cmd, click.Group):
        commands += [f"tinker {group} {name}" for name in sorted(cmd.commands)]
    else:
        commands.append(f"tinker {group}")
print(json.dumps({"methods": methods + ["holder"], "commands": commands}))
"""


def _rows() -> dict[str, str | None]:
    return {official: ours or None for official, ours in ROW.findall(PAGE.read_text())}


@pytest.fixture(scope="module")
def official() -> dict[str, list[str]]:
    python = official_venv() / "bin" / "python"
    done = subprocess.run([str(python), "-c", OFFICIAL_SURFACE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    surface: dict[str, list[str]] = json.loads(done.stdout)
    return surface


@pytest.mark.slow
def test_every_official_method_and_command_is_in_the_page(official):
    rows = _rows()
    missing = [name for name in official["methods"] + official["commands"] if name not in rows]
    assert missing == []
    assert len(official["methods"]) >= 20 and len(official["commands"]) >= 15


def test_every_library_equivalent_exists():
    client = Client(api_key="tml-doc", base_url="http://127.0.0.1:9", trust_env=False)
    with client:
        for official, ours in _rows().items():
            if ours is None or not ours.startswith("client."):
                continue
            target: object = client
            for name in ours.split(".")[1:]:
                target = getattr(target, name)  # AttributeError names what the page promises wrongly
            assert callable(target), (official, ours)


@pytest.mark.parametrize(
    "row", [r for r in _rows().items() if r[0].startswith("tinker ") and r[1] is not None], ids=lambda r: r[0]
)
def test_every_cli_equivalent_exists(row, capsys):
    official, ours = row
    assert ours.startswith("tinker-sync ")
    assert main([*ours.split()[1:], "--help"]) == 0, official
    assert "usage:" in capsys.readouterr().out
