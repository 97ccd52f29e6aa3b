"""The official SDK (``tinker`` 0.38.0) in a venv of its own, and subprocess runners for it.

Its dependencies never mix with ours: it lives in its own venv and runs only in
subprocesses. ``TINKER_SYNC_OFFICIAL_VENV`` names a prepared venv (``.ci/run`` builds
``.venv-official``); without it, the venv is built once into a cache directory shared by
checkouts (``$XDG_CACHE_HOME/tinker-sync/``), under a file lock, so the suite never skips it.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinker_sync.testing import MockTinkerServer

OFFICIAL_VERSION = "0.38.0"
DRIVER = Path(__file__).with_name("_official_driver.py")
CLI_DRIVER = Path(__file__).with_name("_official_cli_driver.py")


def _usable(venv: Path) -> bool:
    """Whether ``venv`` runs and has ``tinker`` 0.38.0 installed, by its metadata: importing it
    cost 0.5 CPU-s in every xdist worker, and pip records a package after its dependencies (an
    install cut short lacks it). A venv that holds it but cannot import it fails the first test
    that runs it, with the traceback."""
    python = venv / "bin" / "python"
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, sys; sys.stdout.write(m.version('tinker'))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return probe.returncode == 0 and probe.stdout == OFFICIAL_VERSION


@functools.cache
def official_venv() -> Path:
    """The venv holding ``tinker==0.38.0``: the env var's, else the cached one (built if missing).
    Checked once per process: every xdist worker's module fixtures and tests asked again."""
    given = os.environ.get("TINKER_SYNC_OFFICIAL_VENV")
    if given:
        venv = Path(given)
        if not _usable(venv):
            raise RuntimeError(f"TINKER_SYNC_OFFICIAL_VENV={given} holds no tinker {OFFICIAL_VERSION}")
        return venv
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinker-sync"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"venv-official-{OFFICIAL_VERSION}"
    with open(cache / f"venv-official-{OFFICIAL_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; xdist workers and other checkouts wait
        if not _usable(venv):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", f"tinker=={OFFICIAL_VERSION}"],
                check=True,
                timeout=900,
            )
            if not _usable(venv):
                raise RuntimeError(f"built {venv}, but it holds no tinker {OFFICIAL_VERSION}")
    return venv


def official_env(server: MockTinkerServer, home: Path, **extra: str) -> dict[str, str]:
    """The environment of an official-SDK subprocess: the mock's URL and key, a private HOME."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TINKER_", "CLOUDFLARE_")) and key not in ("HOME", "XDG_CONFIG_HOME")
    }
    env.update(
        HOME=str(home),
        TINKER_BASE_URL=server.url,
        TINKER_API_KEY=server.api_key,
        PYTHONDONTWRITEBYTECODE="1",
        NO_COLOR="1",
        COLUMNS="200",
        PYTHONFAULTHANDLER="1",  # names a native abort (see _exit_teardown_abort)
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def _exit_teardown_abort(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The official 0.38.0 process sometimes aborts in native code while the interpreter tears down,
    after its command finished (faulthandler: "Fatal Python error: Aborted" with no Python frame;
    2 of 240 CLI runs under load, never with our client). That run is taken as exit 0 only when it
    wrote its output and its stderr holds nothing but that report: a failure says so on stderr."""
    report = done.stderr.strip()
    if (
        done.returncode == -signal.SIGABRT
        and done.stdout.strip()
        and report.startswith("Fatal Python error: Aborted")
        and "<no Python frame>" in report
        and "Traceback" not in report
    ):
        return subprocess.CompletedProcess(done.args, 0, done.stdout, "")
    return done


def run_official(
    venv: Path, server: MockTinkerServer, home: Path, *args: str, stdin: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (a program of the official venv's ``bin``, then its arguments) in ``official_env``,
    with the teardown-abort rule of ``_exit_teardown_abort``: every official subprocess goes here."""
    done = subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        env=official_env(server, home, **extra),
        cwd=home,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return _exit_teardown_abort(done)


def run_json_driver(
    server: MockTinkerServer, home: Path, driver: Path
) -> tuple[Any, subprocess.CompletedProcess[str]]:
    """Run an official driver (``tests/_official_*_driver.py``: argv ``base_url api_key``, one JSON
    line last) against ``server`` in the official venv: that line, decoded, and the finished run."""
    done = run_official(
        official_venv(), server, home, "python", str(driver), server.url, server.api_key, TINKER_TELEMETRY="0"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done


def run_driver(
    venv: Path, server: MockTinkerServer, home: Path, scenario: str, *args: str, **extra: str
) -> dict[str, dict[str, Any]]:
    """Run one scenario of ``_official_driver.py``; its calls by name."""
    done = run_official(venv, server, home, "python", str(DRIVER), scenario, *args, **extra)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-4000:]
    return {call["name"]: call for call in json.loads(lines[-1])["calls"]}


def run_cli(
    venv: Path, server: MockTinkerServer, home: Path, *args: str, stdin: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the official ``tinker`` CLI with ``args``."""
    return run_official(venv, server, home, "tinker", *args, stdin=stdin, **extra)


@dataclass
class CliJob:
    """One official CLI command for ``run_cli_batch``: ``tinker ARGS`` against ``server`` with HOME
    and working directory ``home``, ``stdin`` on its stdin, ``extra`` added to ``official_env``."""

    server: MockTinkerServer
    home: Path
    args: list[str]
    stdin: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def run_cli_batch(venv: Path, jobs: list[CliJob]) -> list[subprocess.CompletedProcess[str]]:
    """Run each job's official CLI command in turn, all in ONE process of the official venv
    (``_official_cli_driver.py``: the ``tinker`` script's own ``main`` per command, each in its own
    environment), as ``run_cli`` would one process each; their outcomes in order."""
    payload = [
        {
            "args": job.args,
            "env": official_env(job.server, job.home, **job.extra),
            "cwd": str(job.home),
            "stdin": job.stdin,
        }
        for job in jobs
    ]
    done = _exit_teardown_abort(
        subprocess.run(
            [str(venv / "bin" / "python"), str(CLI_DRIVER)],
            env=payload[0]["env"],
            cwd=jobs[0].home,
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        subprocess.CompletedProcess(["tinker", *job.args], r["returncode"], r["stdout"], r["stderr"])
        for job, r in zip(jobs, results, strict=True)
    ]
