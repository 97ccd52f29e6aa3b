"""The ``tinker-sync`` CLI as a real subprocess against the loopback mock server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _helpers as helpers
import pytest
from _downloads import file_sha
from _helpers import cli_env, run_on_terminal

from tinker_sync.testing._data import sha256_of

MiB = 1 << 20
TERMINAL = {"COLUMNS": "100"}  # what every command here sees: a 100-column terminal's width


def run_cli(server, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return helpers.run_cli(server, *args, timeout=60, **TERMINAL, **extra)


def test_download_without_terminal_prints_plain_lines(tinker_server, tmp_path):
    dest = tmp_path / "out.bin"
    size = 8 * MiB
    result = run_cli(
        tinker_server, "download", f"/test/bytes?size={size}&seed=3&trickle=262144", "-o", str(dest)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{dest}\n"  # the saved path, and nothing else, on stdout (issue 22 item 9)
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert 2 <= len(lines) <= 12  # at most one per 10% (plus the first and the final line)
    assert lines[-1].startswith(f"Saved {dest} (8.0 MiB, {size} bytes) in ")
    assert file_sha(dest) == sha256_of(3, size)
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


@pytest.mark.slow
def test_download_on_a_terminal_draws_a_tqdm_bar(tinker_server, tmp_path):
    dest = tmp_path / "out.bin"
    size = 4 * MiB
    returncode, text = run_on_terminal(
        [
            sys.executable,
            "-m",
            "tinker_sync",
            "download",
            f"/test/bytes?size={size}&seed=4&trickle=262144&trickle_delay=0.05",
            "-o",
            str(dest),
        ],
        cli_env(tinker_server, **TERMINAL),
    )
    assert returncode == 0, text
    assert "\r" in text  # tqdm redraws its bar in place
    assert "100%" in text and "4.00M" in text
    assert f"Saved {dest}" in text
    assert file_sha(dest) == sha256_of(4, size)


def test_resume_and_sha256_options(tinker_server, tmp_path):
    dest = tmp_path / "out.bin"
    size = 2 * MiB
    url = f"/test/bytes?size={size}&seed=5"
    result = run_cli(tinker_server, "download", url, "-o", str(dest), "--sha256", sha256_of(5, size))
    assert result.returncode == 0, result.stderr
    tinker_server.clear()
    result = run_cli(tinker_server, "download", url, "-o", str(dest), "--no-resume")
    assert result.returncode == 0, result.stderr
    assert "range" not in tinker_server.requests[0].headers


@pytest.mark.parametrize(
    "args, extra, message",
    [
        (["download", "/test/nope", "-o", "{dest}"], {}, "Error code: 404"),
        (
            ["download", f"/test/bytes?size={MiB}&seed=1", "-o", "{dest}", "--sha256", "0" * 64],
            {},
            "SHA-256 mismatch",
        ),
        (
            ["download", f"/test/bytes?size={MiB}&seed=1&checksum=md5&bad_checksum=1", "-o", "{dest}"],
            {},
            "MD5 mismatch",
        ),
        (["download", "/test/bytes", "-o", "{dest}"], {"TINKER_API_KEY": "bad-key"}, "Invalid API key"),
        (["download", "/test/bytes", "-o", "{dest}"], {"TINKER_API_KEY": ""}, "No API key"),
    ],
    ids=["404", "sha256", "bad-checksum", "bad-key", "no-key"],
)
def test_expected_errors_exit_1_with_one_line(tinker_server, tmp_path, args, extra, message):
    dest = tmp_path / "out.bin"
    result = run_cli(tinker_server, *(a.format(dest=dest) for a in args), **extra)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("tinker-sync: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert result.stderr.splitlines()[-1] == error_lines[0]
    assert not dest.exists()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["download"],
        ["download", "x"],
        ["nosuch"],
        ["download", "x", "-o", "y", "--sha256", "zz"],
        ["download", "x", "-o", "y", "--connections", "0"],
        ["download", "x", "-o", "y", "--connections", "many"],
        ["checkpoint", "sync", "run-1"],
    ],
    ids=[
        "none",
        "no-url",
        "no-output",
        "unknown-command",
        "bad-sha256",
        "zero-connections",
        "text-connections",
        "sync-no-output",
    ],
)
def test_usage_errors_exit_2(tinker_server, args):
    result = run_cli(tinker_server, *args)
    assert result.returncode == 2
    assert "usage: tinker-sync" in result.stderr and "Traceback" not in result.stderr


def test_main_returns_codes_in_process(capsys):
    from tinker_sync.cli import main

    assert main(["--version"]) == 0
    assert "tinker-sync" in capsys.readouterr().out
    assert main(["download"]) == 2


@pytest.mark.parametrize("forced", [False, True])
def test_version_names_the_decoder_and_why_it_is_the_pure_one(tinker_server, forced):
    import tinker_sync

    built_pure = (Path(tinker_sync.__file__).parent / "_pure_build").exists()
    result = run_cli(tinker_server, "--version", **({"TINKER_SYNC_NO_EXTENSIONS": "1"} if forced else {}))
    assert result.returncode == 0 and result.stdout.startswith("tinker-sync ")
    if built_pure:
        assert "(SSE decoder: python, a pure-Python install)" in result.stdout
    elif forced:  # a compiled install told to use the pure twin is not a pure-Python install
        assert (
            "(SSE decoder: python, chosen by TINKER_SYNC_NO_EXTENSIONS or the interpreter)" in result.stdout
        )
    else:
        assert "(SSE decoder: cython)" in result.stdout


def test_a_terminal_without_tqdm_gets_plain_lines(tinker_server, tmp_path):
    """``pip install tinker-sync`` without the [cli] extra: no tqdm, and still no traceback on a terminal."""
    dest = tmp_path / "out.bin"
    size = 4 * MiB
    code = "import sys; sys.modules['tqdm'] = None; from tinker_sync.cli import main; sys.exit(main(sys.argv[1:]))"
    returncode, text = run_on_terminal(
        [sys.executable, "-c", code, "download", f"/test/bytes?size={size}&seed=6", "-o", str(dest)],
        cli_env(tinker_server, **TERMINAL),
    )
    assert returncode == 0, text
    assert "Traceback" not in text and "\r\n" in text  # a terminal's line ends, but no bar redrawn in place
    assert f"out.bin: 0 B / {size // MiB}.0 MiB" in text and f"Saved {dest}" in text
    assert file_sha(dest) == sha256_of(6, size)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_out_of_retries_keeps_the_partial_file_and_a_rerun_resumes(tinker_server, tmp_path, how):
    from tinker_sync.testing import Fault

    dest = tmp_path / "out.bin"
    size = 2 * MiB
    url = f"/test/bytes?size={size}&seed=7"
    # A reset after 300000 bytes (failure 1, renewed by the progress: an immediate resume), then a 503
    # (failure 1 again, the budget of --max-retries 1 spent).
    tinker_server.script("/test/bytes", Fault(reset_after=300_000), Fault(status=503))
    if how == "flag":
        result = run_cli(tinker_server, "download", url, "-o", str(dest), "--max-retries", "1")
    else:
        result = run_cli(tinker_server, "download", url, "-o", str(dest), TINKER_MAX_RETRIES="1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    part = tmp_path / "out.bin.part"
    kept = part.stat().st_size
    assert kept == 300_000
    assert error.startswith("tinker-sync: error: Error code: 503")
    assert error.endswith(
        f"(out of retries); the partial file {part} ({kept} bytes) was kept: run the same command again to resume"
    )
    assert len(tinker_server.requests) == 2  # the first send and the resume
    tinker_server.clear()
    result = run_cli(tinker_server, "download", url, "-o", str(dest))
    assert result.returncode == 0, result.stderr
    assert tinker_server.requests[0].headers["range"] == f"bytes={kept}-"
    assert file_sha(dest) == sha256_of(7, size)


@pytest.mark.parametrize(
    "args, extra, code, message",
    [
        (["--max-retries", "-1"], {}, 2, "expected a non-negative integer"),
        (["--max-retries", "x"], {}, 2, "expected a non-negative integer"),
        ([], {"TINKER_MAX_RETRIES": "many"}, 1, "TINKER_MAX_RETRIES must be a non-negative integer"),
    ],
    ids=["negative-flag", "text-flag", "bad-env"],
)
def test_bad_max_retries(tinker_server, tmp_path, args, extra, code, message):
    result = run_cli(tinker_server, "download", "/test/bytes", "-o", str(tmp_path / "x"), *args, **extra)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_max_retries_zero_gives_up_at_the_first_failure(tinker_server, tmp_path):
    from tinker_sync.testing import Fault

    tinker_server.script("/test/bytes", Fault(status=503))
    result = run_cli(
        tinker_server, "download", "/test/bytes?size=1000", "-o", str(tmp_path / "x"), "--max-retries", "0"
    )
    assert result.returncode == 1 and "Error code: 503" in result.stderr
    assert len(tinker_server.requests) == 1


def test_download_into_a_directory_and_destination_errors(tinker_server, tmp_path):
    result = run_cli(tinker_server, "download", "/test/bytes?size=5000&seed=3", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert file_sha(tmp_path / "bytes") == sha256_of(3, 5000)
    missing = tmp_path / "missing" / "out.bin"
    result = run_cli(tinker_server, "download", "/test/bytes?size=5000", "-o", str(missing))
    assert result.returncode == 1
    expected = f"tinker-sync: error: Cannot save to {missing}: the directory {missing.parent} does not exist"
    assert result.stderr.strip() == expected
    assert sorted(os.listdir(tmp_path)) == ["bytes"]
