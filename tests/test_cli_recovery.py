"""Visible recovery: every command prints one stderr line per retry, resume or reconnect by
default (``Retrying in 2.3 s (attempt 3 of 11): ...``, as curl --retry and pip do), ``--quiet``
silences them, ``--max-retries`` is taken by every command and ``TINKER_MAX_RETRIES`` honoured by
every command. Real subprocesses against a real server answering 500, and a dead port: every
command in a subprocess with ``TINKER_MAX_RETRIES`` (both servers), every setting in a subprocess
for ``run list``; the other variants run the same ``main()`` in this process (``run_cli_here``).

The commands are found by walking the parser, so a command added later is covered too.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
from pathlib import Path

import _zygote
import pytest
from _front import Front
from _helpers import run_cli_here

from tinker_sync.cli import build_parser

API_KEY = "tml-test-key"
RETRY_LINE = re.compile(r"Retrying in \d+\.\d s \(attempt (\d+) of (\d+)\): \S")
# Arguments for each command's positionals (any other command gets "x" for each).
ARGUMENTS = {
    "download": ["/api/v1/anything"],
    "run list": [],
    "run info": ["run-1"],
    "checkpoint list": [],
    "checkpoint info": ["tinker://run-1/weights/final"],
    "checkpoint download": ["tinker://run-1/weights/final"],
    "checkpoint sync": ["run-1"],
    "checkpoint publish": ["tinker://run-1/weights/final"],
    "checkpoint unpublish": ["tinker://run-1/weights/final"],
    "checkpoint set-ttl": ["tinker://run-1/weights/final", "--ttl", "3600"],
    "checkpoint delete": ["tinker://run-1/weights/final", "-y"],  # -y: no question on stdin
}
OFFLINE = {"demo", "version", "auth logout"}  # commands that talk to no server
# Commands whose answer to a failing server is not exit 1 by design, covered by their own tests:
# ``auth login`` reads its key on stdin, ``auth status`` reports an unreachable server (exit 0).
OWN_TESTS = {"auth login", "auth status"}


def _commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*prefix, name])
                return
        found.append(prefix)

    walk(build_parser(), [])
    return found


COMMANDS = [c for c in _commands() if " ".join(c) not in OFFLINE | OWN_TESTS]


def _argv(command: list[str], tmp_path: Path) -> list[str]:
    name = " ".join(command)
    parser = build_parser()
    for word in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    positionals = [a for a in parser._actions if not a.option_strings]
    args = ARGUMENTS.get(name, ["x"] * len(positionals))
    options = [o for a in parser._actions for o in a.option_strings]
    out = ["-o", str(tmp_path / "out")] if "-o" in options else []
    return [*command, *args, *out]


def _run(url: str, argv: list[str], **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINKER_", "CLOUDFLARE_"))}
    env.update(TINKER_API_KEY=API_KEY, TINKER_BASE_URL=url, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    return _zygote.run(argv, env, None, 180)


def _run_cli(
    subprocess_run: bool, url: str, argv: list[str], monkeypatch, capsys, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    """``_run`` in a subprocess, or the CLI's ``main()`` here with the same environment."""
    if subprocess_run:
        return _run(url, argv, **env_extra)
    return run_cli_here(
        monkeypatch, capsys, argv, {"TINKER_API_KEY": API_KEY, "TINKER_BASE_URL": url, **env_extra}
    )


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _failing(status: int = 500):
    def answer(query, upstream):
        return status, b'{"error": {"message": "the backend is down", "type": "server_error"}}'

    return answer


