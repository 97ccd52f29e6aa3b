"""Downloads against the loopback mock server: atomic, verified, resumed, locked, constant memory."""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from _downloads import SameBody, expected_sha, file_mismatch, file_sha, leftovers
from _helpers import cli_env

import tinker_sync
import tinker_sync._checksums as checksums
import tinker_sync._files as files
import tinker_sync._receiver as receiver
from tinker_sync._base_client import check_redirect
from tinker_sync._continuation import continuation_problem
from tinker_sync.testing import Fault

API_KEY = "tml-test-key"  # as in conftest.py

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture(autouse=True)
def _no_backoff(waits):
    """Downloads here record their waits instead of sleeping (the ``client`` fixture reads ``waits``)."""


def bytes_requests(server):
    return [r for r in server.requests if r.path == "/test/bytes"]


# -- the happy path ----------------------------------------------------------------------------------


def test_download_writes_verified_file_and_cleans_up(client, tinker_server, tmp_path):
    dest = tmp_path / "out.bin"
    size = 3 * MiB + 17
    calls = []
    result = client.download(
        f"/test/bytes?size={size}&seed=5", dest, progress=lambda d, t: calls.append((d, t))
    )
    assert result == dest and isinstance(result, type(dest))
    assert file_sha(dest) == expected_sha(5, size)
    assert leftovers(dest) == []
    (request,) = bytes_requests(tinker_server)
    assert request.headers["accept-encoding"] == "identity"
    assert "range" not in request.headers
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False))


def test_progress_is_rate_limited(client, tmp_path, monkeypatch):
    monkeypatch.setattr(receiver, "PROGRESS_INTERVAL", 3600)
    size = 64 * MiB
    calls = []
    with client.stream("GET", f"/test/bytes?size={size}&seed=1&trickle=16384") as response:
        n = response.stream_to_file(tmp_path / "f", progress=lambda d, t: calls.append(d), connections=1)
    assert n == size
    # 16 KiB writes would be 4096 chunks; 1% steps give about 100 calls.
    assert 50 <= len(calls) <= 110
    assert calls[-1] == size


@pytest.mark.parametrize("checksum", ["md5", "sha256", "etag-md5", "md5,sha256", "crc32c"])
def test_server_checksums_verified(client, tinker_server, tmp_path, checksum):
    dest = tmp_path / "out.bin"
    size = 2 * MiB + 3
    client.download(f"/test/bytes?size={size}&seed=2&checksum={checksum}", dest)
    assert file_sha(dest) == expected_sha(2, size)
    assert leftovers(dest) == []


def test_checksum_parsing():
    headers = {
        "x-goog-hash": "crc32c=n03x6A==, md5=Ojk9c3dhfxgoKVVHYwFbHQ==",
        "content-digest": "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:",
        "etag": '"0123456789abcdef0123456789abcdef"',
    }
    checks = checksums.checksums_from(headers, "a" * 64)
    algos = [(algo, source) for algo, _, source in checks]
    assert ("md5", "x-goog-hash md5") in algos
    assert ("sha256", "Content-Digest sha-256") in algos
    assert ("sha256", "expected_sha256") in algos
    assert not any(source == "ETag" for _, source in algos)  # x-goog-hash md5 wins
    assert checksums.checksums_from({"etag": '"0123456789ABCDEF0123456789abcdef"'}) == [
        ("md5", "0123456789abcdef0123456789abcdef", "ETag")
    ]
    assert checksums.checksums_from({"etag": 'W/"0123456789abcdef0123456789abcdef"'}) == []
    assert checksums.checksums_from({"digest": "MD5=Ojk9c3dhfxgoKVVHYwFbHQ=="})[0][0] == "md5"
    with pytest.raises(ValueError, match="64 hex"):
        checksums.checksums_from({}, "xyz")


# -- integrity failures: nothing at the target -------------------------------------------------------


@pytest.mark.parametrize("checksum", ["md5", "sha256", "etag-md5", "crc32c"])
def test_bad_checksum_raises_and_removes_everything(client, tmp_path, checksum):
    dest = tmp_path / "out.bin"
    with pytest.raises(
        tinker_sync.DownloadIntegrityError, match=r"mismatch for .*expected [0-9a-f]+ .*got [0-9a-f]+"
    ):
        client.download(f"/test/bytes?size={MiB}&seed=2&checksum={checksum}&bad_checksum=1", dest)
    assert not dest.exists() and leftovers(dest) == []


