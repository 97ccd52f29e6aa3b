"""What every bench script shares: where things are, the server and client processes, tables.

``run.py`` (the scenarios) and ``check.py`` (``--check``) both import it; it imports neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_env(client: str = "", root: Path = REPO) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    env.pop("TINKER_SYNC_NO_EXTENSIONS", None)
    if client.endswith("-pure") or client.endswith("(pure)"):
        env["TINKER_SYNC_NO_EXTENSIONS"] = "1"
    return env


# -- processes -----------------------------------------------------------------


class Server:
    """``bench/server.py`` (or the mock server) in its own process, stopped by pid.

    With ``ca_file`` the bench server serves HTTPS and writes its CA certificate there.
    """

    def __init__(self, mock: bool = False, ca_file: str | None = None) -> None:
        if mock:
            cmd = [PY, "-m", "tinker_sync.testing", "--port", "0"]
        else:
            cmd = [PY, str(BENCH / "server.py"), "--port", "0"] + (["--tls", ca_file] if ca_file else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.api_key = ""
        if mock:  # "Mock Tinker server at http://127.0.0.1:PORT (api key ...)"
            self.url = line.split(" at ", 1)[1].split()[0]
            self.api_key = line.rsplit("api key ", 1)[1].rstrip(")\n ")
        else:
            self.url = f"{'https' if ca_file else 'http'}://127.0.0.1:{int(line.split()[1])}"
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Before:
    """An older checkout measured in the same run: its own source tree and venv (``--before DIR``)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).resolve()
        self.python = str(self.root / ".venv" / "bin" / "python")
        self.commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=self.root
        ).stdout.strip()
        self.name = f"tinker_sync@{self.commit}"


def run_client(
    spec: dict[str, Any],
    timeout: float = 300,
    before: Before | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One measurement in a fresh ``bench/clients.py`` process; {"error": ...} if it failed.

    A client named ``tinker_sync@COMMIT ...`` runs with ``before``'s interpreter and source tree.
    """
    python, root = PY, REPO
    if before is not None and spec.get("client", "").startswith(before.name):
        python, root = before.python, before.root
    proc = subprocess.run(
        [python, str(BENCH / "clients.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**child_env(spec.get("client", ""), root), **(env or {})},
        cwd=root,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"error": tail[:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