class AlwaysFailing(Front):
    """Every route answers ``status`` (the front matches exact paths: list every one used)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", {})
        self.routes = _EveryPath(_failing())


class _EveryPath(dict):
    def __init__(self, answer) -> None:
        super().__init__()
        self.answer = answer

    def get(self, key, default=None):  # noqa: ARG002 - every path answers the same
        return self.answer


# How the retries are configured, and the retry lines each must print (attempt numbers).
SETTINGS = {
    "env_2": ({"TINKER_MAX_RETRIES": "2"}, [], [2, 3]),
    "flag_1": ({}, ["--max-retries", "1"], [2]),
    "flag_over_env": ({"TINKER_MAX_RETRIES": "5"}, ["--max-retries", "1"], [2]),
    "env_0": ({"TINKER_MAX_RETRIES": "0"}, [], []),
    "flag_0": ({}, ["--max-retries", "0"], []),
    "quiet": ({"TINKER_MAX_RETRIES": "1"}, ["--quiet"], []),
}


CASES = [
    pytest.param(server, setting, id=f"{server}-{setting}")
    for server in ("500", "dead")
    for setting in SETTINGS
    if server == "500" or setting in ("env_2", "flag_0")  # a dead port waits its backoff: two cases
]


@pytest.mark.parametrize(("server", "setting"), CASES)
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_retry_is_one_line_on_stderr(tmp_path, monkeypatch, capsys, command, server, setting):
    env, flags, attempts = SETTINGS[setting]
    argv = [*_argv(command, tmp_path), *flags]
    real = setting == "env_2" or command == ["run", "list"]  # the rest: the same main() in this process
    if server == "dead":
        result = _run_cli(real, _dead_url(), argv, monkeypatch, capsys, **env)
    else:
        with AlwaysFailing() as front:
            result = _run_cli(real, front.url, argv, monkeypatch, capsys, **env)
    # A usage error is never a pass, nor a skip: a new command needs its arguments in ARGUMENTS.
    assert result.returncode != 2, f"usage error for {' '.join(argv)} (ARGUMENTS): {result.stderr}"
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "Retrying" in line]
    assert [int(RETRY_LINE.search(line).group(1)) for line in lines] == attempts, result.stderr
    assert all(RETRY_LINE.search(line).group(2) == str(len(attempts) + 1) for line in lines)
    assert "Traceback" not in result.stderr
    if command == ["checkpoint", "delete"]:  # each path's failure is in its summary (stdout, or -f json)
        errors = [line for line in result.stdout.splitlines() if line.startswith("Failed: tinker://run-1/")]
    else:
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stdout + result.stderr  # and then one line saying what failed


@pytest.mark.parametrize("command", [*COMMANDS, ["demo"]], ids=[" ".join(c) for c in [*COMMANDS, ["demo"]]])
def test_every_command_takes_max_retries(command):
    parser = build_parser()
    for word in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    assert "--max-retries" in [o for a in parser._actions for o in a.option_strings]


@pytest.mark.parametrize("value", ["-1", "x", "1.5", ""])
def test_a_bad_max_retries_is_a_usage_error(monkeypatch, capsys, value):
    result = _run_cli(
        value == "-1", _dead_url(), ["run", "list", "--max-retries", value], monkeypatch, capsys
    )
    assert result.returncode == 2 and "--max-retries" in result.stderr


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_a_bad_tinker_max_retries_says_so(monkeypatch, capsys, value):
    result = _run_cli(
        value == "-1", _dead_url(), ["run", "list"], monkeypatch, capsys, TINKER_MAX_RETRIES=value
    )
    assert result.returncode in (1, 2) and "TINKER_MAX_RETRIES" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_source_builds_every_client_through_client_from():
    """A command that made its own ``Client()`` would skip --max-retries, the env and the retry lines."""
    import tinker_sync.cli as cli

    root = Path(cli.__file__).parent
    for module in root.glob("*.py"):
        text = module.read_text()
        calls = re.findall(r"\bClient\(", text)
        if module.name in ("demo.py", "auth.py"):
            continue  # demo: the mock server in this process; auth: a client per key it checks
        if module.name == "_common.py":
            assert len(calls) == 1  # in client_from
        else:
            assert calls == [], f"{module.name} builds a Client itself: use client_from(args)"