def test_crc32c_without_google_crc32c_is_skipped_and_said(client, tmp_path, monkeypatch, caplog):
    """The other path: without the optional package, CRC32C is not checked (and the log says so)."""
    monkeypatch.setitem(sys.modules, "google_crc32c", None)  # import google_crc32c -> ImportError
    dest = tmp_path / "out.bin"
    with caplog.at_level(logging.INFO, logger="tinker_sync"):
        client.download(f"/test/bytes?size={MiB}&seed=2&checksum=crc32c&bad_checksum=1", dest)
    assert file_sha(dest) == expected_sha(2, MiB)  # the size was still checked; the bad CRC went unseen
    assert any("Not checking CRC32C" in r.getMessage() for r in caplog.records)


def test_wrong_expected_sha256(client, tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(tinker_sync.DownloadIntegrityError, match="SHA-256 mismatch .*expected_sha256"):
        client.download(f"/test/bytes?size={MiB}&seed=2", dest, expected_sha256="0" * 64)
    assert not dest.exists() and leftovers(dest) == []


def test_right_expected_sha256(client, tmp_path):
    dest = tmp_path / "out.bin"
    client.download(f"/test/bytes?size={MiB}&seed=2", dest, expected_sha256=expected_sha(2, MiB).upper())
    assert file_sha(dest) == expected_sha(2, MiB)


def test_wrong_expected_size(client, tinker_server, tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(tinker_sync.DownloadIntegrityError, match="expected 1000 bytes"):
        client.download(f"/test/bytes?size={MiB}&seed=2", dest, expected_size=1000)
    assert not dest.exists() and leftovers(dest) == []


def test_short_announced_length_caught_by_checksum(client, tmp_path):
    # The server announces (and sends) 100 bytes too few: only the checksum can tell.
    dest = tmp_path / "out.bin"
    size = MiB
    with pytest.raises(tinker_sync.DownloadIntegrityError, match="SHA-256 mismatch"):
        client.download(f"/test/bytes?size={size}&seed=2&checksum=sha256&wrong_length={size - 100}", dest)
    assert not dest.exists() and leftovers(dest) == []
    with pytest.raises(tinker_sync.DownloadIntegrityError, match="Size mismatch"):
        client.download(f"/test/bytes?size={size}&seed=2&wrong_length={size - 100}", dest, expected_size=size)
    assert not dest.exists() and leftovers(dest) == []


def test_truncated_body_without_retries(client, tinker_server, tmp_path):
    dest = tmp_path / "out.bin"
    size = MiB
    tinker_server.script("/test/bytes", Fault(wrong_length=size + 100))
    with pytest.raises(tinker_sync.APIConnectionError):
        client.with_options(max_retries=0).download(f"/test/bytes?size={size}&seed=2", dest)
    assert not dest.exists()
    assert not os.path.exists(f"{dest}.lock")


# -- resume within a call ----------------------------------------------------------------------------


@pytest.mark.slow
def test_256mib_cut_at_50_random_offsets_ends_identical(client, tinker_server, tmp_path):
    size = 256 * MiB
    cuts = sorted(random.Random(1234).sample(range(1, size), 50))
    relative = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    tinker_server.script("/test/bytes", *(Fault(reset_after=n) for n in relative))
    dest = tmp_path / "big.bin"
    client.with_options(max_retries=60).download(f"/test/bytes?size={size}&seed=9", dest, connections=1)
    assert file_sha(dest) == expected_sha(9, size)
    ranges = [r.headers.get("range") for r in bytes_requests(tinker_server)]
    assert ranges == [None, *(f"bytes={c}-" for c in cuts)]
    dest.unlink()


def test_changed_resource_mid_call_restarts_from_zero(client, tinker_server, tmp_path):
    size = 4 * MiB
    tinker_server.script("/test/bytes", Fault(reset_after=MiB), Fault(change_etag=True))
    dest = tmp_path / "out.bin"
    calls = []
    client.download(f"/test/bytes?size={size}&seed=3", dest, progress=lambda d, t: calls.append(d))
    assert file_sha(dest) == expected_sha(3, size)
    # Progress went back to zero after the resume was answered with a new 200 body.
    drops = [i for i in range(1, len(calls)) if calls[i] < calls[i - 1]]
    assert drops and calls[drops[0]] == 0
    assert leftovers(dest) == []


def test_stream_to_file_resumes_in_call_and_resume_false_raises(client, tinker_server, tmp_path):
    size = 2 * MiB
    tinker_server.script("/test/bytes", Fault(reset_after=300_000))
    with client.stream("GET", f"/test/bytes?size={size}&seed=4") as response:
        assert response.stream_to_file(tmp_path / "a") == size
    assert file_sha(tmp_path / "a") == expected_sha(4, size)
    tinker_server.script("/test/bytes", Fault(reset_after=300_000))
    with client.stream("GET", f"/test/bytes?size={size}&seed=4") as response:
        with pytest.raises(tinker_sync.APIConnectionError):
            response.stream_to_file(tmp_path / "b", resume=False)
    assert not (tmp_path / "b").exists() and leftovers(tmp_path / "b") == []


# -- resume across runs ------------------------------------------------------------------------------


def _leave_partial(client, server, url, dest, cut):
    server.script("/test/bytes", Fault(reset_after=cut))
    with pytest.raises(tinker_sync.APIConnectionError):
        client.with_options(max_retries=0).download(url, dest)
    assert not dest.exists()
    assert os.path.getsize(f"{dest}.part") == cut
    return json.loads(pathlib.Path(f"{dest}.part.json").read_text())


def test_rerun_resumes_from_part_file(client, tinker_server, tmp_path):
    size = 4 * MiB
    url = f"/test/bytes?size={size}&seed=6&checksum=sha256"
    dest = tmp_path / "out.bin"
    state = _leave_partial(client, tinker_server, url, dest, 1_500_000)
    assert state["url"] == client.build_url(url) and state["total"] == size and state["validator"]
    tinker_server.clear()
    calls = []
    client.download(url, dest, progress=lambda d, t: calls.append(d))
    (request,) = bytes_requests(tinker_server)
    assert request.headers["range"] == "bytes=1500000-"
    assert request.headers["if-range"] == state["validator"]
    assert calls[0] == 1_500_000  # progress counts the bytes already there
    assert file_sha(dest) == expected_sha(6, size)
    assert leftovers(dest) == []


def test_rerun_after_changed_etag_restarts(client, tinker_server, tmp_path):
    size = 4 * MiB
    url = f"/test/bytes?size={size}&seed=6"
    dest = tmp_path / "out.bin"
    _leave_partial(client, tinker_server, url, dest, 1_000_000)
    tinker_server.clear()
    tinker_server.script("/test/bytes", Fault(change_etag=True))
    calls = []
    client.download(url, dest, progress=lambda d, t: calls.append(d))
    (request,) = bytes_requests(tinker_server)
    assert request.headers["range"] == "bytes=1000000-"  # asked to resume, got the whole new body
    assert calls[0] == 0
    assert file_sha(dest) == expected_sha(6, size)


def test_resume_false_starts_from_zero(client, tinker_server, tmp_path):
    url = f"/test/bytes?size={2 * MiB}&seed=6"
    dest = tmp_path / "out.bin"
    _leave_partial(client, tinker_server, url, dest, 500_000)
    tinker_server.clear()
    client.download(url, dest, resume=False)
    assert "range" not in bytes_requests(tinker_server)[0].headers
    assert file_sha(dest) == expected_sha(6, 2 * MiB)


def test_sidecar_for_another_query_is_pinned_by_if_range(client, tinker_server, tmp_path):
    """Same path, other query (as a re-signed URL): a resume is tried, but If-Range holds the old
    ETag, so another resource answers 200 and the download restarts: never a splice."""
    dest = tmp_path / "out.bin"
    _leave_partial(client, tinker_server, f"/test/bytes?size={2 * MiB}&seed=6", dest, 500_000)
    tinker_server.clear()
    client.download(f"/test/bytes?size={2 * MiB}&seed=7", dest)
    first = bytes_requests(tinker_server)[0].headers
    assert first["range"] == "bytes=500000-" and first["if-range"].startswith('"6-')
    assert file_sha(dest) == expected_sha(7, 2 * MiB)


def test_sidecar_for_another_path_is_not_resumed(client, tinker_server, tmp_path):
    dest = tmp_path / "out.bin"
    _leave_partial(client, tinker_server, f"/test/bytes?size={2 * MiB}&seed=6", dest, 500_000)
    tinker_server.clear()
    other_host = tinker_server.url.replace("127.0.0.1", "localhost")
    client.download(f"{other_host}/test/bytes?size={2 * MiB}&seed=6", dest)
    assert "range" not in bytes_requests(tinker_server)[0].headers
    assert file_sha(dest) == expected_sha(6, 2 * MiB)


@pytest.mark.parametrize("checksum", ["sha256", None])
def test_416_with_complete_part(client, tinker_server, tmp_path, checksum):
    """A .part that already holds every byte: a 416 plus a matching checksum finishes it; no checksum restarts."""
    size = MiB
    url = f"/test/bytes?size={size}&seed=8" + (f"&checksum={checksum}" if checksum else "")
    dest = tmp_path / "out.bin"
    _leave_partial(client, tinker_server, url, dest, 10)
    with client.stream("GET", url) as response:  # fill the .part by hand, as a killed run could have
        with open(f"{dest}.part", "wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
    tinker_server.clear()
    client.download(url, dest)
    statuses = [r.headers.get("range") for r in bytes_requests(tinker_server)]
    if checksum:
        assert statuses == [f"bytes={size}-"]  # one 416, nothing transferred
    else:
        assert statuses == [f"bytes={size}-", None]
    assert file_sha(dest) == expected_sha(8, size)
    assert leftovers(dest) == []


def range_headers(first, total, etag):
    return {"content-range": f"bytes {first}-{total - 1}/{total}", "etag": etag}


def test_wrong_content_range_is_a_restart():
    def problem(status, first, total, etag):
        return continuation_problem(status, range_headers(first, total, etag), 50, '"v1"', 100)

    assert problem(206, 50, 100, '"v1"') is None
    assert "wrong Content-Range" in problem(206, 0, 100, '"v1"')
    assert "size changed" in problem(206, 50, 200, '"v1"')
    assert "resource changed" in problem(206, 50, 100, '"v2"')
    # A whole 200 is not the continuation (the file restarts from zero with it); from byte 0 it is the body.
    assert "200 instead of 206" in problem(200, 0, 100, '"v2"')
    assert continuation_problem(200, {"etag": '"v2"'}, 0, None, None) is None


def test_killed_process_resumes(tinker_server, tmp_path):
    """kill -9 a CLI download mid-way; the re-run asks for the rest with Range and ends identical."""
    size = 8 * MiB
    url = f"/test/bytes?size={size}&seed=11"
    dest = tmp_path / "killed.bin"
    tinker_server.script("/test/bytes", Fault(trickle=64 * 1024, trickle_delay=0.02))
    env = cli_env(tinker_server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync", "download", url, "-o", str(dest)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(f"{dest}.part") and os.path.getsize(f"{dest}.part") >= 512 * 1024:
                break
            assert proc.poll() is None, "the download ended before it could be killed"
            time.sleep(0.01)
        else:
            pytest.fail("the .part file never grew")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not dest.exists()
    part_size = os.path.getsize(f"{dest}.part")
    assert os.path.exists(f"{dest}.lock")  # left by the dead process: reclaimed below
    tinker_server.clear()
    with tinker_sync.Client(api_key=API_KEY, base_url=tinker_server.url) as client:
        client.download(url, dest)
    (request,) = bytes_requests(tinker_server)
    assert request.headers["range"] == f"bytes={part_size}-"
    assert file_sha(dest) == expected_sha(11, size)
    assert leftovers(dest) == []


# -- locking -----------------------------------------------------------------------------------------


def test_second_download_fails_clearly_while_first_runs(client, tinker_server, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "LOCK_WAIT", 0.3)
    size = 2 * MiB
    dest = tmp_path / "out.bin"
    slow = f"/test/bytes?size={size}&seed=12&trickle=65536&trickle_delay=0.05"
    errors: list[BaseException] = []

    def first_download() -> None:
        try:
            client.download(slow, dest)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    first = threading.Thread(target=first_download)
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(f"{dest}.part") and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(
            tinker_sync.DownloadLockedError, match=rf"held by another download \(pid {os.getpid()}@"
        ):
            client.download(f"/test/bytes?size={size}&seed=13", dest)
    finally:
        first.join()
    assert not errors
    assert file_sha(dest) == expected_sha(12, size)  # never mixed bytes
    assert leftovers(dest) == []


def test_second_download_waits_for_the_first(client, tmp_path):
    size = MiB
    dest = tmp_path / "out.bin"
    results = []
    url = f"/test/bytes?size={size}&seed=14&trickle=65536&trickle_delay=0.01"
    threads = [threading.Thread(target=lambda: results.append(client.download(url, dest))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert file_sha(dest) == expected_sha(14, size)
    assert leftovers(dest) == []


def test_stale_lock_file_is_reclaimed(client, tmp_path):
    dest = tmp_path / "out.bin"
    (tmp_path / "out.bin.lock").write_text("pid 999999999@elsewhere")
    client.download(f"/test/bytes?size={MiB}&seed=1", dest)
    assert file_sha(dest) == expected_sha(1, MiB)
    assert leftovers(dest) == []


# -- disk space, redirects, credentials -----------------------------------------------------------------


def test_not_enough_disk_space_fails_before_transfer(client, tinker_server, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    dest = tmp_path / "out.bin"
    with pytest.raises(OSError, match=f"need {MiB} bytes, 1000 free .short by {MiB - 1000} bytes") as info:
        client.download(f"/test/bytes?size={MiB}&seed=1", dest)
    assert info.value.errno == errno.ENOSPC
    assert not dest.exists() and leftovers(dest) == []


def test_https_to_http_redirect_refused():
    check_redirect("http://a/x", "https://b/y")
    check_redirect("https://a/x", "https://b/y")
    with pytest.raises(tinker_sync.APIConnectionError, match="from https to plain http"):
        check_redirect("https://a/x", "http://b/y?sig=secret")
    with pytest.raises(tinker_sync.APIConnectionError, match="non-HTTP"):
        check_redirect("https://a/x", "file:///etc/passwd")


def test_redirect_to_signed_url_on_another_origin_gets_no_api_key(tinker_server, tmp_path, monkeypatch):
    """API on localhost, signed URLs on 127.0.0.1: two origins, so the key stays home."""
    tinker_server.add_checkpoint("tinker://run-1/weights/final", size=MiB, n_files=2)
    base = f"http://localhost:{tinker_server.port}"
    dest = tmp_path / "ckpt.tar"
    with tinker_sync.Client(api_key=API_KEY, base_url=base) as client:
        client.download("/api/v1/training_runs/run-1/checkpoints/weights/final/archive", dest)
    assert tinker_server.violations == []
    config, api, signed = tinker_server.requests
    assert config.path == "/api/v1/client/config" and config.headers["x-api-key"] == API_KEY
    assert api.headers["x-api-key"] == API_KEY
    assert signed.path.startswith("/signed/") and "x-api-key" not in signed.headers
    assert dest.stat().st_size > MiB
    import tarfile

    with tarfile.open(dest) as tar:
        assert len(tar.getnames()) >= 2


# -- constant memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [256 * MiB, 2 * GiB], ids=["256MiB", "2GiB"])
@pytest.mark.limit_memory("32 MB", current_thread_only=True)
@pytest.mark.slow
def test_stream_to_file_constant_memory(client, tmp_path, size):
    dest = tmp_path / "big.bin"
    with client.stream("GET", f"/test/bytes?size={size}&seed=21") as response:
        assert response.stream_to_file(dest, connections=1) == size  # several: tests/test_buffers.py
    try:
        assert file_mismatch(dest, 21, size) is None  # byte for byte (two SHA-256 of 2 GiB cost 2.5 s)
    finally:
        dest.unlink()


# Past 2 GiB: stream_to_file above (the flagship); 512 MiB is 16 times the bound here.
@pytest.mark.parametrize("size", [256 * MiB, 512 * MiB], ids=["256MiB", "512MiB"])
@pytest.mark.limit_memory("32 MB", current_thread_only=True)
@pytest.mark.slow
def test_iter_bytes_constant_memory(client, size):
    body = SameBody(21, size)
    with client.stream("GET", f"/test/bytes?size={size}&seed=21") as response:
        for chunk in response.iter_bytes():
            body.update(chunk)
    assert body.mismatch() is None


# -- files beside the target are never followed through links ------------------------------------


def _plant(path, kind, victim):
    if kind == "link to a file":
        os.symlink(victim, path)
    elif kind == "dangling link":
        os.symlink(victim.parent / "nowhere", path)
    elif kind == "link to a directory":
        os.symlink(victim.parent, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)


PLANTED = ["link to a file", "dangling link", "link to a directory", "fifo", "directory"]
BESIDE = [".part", ".part.json", ".lock", ".part.json.tmp"]


@pytest.mark.parametrize("suffix", BESIDE)
@pytest.mark.parametrize("kind", PLANTED)
@pytest.mark.parametrize("how", ["download", "stream_to_file"])
def test_a_planted_link_or_odd_file_is_never_followed(client, tinker_server, tmp_path, suffix, kind, how):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    before = victim.stat()
    dest = tmp_path / "out.bin"
    _plant(f"{dest}{suffix}", kind, victim)
    url = f"/test/bytes?size={MiB}&seed=4"
    with pytest.raises(OSError, match="(symbolic link|not a regular file).*left untouched"):
        if how == "download":
            client.download(url, dest)
        else:
            with client.stream("GET", url) as response:
                response.stream_to_file(dest)
    assert not dest.exists() and os.path.lexists(f"{dest}{suffix}")  # nothing written, nothing removed
    assert victim.read_bytes() == b"precious" and victim.stat().st_mtime_ns == before.st_mtime_ns


# -- destinations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/test/bytes?size=1000&seed=3", "bytes"),
        ("/test/bytes/?size=1000&seed=3", None),
    ],
)
def test_a_directory_destination_takes_the_urls_file_name(client, tmp_path, url, name):
    if name is None:
        with pytest.raises(tinker_sync.InvalidRequestError, match="give a file path"):
            client.download(url, tmp_path)
        assert list(tmp_path.iterdir()) == []
        return
    path = client.download(url, tmp_path)
    assert path == tmp_path / name and file_sha(path) == expected_sha(3, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_signed_url_into_a_directory(client, tinker_server, tmp_path):
    tinker_server.add_checkpoint("tinker://run-1/external_weights/x", size=5000, n_files=1)
    (url,) = client.checkpoints.external_weights_urls("tinker://run-1/external_weights/x").urls.values()
    path = client.download(url, tmp_path, credentials=False)
    assert path.parent == tmp_path and "?" not in path.name and path.stat().st_size == 5000


@pytest.mark.parametrize("how", ["download", "stream_to_file"])
def test_an_empty_destination_is_refused_not_taken_for_the_current_directory(
    client, tinker_server, tmp_path, monkeypatch, how
):
    monkeypatch.chdir(tmp_path)
    tinker_server.clear()
    with pytest.raises(FileNotFoundError, match="an empty path"):
        if how == "download":
            client.download(f"/test/bytes?size={MiB}", "")
        else:
            with client.stream("GET", f"/test/bytes?size={MiB}") as response:
                response.stream_to_file("")
    assert list(tmp_path.iterdir()) == []
    if how == "download":
        assert tinker_server.requests == []


@pytest.mark.parametrize("how", ["checkpoints.download", "checkpoints.sync"])
def test_an_empty_output_directory_is_refused(client, tinker_server, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    tinker_server.add_checkpoint("tinker://run-1/weights/final", size=1000)
    tinker_server.clear()
    with pytest.raises(FileNotFoundError, match="an empty path"):
        if how == "checkpoints.download":
            client.checkpoints.download("tinker://run-1/weights/final", "")
        else:
            client.checkpoints.sync("run-1", "")
    assert list(tmp_path.iterdir()) == [] and tinker_server.requests == []


@pytest.mark.parametrize(
    ("where", "error", "match"),
    [
        ("missing/dir/out.bin", FileNotFoundError, "does not exist"),
        ("a_file/out.bin", NotADirectoryError, "is not a directory"),
        ("a_file/deeper/out.bin", NotADirectoryError, "is not a directory"),
        ("x" * 300, OSError, "name is too long"),  # the file itself
        ("x" * 250, OSError, "name is too long"),  # its .part.json.tmp beside it
        ("é" * 120 + ".bin", OSError, "name is too long"),  # 244 bytes in UTF-8
    ],
)
@pytest.mark.parametrize("how", ["download", "stream_to_file"])
def test_destination_problems_are_reported_before_the_transfer(
    client, tinker_server, tmp_path, where, error, match, how
):
    (tmp_path / "a_file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    tinker_server.clear()
    with pytest.raises(error, match=match):
        if how == "download":
            client.download(f"/test/bytes?size={MiB}", tmp_path / where)
        else:
            with client.stream("GET", f"/test/bytes?size={MiB}") as response:
                response.stream_to_file(tmp_path / where)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind
    if how == "download":
        assert tinker_server.requests == []  # nothing was sent
