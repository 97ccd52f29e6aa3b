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
from tinker_sync.testing._data import generate, sha256_of
from tinker_sync.testing.archives import checkpoint_files


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


class SameBody:
    """Checks bytes, fed in pieces of any size, against the mock server's body for ``seed`` and
    ``size``, byte for byte: as strict as comparing SHA-256s, without hashing GiBs twice.

    ``update`` takes each piece; ``mismatch()`` is None for the whole body exactly, else what
    differs (the first differing offset, or a short or long body)."""

    def __init__(self, seed: int, size: int) -> None:
        self.size = size
        self.seen = 0
        self._blocks = generate(seed, size)
        self._pending = memoryview(b"")
        self._differs_at: int | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view and self._differs_at is None:
            if not self._pending:
                block = next(self._blocks, None)
                if block is None:
                    self._differs_at = self.seen  # more bytes than the body has
                    return
                self._pending = memoryview(block)
            n = min(len(view), len(self._pending))
            got, want = bytes(view[:n]), bytes(self._pending[:n])  # memcmp (memoryview's == is slow)
            if got != want:
                self._differs_at = self.seen + next(i for i in range(n) if got[i] != want[i])
                return
            self.seen += n
            view, self._pending = view[n:], self._pending[n:]

    def mismatch(self) -> str | None:
        if self._differs_at is not None:
            return f"differs from the body at offset {self._differs_at} (size {self.size})"
        if self.seen != self.size:
            return f"{self.seen} bytes of a {self.size}-byte body"
        return None


def file_mismatch(path: str | os.PathLike[str], seed: int, size: int) -> str | None:
    """None when the file at ``path`` is exactly the mock server's body for ``seed`` and ``size``
    (read in 1 MiB pieces: GiB files too), else what differs."""
    check = SameBody(seed, size)
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            check.update(data)
    return check.mismatch()


def tree_mismatch(root: Path, seed: int, size: int, n_files: int = 4) -> str | None:
    """None when ``root`` holds exactly the files of the mock checkpoint ``(seed, size, n_files)``,
    each byte for byte (``archives.expected_files`` by content, not by SHA-256), else what differs."""
    members = {name: (msize, mseed) for name, msize, mseed in checkpoint_files(seed, size, n_files)}
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if found != sorted(members):
        return f"files {found}, expected {sorted(members)}"
    for name, (msize, mseed) in members.items():
        if problem := file_mismatch(root / name, mseed, msize):
            return f"{name}: {problem}"
    return None


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
