"""``download`` is idempotent and speaks: a file already complete that verifies against the server
(size, and a checksum it sends or ``--sha256``) is "already complete" without its body being
fetched (``--force`` fetches it again); a resumed run says where it resumed; success prints the
saved path on stdout, ``-f json`` path, bytes, checksum, resumed and seconds; Ctrl-C says that a
re-run resumes. Real subprocesses against the loopback mock server.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import cli_env, run_cli

from tinker_sync.testing import Fault

API_KEY = "tml-test-key"
SIZE = 300_000


def _cli(server, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(server, "download", *args)


def _gets(server, path: str = "/test/bytes") -> list[str]:
    return [r.method for r in server.requests if r.path == path]


CHECKSUMS = {"sha256": "sha256", "md5": "md5", "md5_and_sha256": "md5,sha256"}


@pytest.mark.parametrize("checksum", CHECKSUMS.values(), ids=CHECKSUMS.keys())
@pytest.mark.parametrize("form", ["table", "json"])
def test_a_complete_file_is_not_fetched_again(tinker_server, tmp_path, checksum, form):
    url = f"/test/bytes?size={SIZE}&seed=4&checksum={checksum}"
    dest = tmp_path / "f.bin"
    first = _cli(tinker_server, url, "-o", str(dest), "-f", form)
    assert first.returncode == 0, first.stderr
    tinker_server.clear()
    again = _cli(tinker_server, url, "-o", str(dest), "-f", form)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stderr
    assert "GET" not in _gets(tinker_server)  # the body was not transferred: a HEAD only
    if form == "table":
        assert first.stdout.strip() == again.stdout.strip() == str(dest)
    else:
        shown = json.loads(again.stdout)
        assert (shown["path"], shown["bytes"], shown["resumed"]) == (str(dest), SIZE, False)
        assert set(shown) >= {"path", "bytes", "checksum", "resumed", "seconds"}


def test_force_fetches_again(tinker_server, tmp_path):
    url = f"/test/bytes?size={SIZE}&seed=4&checksum=sha256"
    dest = tmp_path / "f.bin"
    assert _cli(tinker_server, url, "-o", str(dest)).returncode == 0
    tinker_server.clear()
    forced = _cli(tinker_server, url, "-o", str(dest), "--force")
    assert forced.returncode == 0 and "already complete" not in forced.stderr
    assert "GET" in _gets(tinker_server)


DAMAGE = {
    "same_size_other_bytes": lambda p: p.write_bytes(b"\0" * SIZE),
    "shorter": lambda p: p.write_bytes(p.read_bytes()[:-1]),
    "longer": lambda p: p.write_bytes(p.read_bytes() + b"x"),
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_file_that_does_not_verify_is_fetched_again(tinker_server, tmp_path, damage):
    url = f"/test/bytes?size={SIZE}&seed=4&checksum=sha256"
    dest = tmp_path / "f.bin"
    assert _cli(tinker_server, url, "-o", str(dest)).returncode == 0
    good = hashlib.sha256(dest.read_bytes()).hexdigest()
    damage(dest)
    again = _cli(tinker_server, url, "-o", str(dest))
    assert again.returncode == 0 and "already complete" not in again.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == good


def test_without_a_checksum_from_the_server_sha256_decides(tinker_server, tmp_path):
    url = f"/test/bytes?size={SIZE}&seed=5"
    dest = tmp_path / "f.bin"
    assert _cli(tinker_server, url, "-o", str(dest)).returncode == 0
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    tinker_server.clear()
    unverified = _cli(tinker_server, url, "-o", str(dest))  # nothing to verify it by: fetched again
    assert "already complete" not in unverified.stderr and "GET" in _gets(tinker_server)
    tinker_server.clear()
    verified = _cli(tinker_server, url, "-o", str(dest), "--sha256", digest)
    assert "already complete" in verified.stderr and "GET" not in _gets(tinker_server)


@pytest.mark.parametrize("form", ["table", "json"])
def test_a_resumed_run_says_where_it_resumed(tinker_server, tmp_path, form):
    url = f"/test/bytes?size={SIZE}&seed=6&checksum=sha256"
    dest = tmp_path / "f.bin"
    tinker_server.script("/test/bytes", Fault(reset_after=100_000))
    cut = _cli(tinker_server, url, "-o", str(dest), "--max-retries", "0", "--connections", "1")
    assert cut.returncode == 1 and Path(f"{dest}.part").is_file()
    at = Path(f"{dest}.part").stat().st_size
    resumed = _cli(tinker_server, url, "-o", str(dest), "-f", form, "--connections", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {dest} at byte {at}" in resumed.stderr
    if form == "json":
        shown = json.loads(resumed.stdout)
        assert shown["resumed"] is True and shown["resumed_at"] == at and shown["bytes"] == SIZE
    else:
        assert resumed.stdout.strip() == str(dest)


def test_ctrl_c_says_a_rerun_resumes(tinker_server, tmp_path):
    tinker_server.rate_limit = 200_000
    url = f"/test/bytes?size={4 * SIZE}&seed=7"
    dest = tmp_path / "f.bin"
    process = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync", "download", url, "-o", str(dest), "--connections", "1"],
        env=cli_env(tinker_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    part = Path(f"{dest}.part")
    deadline = time.monotonic() + 60
    while not (part.is_file() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "run the same command again to resume" in err and part.is_file()
