"""Deterministic byte bodies of any size, generated on the fly from a seed.

Rule: the byte at offset N depends only on (seed, N), so a server can serve
any range and a test can check a SHA-256 without storing the data. Each
1 MiB block is one random base block with its own index in its first 8
bytes: fast (a memcpy per block) and no two blocks are equal, so a resume
spliced at a wrong offset is caught.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator

BLOCK_SIZE = 1 << 20


@functools.lru_cache(maxsize=8)
def _base_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK_SIZE)


def _block(seed: int, index: int) -> bytes:
    return index.to_bytes(8, "big") + _base_block(seed)[8:]


def generate(seed: int, size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of the body of ``size`` bytes made from ``seed``, in blocks."""
    end = size if end is None else min(end, size)
    pos = start
    while pos < end:
        index, offset = divmod(pos, BLOCK_SIZE)
        block = _block(seed, index)
        stop = min(BLOCK_SIZE, offset + (end - pos))
        yield block[offset:stop] if (offset or stop != BLOCK_SIZE) else block
        pos += stop - offset


def sha256_of(seed: int, size: int) -> str:
    """Hex SHA-256 of the whole body made from ``seed``."""
    digest = hashlib.sha256()
    for chunk in generate(seed, size):
        digest.update(chunk)
    return digest.hexdigest()
