"""``tinker-sync run ...`` and ``tinker-sync checkpoint list|info|download`` as real subprocesses
against the mock server's demo data: results on stdout (a table, or JSON for scripts),
diagnostics on stderr, exit status 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import cli_env, run_cli

from tinker_sync.testing import MockTinkerServer


@pytest.fixture(scope="module")
def demo() -> Iterator[MockTinkerServer]:
    """One demo server for the read-only commands of this module."""
    with MockTinkerServer(demo_data=True) as server:
        yield server
        assert server.violations == []


def table(out: str) -> list[list[str]]:
    """The rows of a table (title, header and rule dropped), cut at the rule's column positions."""
    lines = out.splitlines()
    starts = [0] + [
        i + 2 for i, pair in enumerate(zip(lines[2], lines[2][1:], strict=False)) if pair == (" ", " ")
    ]
    starts = [s for s in starts if s < len(lines[2])]
    return [
        [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)] for line in lines[3:]
    ]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_run_list_table(demo):
    lines = ok(run_cli(demo, "run", "list")).splitlines()
    assert lines[0] == "20 training runs (25 more not shown, use --limit to see more)"
    assert lines[1].split() == ["Run", "ID", "Base", "Model", "Owner", "LoRA", "Last", "Update", "Status"]
    assert set(lines[2]) == {"-", " "}
    rows = table("\n".join(lines))
    assert len(rows) == 20 and rows[0][:4] == ["run-001", "Qwen/Qwen3-8B", "mock-user", "Rank 16"]
    assert rows[12][0] == "run-013" and rows[12][-1] == "Failed"


@pytest.mark.parametrize(
    "args",
    [("--format", "json", "run", "list"), ("run", "list", "--format", "json"), ("-f", "json", "run", "list")],
)
def test_run_list_json_before_or_after_the_command(demo, args):
    data = json.loads(ok(run_cli(demo, *args, "--limit", "0")))
    runs = data["runs"]
    assert [r["training_run_id"] for r in runs] == [f"run-{i:03d}" for i in range(1, 46)]
    assert runs[0]["last_checkpoint"]["tinker_path"] == "tinker://run-001/weights/final"
    assert runs[0]["last_request_time"].endswith("Z")


def test_run_list_limit_and_scope(demo):
    data = json.loads(
        ok(run_cli(demo, "-f", "json", "run", "list", "--limit", "25", "--access-scope", "accessible"))
    )
    assert len(data["runs"]) == 25
    shared = json.loads(
        ok(run_cli(demo, "-f", "json", "run", "list", "--limit", "0", "--access-scope", "accessible"))
    )
    assert len(shared["runs"]) == 48 and shared["runs"][-1]["model_owner"] == "teammate"


def test_run_info(demo):
    out = ok(run_cli(demo, "run", "info", "run-005"))
    assert out.splitlines()[0] == "Training run run-005"
    rows = dict(table(out))
    assert rows["LoRA"] == "Rank 16" and rows["Status"] == "OK" and rows["Base Model"] == "Qwen/Qwen3-8B"
    assert rows["Last Training Checkpoint"] == "tinker://run-005/weights/step-0400"
    assert rows["Metadata project"] == "demo"
    data = json.loads(ok(run_cli(demo, "run", "info", "run-005", "--format", "json")))
    assert (data["training_run_id"], data["lora_rank"], data["user_metadata"]["project"]) == (
        "run-005",
        16,
        "demo",
    )


def test_checkpoint_list_for_a_run(demo):
    out = ok(run_cli(demo, "checkpoint", "list", "run-002"))
    assert out.splitlines()[0] == "8 checkpoints for run run-002"
    rows = table(out)
    assert rows[0] == ["weights/step-0100", "training", "7.0 MiB", "No", rows[0][4], "Never", rows[0][6]]
    assert rows[1][6] == "tinker://run-002/sampler_weights/step-0100" and rows[1][3] == "Yes"
    same = json.loads(ok(run_cli(demo, "-f", "json", "checkpoint", "list", "--run-id", "run-002")))
    assert same["run_id"] == "run-002" and len(same["checkpoints"]) == 8
    assert all(c["public"] for c in same["checkpoints"] if c["checkpoint_type"] == "sampler")


def test_checkpoint_list_newest_first(demo):
    lines = ok(run_cli(demo, "checkpoint", "list", "--limit", "3")).splitlines()
    assert lines[0] == "3 checkpoints (265 more not shown, use --limit to see more)"
    assert lines[3].split()[-1] == "tinker://run-044/sampler_weights/step-0400"
    everything = json.loads(ok(run_cli(demo, "-f", "json", "checkpoint", "list", "--limit", "0")))
    assert len(everything["checkpoints"]) == 268


def test_checkpoint_info(demo):
    out = ok(run_cli(demo, "checkpoint", "info", "tinker://run-003/weights/step-0100"))
    assert out.splitlines()[0] == "Checkpoint weights/step-0100"
    rows = dict(table(out))
    assert rows["LoRA"] == "Rank 64" and rows["Training Run ID"] == "run-003"
    assert rows["Expires"].endswith(" UTC") and rows["Type"] == "training"
    data = json.loads(
        ok(run_cli(demo, "checkpoint", "info", "tinker://run-003/weights/step-0100", "-f", "json"))
    )
    assert (data["checkpoint_type"], data["is_lora"], data["lora_rank"]) == ("training", True, 64)
    assert data["expires_at"] is not None


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("run", "info", "run-999"), 1, "Error code: 404"),
        (
            ("checkpoint", "info", "tinker://run-001/weights/nope"),
            1,
            "No checkpoint tinker://run-001/weights/nope",
        ),
        (("checkpoint", "info", "run-001/weights/final"), 1, "Not a checkpoint path"),
        (("run", "list", "--limit", "-1"), 2, "expected 0 or more"),
        (("--format", "xml", "run", "list"), 2, "invalid choice"),
        (("run",), 2, "required"),
    ],
)
def test_errors(demo, args, code, message):
    result = run_cli(demo, *args)
    assert result.returncode == code
    assert result.stdout == "" and message in result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("tinker-sync: error: ")


def test_a_closed_stdout_stops_quietly(demo):
    env = cli_env(demo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync", "-f", "json", "checkpoint", "list", "--limit", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1) == b"{"
    proc.stdout.close()  # as `| head -c 1` does
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(60) in (0, 1)
    assert stderr == b""


@pytest.mark.parametrize("mode", ["archive", "export"])
def test_checkpoint_download_prints_the_target_on_stdout(tmp_path: Path, mode):
    with MockTinkerServer(demo_data=True) as server:
        server.archive_mode = mode
        server.future_polls = 0
        result = run_cli(
            server, "checkpoint", "download", "tinker://run-001/weights/final", "-o", str(tmp_path)
        )
        target = tmp_path / "run-001_weights_final"
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{target}\n"
        assert result.stderr.splitlines()[-1].startswith(f"Saved {target}")
        assert ("Exporting tinker://run-001/weights/final as external weights" in result.stderr) == (
            mode == "export"
        )
        quiet = run_cli(
            server,
            "-q",
            "-f",
            "json",
            "checkpoint",
            "download",
            "tinker://run-001/weights/final",
            "-o",
            str(tmp_path),
            "--force",
        )
        assert quiet.returncode == 0 and quiet.stderr == ""
        data = json.loads(quiet.stdout)
        assert (
            data["destination"] == str(target) and data["checkpoint_path"] == "tinker://run-001/weights/final"
        )
        assert data["file_size_bytes"] == sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        assert server.violations == []
