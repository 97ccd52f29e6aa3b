"""What tests of downloads check files with: expected and actual SHA-256, and leftovers."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import HasURL, cli_env

from tinker_sync import _files as files
from tinker_sync.testing._data import sha256_of


@functools.cache
def expected_sha(seed: int, size: int) -> str:
    """The SHA-256 of the mock server's body for ``seed`` and ``size`` (cached: large ones cost)."""
    return sha256_of(seed, size)


def file_sha(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in 4 MiB pieces (files of GiBs too)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(4 << 20):
            h.update(data)
    return h.hexdigest()


def leftovers(dest: str | os.PathLike[str]) -> list[str]:
    """Files next to ``dest`` that a finished or failed download must not leave behind."""
    return [
        s
        for s in (files.PART_SUFFIX, files.SIDECAR_SUFFIX, files.LOCK_SUFFIX)
        if os.path.exists(f"{dest}{s}")
    ]


def kill_9_mid_download(
    server: HasURL, url: str, dest: Path, *, killed_after: int = 2 << 20
) -> list[tuple[int, int]]:
    """Run ``tinker-sync download URL -o DEST --connections 4`` (capped at 2 MB/s) in a subprocess,
    SIGKILL it once its sidecar lists ``killed_after`` bytes, and return the ranges it lists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync", "download", f"{url}&rate=2000000", "-o", str(dest)]
        + ["--connections", "4"],
        env=cli_env(server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sidecar = Path(f"{dest}.part.json")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                saved = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                saved = {}
            if sum(b - a for a, b in saved.get("ranges", [])) >= killed_after:
                break
            assert proc.poll() is None, "the download ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail(f"the sidecar never listed {killed_after} bytes")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return [(a, b) for a, b in json.loads(sidecar.read_text())["ranges"]]
