"""A broken pipe loses nothing: whatever ends an external-weights download early (a closed pipe
under ``| head``, Ctrl-C, any exception from a progress callback), the resumable state stays and
the next run resumes it; only a verified-bad transfer removes it. Real subprocesses and pipes.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import cli_env, tree_hashes

from tinker_sync import DownloadIntegrityError
from tinker_sync.testing.archives import expected_files

API_KEY = "tml-test-key"
RUN = "run-5"
KiB = 1 << 10
SIZE = 2 << 20


def _partial(out: Path, name: str) -> Path:
    return out / f".{RUN}_external_weights_{name}.partial"


def _ranged(server) -> list[str]:
    return [r.headers.get("range", "") for r in server.requests if r.path.startswith("/signed/")]


class Stop(Exception):
    """An error no download code knows of."""


EXCEPTIONS = {
    "broken_pipe": lambda: BrokenPipeError(errno.EPIPE, "Broken pipe"),
    "disk_full": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "keyboard_interrupt": KeyboardInterrupt,
    "system_exit": lambda: SystemExit(1),
    "runtime_error": lambda: RuntimeError("a bug in the caller's progress bar"),
    "value_error": lambda: ValueError("odd"),
    "unknown": lambda: Stop("stop"),
}


@pytest.mark.parametrize("make", EXCEPTIONS.values(), ids=EXCEPTIONS.keys())
def test_any_exception_keeps_the_resumable_state_and_a_rerun_resumes(client, tinker_server, tmp_path, make):
    path = f"tinker://{RUN}/external_weights/big"
    tinker_server.add_checkpoint(path, size=SIZE, seed=6, n_files=2)
    tinker_server.rate_limit = 4 << 20
    raised = make()

    def progress(done: int, total: int | None) -> None:
        if done > SIZE // 4:
            raise raised

    with pytest.raises(type(raised)):
        client.checkpoints.download(path, tmp_path, progress=progress, connections=1)
    partial = _partial(tmp_path, "big")
    assert partial.is_dir(), "the resumable state was removed"
    assert any(p.name.endswith(".part") for p in partial.rglob("*")) or any(partial.rglob("*"))
    assert not (tmp_path / f"{RUN}_external_weights_big").exists()
    tinker_server.clear()
    target = client.checkpoints.download(path, tmp_path, connections=1)
    assert tree_hashes(target) == expected_files(6, SIZE, 2)
    assert any(r.startswith("bytes=") and not r.startswith("bytes=0-") for r in _ranged(tinker_server))
    assert not partial.exists()


def test_a_verified_bad_transfer_removes_its_state(client, tinker_server, tmp_path, monkeypatch):
    """The one case that may remove it: the bytes were checked and are wrong."""
    path = f"tinker://{RUN}/external_weights/bad"
    tinker_server.add_checkpoint(path, size=64 * KiB, seed=6, n_files=2)
    tinker_server.signed_checksums = ("sha256",)
    import tinker_sync.resources._checkpoint_download as module

    real = module.download_file

    def corrupt(*args, **kwargs):
        raise DownloadIntegrityError("sha256 mismatch (test)")

    monkeypatch.setattr(module, "download_file", corrupt)
    with pytest.raises(DownloadIntegrityError):
        client.checkpoints.download(path, tmp_path)
    assert not _partial(tmp_path, "bad").exists()
    monkeypatch.setattr(module, "download_file", real)


def _cli(server, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tinker_sync",
        "checkpoint",
        "download",
        f"tinker://{RUN}/external_weights/piped",
        "-o",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("streams", ["2>&1 | head -1", "| head -1", "2>| head -1"])
@pytest.mark.slow
def test_a_closed_pipe_under_head_keeps_the_partial_download(tinker_server, tmp_path, streams):
    tinker_server.add_checkpoint(f"tinker://{RUN}/external_weights/piped", size=SIZE, seed=7, n_files=2)
    tinker_server.rate_limit = 1 << 20
    stderr = {
        "2>&1 | head -1": subprocess.STDOUT,
        "| head -1": subprocess.DEVNULL,
        "2>| head -1": subprocess.PIPE,
    }
    stdout = subprocess.DEVNULL if streams == "2>| head -1" else subprocess.PIPE
    process = subprocess.Popen(
        _cli(tinker_server, tmp_path), env=cli_env(tinker_server), stdout=stdout, stderr=stderr[streams]
    )
    reader = process.stdout if process.stdout is not None else process.stderr
    assert reader is not None
    first = reader.readline()  # what head prints: the first line, then head exits
    reader.close()
    if not first:  # the command printed nothing before finishing: nothing was cut
        process.wait(120)
        pytest.skip("no output to cut")
    process.wait(120)
    partial = _partial(tmp_path, "piped")
    done = tmp_path / f"{RUN}_external_weights_piped"
    assert partial.is_dir() or done.is_dir(), "the partial download was deleted"
    rerun = subprocess.run(
        _cli(tinker_server, tmp_path), env=cli_env(tinker_server), capture_output=True, text=True, timeout=300
    )
    if not done.is_dir() or rerun.returncode == 0:
        assert rerun.returncode == 0, rerun.stderr
    assert tree_hashes(done) == expected_files(7, SIZE, 2)
