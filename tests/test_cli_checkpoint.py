"""``tinker-sync checkpoint download`` and ``tinker-sync demo`` as real subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import cli_env, run_cli, run_on_terminal, tree_hashes

from tinker_sync.testing import Fault
from tinker_sync.testing.archives import expected_files

MiB = 1 << 20
WEIGHTS = "tinker://run-1/weights/final"


def test_checkpoint_download(tinker_server, tmp_path: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=6 * MiB, seed=4)
    tinker_server.script("/signed/", Fault(reset_after=2 * MiB))
    result = run_cli(tinker_server, "checkpoint", "download", WEIGHTS, "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    target = tmp_path / "run-1_weights_final"
    assert tree_hashes(target) == expected_files(4, 6 * MiB)
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr  # not a terminal: plain lines
    assert any(line.startswith("Connection broke at byte 2097152") for line in lines)
    assert lines[-1].startswith(f"Saved {target} (6.0 MiB, {6 * MiB} bytes) in ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert tinker_server.violations == []

    again = run_cli(tinker_server, "checkpoint", "download", WEIGHTS, "-o", str(tmp_path))
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr and "--force" in again.stderr
    forced = run_cli(tinker_server, "checkpoint", "download", WEIGHTS, "-o", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr


def test_checkpoint_download_on_a_terminal_draws_a_bar(tinker_server, tmp_path: Path) -> None:
    tinker_server.add_checkpoint(WEIGHTS, size=4 * MiB, seed=4, prepare_seconds=1.0)
    returncode, text = run_on_terminal(
        [sys.executable, "-m", "tinker_sync", "checkpoint", "download", WEIGHTS, "-o", str(tmp_path)],
        cli_env(tinker_server, COLUMNS="100"),
        all_streams=True,
    )
    assert returncode == 0, text
    assert "preparing the archive" in text and text.count("preparing the archive") == 1
    assert "\r" in text and "100%" in text  # a tqdm bar
    assert "Saved " in text


def test_checkpoint_download_errors(tinker_server, tmp_path: Path) -> None:
    cases = [
        ("tinker://run-1/weights", "expected tinker://RUN/KIND/NAME"),
        ("tinker://run-1/sampler_weights/s", "cannot be downloaded"),
        ("tinker://run-1/weights/missing", "Error code: 404"),
    ]
    for path, text in cases:
        result = run_cli(tinker_server, "checkpoint", "download", path, "-o", str(tmp_path))
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    usage = run_cli(tinker_server, "checkpoint", "download")
    assert usage.returncode == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tinker_sync", "demo", "--size", "8"],
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "token 0: 'tok0'" in out and "done: finish_reason=length" in out
    assert "Resumed after the reset with bytes=" in out
    target = tmp_path / "tinker-demo" / "demo-run_weights_demo"
    assert f"Checkpoint extracted to {target.relative_to(tmp_path)} (8.0 MiB)" in out
    assert tree_hashes(target) == expected_files(1, 8 * MiB)
    assert "weights/adapter_model.safetensors" in out
    assert "Connection broke at byte" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Saved ")
    # a second run replaces the first one's download
    again = subprocess.run(
        [sys.executable, "-m", "tinker_sync", "demo", "--size", "1"],
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert tree_hashes(target) == expected_files(1, MiB)
