"""Read buffers under one process-wide budget, and what many downloads at once cost in memory."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import pytest
from _helpers import demo_server_process

import tinker_sync
import tinker_sync._buffers as buffers
from tinker_sync.testing._data import sha256_of

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture
def budget(monkeypatch) -> int:
    """A small budget (1 MiB), and no other body counted while the test runs."""
    monkeypatch.setattr(buffers, "BUDGET", MiB)
    monkeypatch.setattr(buffers, "_active", 0)
    monkeypatch.setattr(buffers, "_held", 0)
    return MiB


def test_a_lone_body_grows_to_its_limit_by_doubling_and_gives_everything_back(budget):
    buffer = buffers.ReadBuffer()
    sizes = [len(buffer.view)]
    for _ in range(6):
        sizes.append(len(buffer.next(len(buffer.view))))  # every read fills the buffer
    assert sizes == [16 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, 256 * KiB, 256 * KiB, 256 * KiB]
    assert len(buffer.next(100)) == 256 * KiB  # a short read keeps it
    buffer.close()
    buffer.close()
    assert (buffers._held, buffers._active) == (0, 0)


def test_buffers_never_hold_more_than_the_budget_and_share_it_out(budget):
    first = [buffers.ReadBuffer() for _ in range(4)]  # alone enough to take 256 KiB each
    for buffer in first:
        while len(buffer.next(len(buffer.view))) < 256 * KiB:
            pass
    assert buffers._held == 4 * (256 - 16) * KiB <= budget
    late = [buffers.ReadBuffer() for _ in range(12)]  # 16 bodies now: a 64 KiB share each
    assert len(late[0].next(16 * KiB)) == 32 * KiB  # what the budget has left
    for buffer in first:
        assert len(buffer.next(100)) == 64 * KiB  # above its share: gives the excess back at once
    for buffer in late:
        for _ in range(4):
            buffer.next(len(buffer.view))
    assert {len(b.view) for b in first + late} == {64 * KiB}
    assert buffers._held <= budget
    for buffer in first + late:
        buffer.close()
    assert (buffers._held, buffers._active) == (0, 0)


# -- many downloads at once, measured -------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The mock server in its own process: its own allocations stay out of the measured ones."""
    with demo_server_process("--port", "0", "--empty") as served:
        yield served.url


DOWNLOADS = 32
SIZE = MiB


def run_at_once(url: str, tmp_path, how: str) -> list[str]:
    """DOWNLOADS threads sharing one client, each with its response open before any body is read."""
    opened = threading.Barrier(DOWNLOADS)
    digests: list[str] = []
    errors: list[BaseException] = []
    with tinker_sync.Client(api_key="tml-test-key", base_url=url, pool_maxsize=DOWNLOADS) as client:

        def one(i: int) -> None:
            try:
                with client.stream("GET", f"/test/bytes?size={SIZE}&seed=3") as response:
                    opened.wait()
                    if how == "stream_to_file":  # hashed once all are done (file_digest's buffer
                        response.stream_to_file(tmp_path / f"f{i}")  # is 256 KiB a thread: not ours)
                    else:
                        digest = hashlib.sha256()
                        for chunk in response.iter_bytes():
                            digest.update(chunk)
                        digests.append(digest.hexdigest())
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                opened.abort()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(DOWNLOADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    if how == "stream_to_file":
        for i in range(DOWNLOADS):
            with open(tmp_path / f"f{i}", "rb") as f:
                digests.append(hashlib.file_digest(f, "sha256").hexdigest())
    return digests


# 32 downloads under a 2 MiB budget (so 64 KiB buffers each, as 1,000 get under the real one): each
# may cost 256 KiB in all (its buffer, its connection, its thread's objects, a chunk in hand).
@pytest.mark.parametrize("how", ["stream_to_file", "iter_bytes"])
@pytest.mark.limit_memory(f"{DOWNLOADS * 256 // 1024} MB")
def test_many_downloads_at_once_cost_a_bounded_amount_each(server_url, tmp_path, monkeypatch, how):
    monkeypatch.setattr(buffers, "BUDGET", 2 * MiB)
    digests = run_at_once(server_url, tmp_path, how)
    assert digests == [sha256_of(3, SIZE)] * DOWNLOADS


# One large file over 8 connections: a 256 KiB buffer per connection and 1 MiB to hash, whatever the size.
@pytest.mark.limit_memory("8 MB")
def test_one_file_over_many_connections_in_constant_memory(server_url, tmp_path):
    size = 256 * MiB
    with tinker_sync.Client(api_key="tml-test-key", base_url=server_url) as client:
        path = client.download(
            f"/test/bytes?size={size}&seed=5",
            tmp_path / "big.bin",
            connections=8,
            expected_sha256=sha256_of(5, size),
        )
    assert path.stat().st_size == size
    path.unlink()
