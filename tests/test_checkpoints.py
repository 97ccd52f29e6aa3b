"""client.checkpoints against the mock server: real sockets, real tar archives, real files.

Every test checks that no signed URL saw the API key (``server.violations``)
and, on failure, that nothing is left in the output directory: no target, no
temp directory, no lock.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _downloads import tree_mismatch
from test_extract import HOSTILE_EXPECTED  # the extractor's message for each hostile kind

import tinker_sync
from tinker_sync import (
    APIConnectionError,
    CheckpointNotReadyError,
    ConflictError,
    NotFoundError,
    UnsafeArchiveError,
)
from tinker_sync.resources.checkpoints import TinkerPath, parse_tinker_path
from tinker_sync.resources.types import Checkpoint, CheckpointList
from tinker_sync.testing import Fault
from tinker_sync.testing.archives import (
    HOSTILE_ARCHIVES,
    HOSTILE_MAX_MEMBERS,
    HOSTILE_MAX_TOTAL_SIZE,
)

MiB = 1 << 20
UMASK = os.umask(0o022)
os.umask(UMASK)
RUN = "run-1"
WEIGHTS = f"tinker://{RUN}/weights/final"


@pytest.fixture(autouse=True)
def no_credentials_on_signed_urls(tinker_server):
    yield
    assert tinker_server.violations == []


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def signed_requests(server) -> list:
    return [r for r in server.requests if r.path.startswith("/signed/")]


def archive_api_requests(server) -> list:
    return [r for r in server.requests if r.path.endswith("/archive") and r.path.startswith("/api/")]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self.messages: list[str] = []

    def progress(self, downloaded: int, total: int | None) -> None:
        self.calls.append((downloaded, total))

    def notify(self, message: str) -> None:
        self.messages.append(message)


def check_download(path: Path, out: Path, seed: int, size: int, n_files: int = 4) -> None:
    assert path == out / "run-1_weights_final"
    assert tree_mismatch(path, seed, size, n_files) is None  # archives.expected_files, byte for byte
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no temp dir, no lock
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~UMASK


# -- archive flow ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gz"])
def test_archive_flow(client, tinker_server, out: Path, compression: str | None) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=3 * MiB + 123, seed=7, compression=compression)
    rec = Recorder()
    path = client.checkpoints.download(WEIGHTS, out, progress=rec.progress)
    check_download(path, out, 7, 3 * MiB + 123)
    assert rec.calls[0][0] == 0
    archive_size = rec.calls[-1][1]
    assert rec.calls[-1] == (archive_size, archive_size)
    assert [d for d, _ in rec.calls] == sorted(d for d, _ in rec.calls)
    (signed,) = signed_requests(tinker_server)
    assert "x-api-key" not in signed.headers and "accept" not in signed.headers


# 512 MiB: 16 times the bound, so a body held in memory fails; past 2 GiB: test_download's flagship.
@pytest.mark.parametrize("size", [256 * MiB, 512 * MiB], ids=["256MiB", "512MiB"])
@pytest.mark.limit_memory("32 MB", current_thread_only=True)
@pytest.mark.slow
def test_archive_flow_large_in_constant_memory(client, tinker_server, out: Path, size: int) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=size, seed=11)
    path = client.checkpoints.download(WEIGHTS, out)
    check_download(path, out, 11, size)


def test_archive_resumes_after_a_reset(client, tinker_server, out: Path) -> None:
    size = 8 * MiB
    tinker_server.add_checkpoint(WEIGHTS, size=size, seed=2)
    tinker_server.script("/signed/", Fault(reset_after=3 * MiB + 17), Fault(reset_after=1 * MiB, rst=True))
    rec = Recorder()
    path = client.checkpoints.download(WEIGHTS, out, notify=rec.notify)
    check_download(path, out, 2, size)
    ranges = [r.headers.get("range") for r in signed_requests(tinker_server)]
    assert ranges[0] is None and ranges[1] == f"bytes={3 * MiB + 17}-" and ranges[2].startswith("bytes=")
    assert all(r.headers.get("if-range") for r in signed_requests(tinker_server)[1:])
    assert sum("resuming" in m for m in rec.messages) == 2
    assert len(archive_api_requests(tinker_server)) == 1


def test_archive_retry_budget_renews_with_progress(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=4 * MiB, seed=3)
    tinker_server.script("/signed/", *[Fault(reset_after=MiB)] * 3)  # each resume gets 1 MiB further
    path = client.with_options(max_retries=1).checkpoints.download(WEIGHTS, out)
    check_download(path, out, 3, 4 * MiB)
    assert len(signed_requests(tinker_server)) == 4


def test_archive_gives_up_when_the_retry_budget_is_spent(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=4 * MiB)
    tinker_server.script("/signed/", Fault(reset_after=MiB), *[Fault(reset_after=0)] * 5)
    with pytest.raises(APIConnectionError):
        client.with_options(max_retries=2).checkpoints.download(WEIGHTS, out)
    assert len(signed_requests(tinker_server)) == 3
    assert list(out.iterdir()) == []


def test_archive_refused_signed_url_is_re_signed_and_resumed(client, tinker_server, out: Path) -> None:
    size = 4 * MiB
    tinker_server.add_checkpoint(WEIGHTS, size=size, seed=5)
    tinker_server.script("/signed/", Fault(reset_after=MiB), Fault(status=403))
    rec = Recorder()
    path = client.checkpoints.download(WEIGHTS, out, notify=rec.notify)
    check_download(path, out, 5, size)
    signed = signed_requests(tinker_server)
    assert len(archive_api_requests(tinker_server)) == 2
    assert [r.headers.get("range") for r in signed] == [None, f"bytes={MiB}-", f"bytes={MiB}-"]
    assert signed[1].query["sig"] == signed[0].query["sig"]  # the same URL (then signed again)
    assert any("signing it again" in m for m in rec.messages)


def test_archive_expired_signed_url_mid_download(client, tinker_server, out: Path) -> None:
    size = 4 * MiB
    tinker_server.add_checkpoint(WEIGHTS, size=size, seed=6)
    tinker_server.signed_url_ttl = 1.0
    tinker_server.script(
        "/signed/", Fault(stall_after=MiB, stall=2.5)
    )  # past expiry, and past the read timeout
    path = client.with_options(timeout=0.5).checkpoints.download(WEIGHTS, out)
    check_download(path, out, 6, size)
    signed = signed_requests(tinker_server)
    assert len(archive_api_requests(tinker_server)) >= 2
    assert signed[-1].headers["range"] == f"bytes={MiB}-"
    assert signed[-1].query["sig"] != signed[0].query["sig"]


@pytest.mark.parametrize("status", [503, 409])
def test_slow_archive_preparation_waits(client, tinker_server, out: Path, status: int) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB, seed=1, prepare_seconds=1.5, prepare_status=status)
    rec = Recorder()
    path = client.checkpoints.download(WEIGHTS, out, notify=rec.notify, prepare_timeout=30)
    check_download(path, out, 1, MiB)
    assert len(archive_api_requests(tinker_server)) >= 2
    assert sum("preparing" in m for m in rec.messages) == 1  # told once


def test_slow_archive_headers_wait(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB, seed=1)
    tinker_server.script(
        f"/api/v1/training_runs/{RUN}/checkpoints/weights/final/archive", Fault(delay_headers=1.2)
    )
    path = client.with_options(timeout=0.3).checkpoints.download(WEIGHTS, out, prepare_timeout=10)
    check_download(path, out, 1, MiB)


def test_archive_preparation_deadline(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB, prepare_seconds=60)
    start = time.monotonic()
    with pytest.raises(CheckpointNotReadyError, match="not ready after 1.5 s"):
        client.checkpoints.download(WEIGHTS, out, prepare_timeout=1.5)
    assert time.monotonic() - start < 5
    assert list(out.iterdir()) == []
    assert isinstance(CheckpointNotReadyError("x"), tinker_sync.APIError)


def test_archive_headers_never_come(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB)
    tinker_server.script(
        f"/api/v1/training_runs/{RUN}/checkpoints/weights/final/archive", Fault(delay_headers=5)
    )
    with pytest.raises(CheckpointNotReadyError, match="no answer"):
        client.checkpoints.download(WEIGHTS, out, prepare_timeout=1.0)
    assert list(out.iterdir()) == []


# -- hostile archives -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HOSTILE_EXPECTED))
def test_hostile_archive_is_refused(client, tinker_server, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tinker_server.add_hostile_archive(WEIGHTS, kind)
    with pytest.raises(UnsafeArchiveError) as info:
        client.checkpoints.download(
            WEIGHTS, out, max_members=HOSTILE_MAX_MEMBERS, max_total_size=HOSTILE_MAX_TOTAL_SIZE
        )
    assert HOSTILE_EXPECTED[kind][0] in str(info.value)
    assert list(out.iterdir()) == []  # no target, no temp dir, no lock
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing written beside it


def test_hostile_gzip_bomb_refused_by_the_known_size(client, tinker_server, out: Path) -> None:
    tinker_server.add_hostile_archive(WEIGHTS, "gzip_bomb")
    # the mock knows a hostile archive's size_bytes once it is prepared: ~32 KiB here
    with pytest.raises(UnsafeArchiveError, match="over max_total_size"):
        client.checkpoints.download(WEIGHTS, out)
    assert list(out.iterdir()) == []


def test_setuid_mode_is_extracted_plain(client, tinker_server, out: Path) -> None:
    tinker_server.add_hostile_archive(WEIGHTS, "setuid_mode")
    path = client.checkpoints.download(WEIGHTS, out)
    assert stat.S_IMODE((path / "setuid").stat().st_mode) == 0o644 & ~UMASK


def test_every_hostile_kind_is_covered() -> None:
    assert set(HOSTILE_ARCHIVES) == set(HOSTILE_EXPECTED) | {"setuid_mode"}


# -- target, force, lock --------------------------------------------------------------------------


def test_existing_target_needs_force(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB, seed=1)
    path = client.checkpoints.download(WEIGHTS, out)
    (path / "marker").write_text("old")
    tinker_server.clear()
    with pytest.raises(FileExistsError, match="force"):
        client.checkpoints.download(WEIGHTS, out)
    assert tinker_server.requests == []  # refused before any request
    assert client.checkpoints.download(WEIGHTS, out, force=True) == path
    check_download(path, out, 1, MiB)


def test_force_keeps_the_old_target_when_the_new_download_fails(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB, seed=1)
    path = client.checkpoints.download(WEIGHTS, out)
    tinker_server.script("/signed/", *[Fault(status=500)] * 20)
    with pytest.raises(tinker_sync.InternalServerError):
        client.with_options(max_retries=1).checkpoints.download(WEIGHTS, out, force=True)
    check_download(path, out, 1, MiB)


def test_unknown_checkpoint(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB)
    with pytest.raises(NotFoundError):
        client.checkpoints.download(f"tinker://{RUN}/weights/missing", out)
    assert list(out.iterdir()) == []


def test_live_lock_blocks_a_second_run(client, tinker_server, out: Path, monkeypatch) -> None:
    from tinker_sync import _files

    monkeypatch.setattr(_files, "LOCK_WAIT", 0.3)
    tinker_server.add_checkpoint(WEIGHTS, size=MiB)
    out.mkdir()
    lock = out / "run-1_weights_final.lock"
    with _files.target_lock(lock):  # another run (flock: per open file, so in-process works)
        with pytest.raises(tinker_sync.DownloadLockedError, match="held by another download"):
            client.checkpoints.download(WEIGHTS, out)
        assert [p.name for p in out.iterdir()] == [lock.name]
    assert list(out.iterdir()) == []


def test_stale_lock_and_leftovers_of_a_killed_run_are_reclaimed(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB, seed=1)
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "run-1_weights_final.lock").write_text(f"pid {dead.pid}@{socket.gethostname()}")
    leftover = out / ".run-1_weights_final.tmp-killed"
    (leftover / "weights").mkdir(parents=True)
    (leftover / "weights" / "half").write_bytes(b"x" * 100)
    path = client.checkpoints.download(WEIGHTS, out)
    check_download(path, out, 1, MiB)


# -- external weights -----------------------------------------------------------------------------

EXTERNAL = f"tinker://{RUN}/external_weights/ext"


def check_external(path: Path, out: Path, seed: int, size: int, n_files: int = 4) -> None:
    assert path == out / "run-1_external_weights_ext"
    assert tree_mismatch(path, seed, size, n_files) is None  # archives.expected_files, byte for byte
    assert sorted(p.name for p in out.iterdir()) == [path.name]


def test_external_weights_flow(client, tinker_server, out: Path) -> None:
    tinker_server.signed_checksums = ("sha256",)
    tinker_server.add_checkpoint(EXTERNAL, size=3 * MiB + 5, seed=4, n_files=6)
    rec = Recorder()
    path = client.checkpoints.download(EXTERNAL, out, progress=rec.progress)
    check_external(path, out, 4, 3 * MiB + 5, 6)
    files = [r.path for r in signed_requests(tinker_server)]
    assert files == sorted(files) and len(files) == 6  # sorted order, one GET each
    assert all("x-api-key" not in r.headers for r in signed_requests(tinker_server))
    assert rec.calls[0] == (0, 3 * MiB + 5) and rec.calls[-1] == (3 * MiB + 5, 3 * MiB + 5)
    assert [d for d, _ in rec.calls] == sorted(d for d, _ in rec.calls)


@pytest.mark.parametrize("size", [256 * MiB, 512 * MiB], ids=["256MiB", "512MiB"])
@pytest.mark.limit_memory("32 MB", current_thread_only=True)
@pytest.mark.slow
def test_external_weights_large_in_constant_memory(client, tinker_server, out: Path, size: int) -> None:
    tinker_server.add_checkpoint(EXTERNAL, size=size, seed=12)
    path = client.checkpoints.download(EXTERNAL, out)
    check_external(path, out, 12, size)


def test_external_weights_resume_within_the_call(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(EXTERNAL, size=6 * MiB, seed=8)
    tinker_server.script("/signed/", Fault(reset_after=100), Fault(), Fault(reset_after=2 * MiB))
    path = client.checkpoints.download(EXTERNAL, out)
    check_external(path, out, 8, 6 * MiB)
    assert [r.headers.get("range") for r in signed_requests(tinker_server)].count(None) == 4


def test_external_weights_resign_near_expiry(client, tinker_server, out: Path) -> None:
    tinker_server.signed_url_ttl = 200  # inside the 5-minute margin: fetched again before each file
    tinker_server.add_checkpoint(EXTERNAL, size=MiB, seed=9, n_files=3)
    rec = Recorder()
    path = client.checkpoints.download(EXTERNAL, out, notify=rec.notify)
    check_external(path, out, 9, MiB, 3)
    listings = [r for r in tinker_server.requests if r.path.endswith("/external_weights_urls")]
    assert len(listings) == 4 and sum("expire soon" in m for m in rec.messages) == 3


def test_external_weights_refused_url_is_re_signed(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(EXTERNAL, size=MiB, seed=9, n_files=3)
    tinker_server.script("/signed/", Fault(status=403))
    path = client.checkpoints.download(EXTERNAL, out)
    check_external(path, out, 9, MiB, 3)
    listings = [r for r in tinker_server.requests if r.path.endswith("/external_weights_urls")]
    assert len(listings) == 2


def test_external_weights_rerun_resumes_after_a_connection_failure(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(EXTERNAL, size=4 * MiB, seed=10, n_files=2)
    tinker_server.script("/signed/", Fault(), Fault(reset_after=MiB))  # the big file breaks
    with pytest.raises(APIConnectionError):
        client.with_options(max_retries=0).checkpoints.download(EXTERNAL, out)
    first_sig = signed_requests(tinker_server)[-1].query["sig"]
    partial = out / ".run-1_external_weights_ext.partial"
    assert sorted(p.name for p in out.iterdir()) == [partial.name]  # kept for the re-run; no target
    assert stat.S_IMODE(partial.stat().st_mode) == 0o700
    tinker_server.clear()
    path = client.checkpoints.download(EXTERNAL, out)
    check_external(path, out, 10, 4 * MiB, 2)
    requests = signed_requests(tinker_server)
    assert [r.headers.get("range") for r in requests] == [
        f"bytes={MiB}-"
    ]  # the small file kept, the big resumed
    assert requests[0].query["sig"] != first_sig  # under a newly signed URL, pinned by If-Range


def test_external_weights_other_failure_removes_everything(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(EXTERNAL, size=MiB, n_files=3)
    tinker_server.script("/signed/", Fault(), Fault(status=404))
    with pytest.raises(NotFoundError):
        client.checkpoints.download(EXTERNAL, out)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "rel", ["/etc/x", "../x", "a/../../x", "", "a\x00b", "a\\..\\b", "a//b", "./a", "C:x"]
)
def test_external_weights_unsafe_relative_paths(
    client, tinker_server, out: Path, monkeypatch, rel: str
) -> None:
    from tinker_sync.testing import archives

    tinker_server.add_checkpoint(EXTERNAL, size=MiB)
    real = archives.checkpoint_files
    monkeypatch.setattr(archives, "checkpoint_files", lambda *a: [(rel, 10, 1), *real(*a)])
    with pytest.raises(UnsafeArchiveError, match="refusing external weights path"):
        client.checkpoints.download(EXTERNAL, out)
    assert list(out.iterdir()) == []
    assert signed_requests(tinker_server) == []


# -- paths ----------------------------------------------------------------------------------------

BAD_PATHS = [
    "",
    "run/weights/final",
    "http://run/weights/final",
    "tinker://",
    "tinker://run",
    "tinker://run/weights",
    "tinker://run/weights/",
    "tinker:///weights/final",
    "tinker://run/weights/a/b",
    "tinker://run/optimizer/final",
    "tinker://run/weights/..",
    "tinker://../weights/x",
    "tinker://run/weights/a\\b",
    "tinker://run/weights/a\x00b",
    "tinker://run/weights/a\rb",
    "tinker://run/weights/a\nb",
    "tinker://run\r\nX-Injected: 1/weights/final",
    "tinker://run/weights/final\x7f",
]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_bad_tinker_paths(client, tinker_server, out: Path, bad: str) -> None:
    with pytest.raises(tinker_sync.InvalidRequestError):  # a ValueError too, as before
        client.checkpoints.download(bad, out)
    assert tinker_server.requests == []
    assert not out.exists() or list(out.iterdir()) == []


def test_sampler_weights_cannot_be_downloaded(client, tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(f"tinker://{RUN}/sampler_weights/s1", size=MiB)
    with pytest.raises(ValueError, match=f"cannot be downloaded.*tinker://{RUN}/weights/s1"):
        client.checkpoints.download(f"tinker://{RUN}/sampler_weights/s1", out)
    assert tinker_server.requests == []


def test_parse_tinker_path() -> None:
    path = parse_tinker_path("tinker://run-1/external_weights/step 10")
    assert path == TinkerPath("run-1", "external_weights", "step 10")
    assert path.dir_name == "run-1_external_weights_step 10"
    assert path.checkpoint_id == "external_weights/step 10"
    assert path.api_path == "/api/v1/training_runs/run-1/checkpoints/external_weights/step%2010"
    assert str(path) == "tinker://run-1/external_weights/step 10"


# -- listing and management -----------------------------------------------------------------------


def test_list_get_publish_ttl_delete(client, tinker_server) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB)
    tinker_server.add_checkpoint(f"tinker://{RUN}/sampler_weights/s1", size=2 * MiB)
    tinker_server.add_checkpoint("tinker://run-2/weights/w", size=3 * MiB)
    listing = client.checkpoints.list()
    assert isinstance(listing, CheckpointList) and listing.cursor.total_count == 3
    assert [c.tinker_path for c in listing.checkpoints][0] == "tinker://run-2/weights/w"  # newest first
    assert len(client.checkpoints.list(limit=1).checkpoints) == 1
    assert {c.checkpoint_id for c in client.checkpoints.list(RUN).checkpoints} == {
        "weights/final",
        "sampler_weights/s1",
    }
    checkpoint = client.checkpoints.get(WEIGHTS)
    assert isinstance(checkpoint, Checkpoint) and checkpoint.size_bytes == MiB and not checkpoint.public
    client.checkpoints.publish(WEIGHTS)
    assert client.checkpoints.get(WEIGHTS).public
    with pytest.raises(ConflictError):
        client.with_options(max_retries=0).checkpoints.publish(WEIGHTS)
    client.checkpoints.unpublish(WEIGHTS)
    assert not client.checkpoints.get(WEIGHTS).public
    client.checkpoints.set_ttl(WEIGHTS, 3600)
    assert client.checkpoints.get(WEIGHTS).expires_at is not None
    client.checkpoints.set_ttl(WEIGHTS, None)
    assert client.checkpoints.get(WEIGHTS).expires_at is None
    client.checkpoints.delete(WEIGHTS)
    with pytest.raises(LookupError):
        client.checkpoints.get(WEIGHTS)


# -- a checkpoint that is no checkpoint fails loudly, before its target exists --------------------


@pytest.mark.parametrize("flow", ["weights", "external_weights"])
def test_content_short_of_the_listed_size_fails(client, tinker_server, out: Path, flow: str) -> None:
    path = f"tinker://{RUN}/{flow}/short"
    tinker_server.add_checkpoint(path, size=MiB, seed=2, size_bytes=2 * MiB)  # half of it is missing
    with pytest.raises(UnsafeArchiveError, match="smaller than its listing says"):
        client.checkpoints.download(path, out)
    assert list(out.iterdir()) == []  # no target, no temp dir, no lock


@pytest.mark.limit_memory("64 MB", current_thread_only=True)
@pytest.mark.slow
def test_a_million_member_archive_is_refused_with_the_default_limits(
    client, tinker_server, out: Path
) -> None:
    tinker_server.add_hostile_archive(WEIGHTS, "million_members")
    with pytest.raises(UnsafeArchiveError, match="more than 10000 members"):
        client.checkpoints.download(WEIGHTS, out)
    assert list(out.iterdir()) == []


def test_archive_limits_are_client_options(tinker_server, out: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=MiB, seed=3, n_files=6)
    strict = tinker_sync.ArchiveLimits(max_members=4)
    with tinker_sync.Client(api_key="tml-test-key", base_url=tinker_server.url, archive_limits=strict) as c:
        with pytest.raises(UnsafeArchiveError, match="more than 4 members"):
            c.checkpoints.download(WEIGHTS, out)
        assert list(out.iterdir()) == []
        path = c.checkpoints.download(WEIGHTS, out, max_members=50)  # a call may allow more
    check_download(path, out, 3, MiB, n_files=6)
    tight = tinker_sync.ArchiveLimits(max_total_size=1000)
    with tinker_sync.Client(api_key="tml-test-key", base_url=tinker_server.url, archive_limits=tight) as c:
        with pytest.raises(UnsafeArchiveError, match="over max_total_size=1000"):
            c.checkpoints.download(WEIGHTS, out, force=True)
