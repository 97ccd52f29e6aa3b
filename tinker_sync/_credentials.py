"""Stored and computed credentials: the credentials file and the credential command.

Rules:
1. The file (``~/.tinker/credentials.json``, the official SDK's format: ``{"version": 1,
   "default": ID, "keys": {ID: {"type", "key", "name", ...}}}``) is written atomically
   (temporary file, fsync, rename), mode 0600 in a 0700 directory; a file that others
   can read or write is refused, naming the ``chmod`` that fixes it.
2. The credential command runs through the shell with a timeout, its output
   never echoed: a failure says how it failed (exit status, timeout, empty
   output), not what it printed, since that may be half a secret.
3. Nothing here reads the environment (``_config`` says which source is used).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ._exceptions import TinkerError

__all__ = [
    "CREDENTIAL_CMD_TIMEOUT",
    "default_credentials_path",
    "load_credentials",
    "read_default_key",
    "run_credential_command",
    "save_credentials",
]

CREDENTIAL_CMD_TIMEOUT = 30.0  # seconds a credential command may take (it may call a secrets service)


def default_credentials_path() -> Path:
    """``~/.tinker/credentials.json``, where ``auth login`` stores keys (the official SDK's file)."""
    return Path("~/.tinker/credentials.json").expanduser()


def load_credentials(path: Path) -> dict[str, Any]:
    """The credentials file's content (``{"version": 1, "keys": {}}`` when there is none).

    Raises:
        TinkerError: the file can be read or written by others, or is not the expected JSON.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return {"version": 1, "default": None, "keys": {}}
    except OSError as error:
        raise TinkerError(f"Cannot read the credentials file {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise TinkerError(
                f"Refusing the credentials file {path}: others can access it (mode {mode:04o}); "
                f"run `chmod 600 {path}` if it is yours"
            )
        raw = f.read()
    try:
        data = json.loads(raw)
    except ValueError:
        raise TinkerError(f"The credentials file {path} is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys", {}), dict):
        raise TinkerError(f"The credentials file {path} does not hold a 'keys' object")
    data.setdefault("version", 1)
    data.setdefault("default", None)
    data.setdefault("keys", {})
    return data


def read_default_key(path: Path) -> str | None:
    """The key of the file's default record, or None (no file, no default)."""
    data = load_credentials(path)
    record = data["keys"].get(data["default"]) if data["default"] is not None else None
    if not isinstance(record, dict):
        return None
    key = record.get("key")
    if not isinstance(key, str) or not key:
        raise TinkerError(f"The default credential in {path} has no key")
    return key


def save_credentials(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically: mode 0600, in a directory of mode 0700."""
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # mkdir's mode is masked by the umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_credential_command(command: str, timeout: float = CREDENTIAL_CMD_TIMEOUT) -> str:
    """Run ``TINKER_CREDENTIAL_CMD`` and return the credential it prints (stripped).

    Raises:
        TinkerError: it failed, timed out or printed nothing; the message never holds its output.
    """
    try:
        done = subprocess.run(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TinkerError(f"TINKER_CREDENTIAL_CMD did not finish within {timeout:g} s") from None
    except OSError as error:
        raise TinkerError(f"TINKER_CREDENTIAL_CMD could not be run: {error.strerror}") from None
    if done.returncode != 0:
        raise TinkerError(
            f"TINKER_CREDENTIAL_CMD failed with exit status {done.returncode} "
            f"(its output is not shown: it may hold a secret)"
        )
    credential = done.stdout.decode("utf-8", "replace").strip()
    if not credential:
        raise TinkerError("TINKER_CREDENTIAL_CMD printed an empty credential")
    return credential
