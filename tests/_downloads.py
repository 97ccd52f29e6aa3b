"""What tests of downloads check files with: expected and actual SHA-256, and leftovers."""

from __future__ import annotations

import functools
import hashlib
import os

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
