"""Helpers shared by test modules (fixtures live in conftest.py; these are plain functions).

- ``client_env`` / ``cli_env``: the environment of a subprocess pointed at a mock server, as a user's
  shell would be after pasting the ``export`` line of ``python -m tinker_sync.testing``.
- ``run_cli``: ``python -m tinker_sync ARGS`` as a real subprocess against a server (forked from a
  zygote that imported the package once: ``tests/_zygote.py``).
- ``run_cli_here``: the same command through the CLI's ``main()`` in this process (no interpreter
  start, no imports: ~0.2 CPU-s less per run), for the many variants of a class of behaviour of
  which one real subprocess run is kept.
- ``demo_server_process``: ``python -m tinker_sync.testing`` in its own process, parsed.
- ``run_on_terminal``: a command with a pseudo-terminal (100 columns) on its stderr (or all three
  streams), as a person at a terminal runs it; what it drew there.
- ``tree_hashes``: the SHA-256 of every file under a directory, by relative path.
- ``fresh_imports``: whether each module imports first thing in a fresh isolated interpreter, from
  one interpreter forked per module.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import _zygote

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "tml-test-key"  # the mock server's default, and the ``client`` fixture's


class HasURL(Protocol):
    url: str


def client_env(api_key: str, base_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without any ``TINKER_*`` or ``CLOUDFLARE_*`` setting, then the two
    variables the demo server's ``export`` line sets, and ``extra``; the checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINKER_", "CLOUDFLARE_"))}
    env.update(TINKER_API_KEY=api_key, TINKER_BASE_URL=base_url)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def cli_env(server: HasURL | None = None, **extra: str) -> dict[str, str]:
    """``client_env`` for ``server`` (a MockTinkerServer), or with neither variable when None."""
    if server is not None:
        return client_env(API_KEY, server.url, **extra)
    env = client_env("", "", **extra)
    for name in ("TINKER_API_KEY", "TINKER_BASE_URL"):
        if name not in extra:
            del env[name]
    return env


def run_cli(
    server: HasURL | None, *args: str, cwd: Path | None = None, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``python -m tinker_sync ARGS`` against ``server`` (environment: ``cli_env(server, **extra)``), a
    process forked from a zygote that has imported the package (``tests/_zygote.py``)."""
    return _zygote.run(list(args), cli_env(server, **extra), cwd, timeout)


def run_cli_here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """What ``run_cli`` gives (exit code, stdout, stderr), from ``tinker_sync.cli.main(args)`` in this
    process, with the environment a subprocess would get: no ``TINKER_*`` or ``CLOUDFLARE_*`` setting
    of this process, then ``env``."""
    from tinker_sync.cli import main

    for name in list(os.environ):
        if name.startswith(("TINKER_", "CLOUDFLARE_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["tinker-sync", *args], code, out.out, out.err)


def tree_hashes(root: Path) -> dict[str, str]:
    """``{relative/path: sha256}`` of every file under ``root`` (read in 1 MiB blocks: GiB files too)."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            hashes[path.relative_to(root).as_posix()] = digest.hexdigest()
    return hashes


def run_on_terminal(
    argv: list[str], env: dict[str, str], *, all_streams: bool = False, timeout: float = 60
) -> tuple[int, str]:
    """Run ``argv`` with a 24x100 pseudo-terminal as its stderr (and stdin and stdout with
    ``all_streams``; else those are /dev/null) until it exits or closes the terminal; its exit status
    and everything it wrote there (decoded, undecodable bytes replaced)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    other = slave if all_streams else subprocess.DEVNULL
    proc = subprocess.Popen(argv, env=env, stdin=other, stdout=other, stderr=slave)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                output += data
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(10)
    return proc.returncode, output.decode(errors="replace")


@dataclass
class ServedProcess:
    """A running ``python -m tinker_sync.testing``: what it printed first, and the process."""

    proc: subprocess.Popen[str]
    lines: list[
        str
    ]  # the lines printed before serving: "Mock Tinker server at URL (api key K)", "export ..."
    url: str
    api_key: str
    stderr: str = field(default="")  # filled when the process has ended

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port


@contextmanager
def demo_server_process(*args: str) -> Iterator[ServedProcess]:
    """``python -m tinker_sync.testing ARGS`` in its own process (its allocations and threads stay out
    of the test's), ready once it printed its ``export`` line; terminated (SIGTERM) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync.testing", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        lines = [first.rstrip("\n"), proc.stdout.readline().rstrip("\n")]
        assert first.startswith("Mock Tinker server at "), first + (proc.stderr.read() if proc.stderr else "")
        url = first.split()[4]
        api_key = first.split("(api key ", 1)[1].rsplit(")", 1)[0]
        served = ServedProcess(proc, lines, url, api_key)
        yield served
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    served.stderr = err


# What ``fresh_imports`` runs: import the package, say how that went, then fork a child per module
# name read on stdin; each child imports its module (then runs the exit handlers, as an interpreter
# exiting would) and the parent prints its exit status and traceback as one JSON line.
_ZYGOTE = """
import atexit, json, os, sys, traceback
def report(module):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        status, text = 0, ""
        try:
            __import__(module)
            atexit._run_exitfuncs()
        except BaseException:
            status, text = 1, traceback.format_exc()
        os.write(w, text.encode())
        os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), text]), flush=True)
try:
    import tinker_sync
except BaseException:
    print(json.dumps([1, traceback.format_exc()]), flush=True)
    raise SystemExit(1)
print(json.dumps([0, ""]), flush=True)
for line in sys.stdin:
    report(line.strip())
"""


@contextmanager
def fresh_imports(path: str | None = None) -> Iterator[Callable[[str], tuple[int, str]]]:
    """``import_alone(module) -> (exit status, traceback)`` of importing ``module`` first thing in an
    isolated interpreter (``python -I -W error``, ``path`` first on its sys.path). As strict as one
    fresh interpreter per module, ~10x cheaper: one interpreter imports ``tinker_sync`` (what
    importing any ``tinker_sync.x`` runs first, to its end), then forks a child per module. A package
    that fails to import fails every module."""
    prelude = "" if path is None else f"import sys; sys.path.insert(0, {path!r})\n"
    zygote = subprocess.Popen(
        [sys.executable, "-I", "-W", "error", "-c", prelude + _ZYGOTE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=path,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    stdin, stdout = zygote.stdin, zygote.stdout
    package = tuple(json.loads(stdout.readline() or '[1, "the interpreter died importing tinker_sync"]'))

    def import_alone(module: str) -> tuple[int, str]:
        if module == "tinker_sync" or package[0] != 0:
            return package[0], package[1]
        stdin.write(module + "\n")
        stdin.flush()
        status, text = json.loads(stdout.readline())
        return status, text

    try:
        yield import_alone
    finally:
        stdin.close()
        stdout.close()
        assert zygote.wait(timeout=60) == 0
