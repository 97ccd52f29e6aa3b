"""Mirroring a run: ``client.checkpoints.sync`` and ``tinker-sync checkpoint sync`` as real subprocesses,
run the way cron runs them (again and again, overlapping, killed), against a run that changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import _zygote
import pytest
from _helpers import cli_env, tree_hashes

from tinker_sync import NotFoundError
from tinker_sync._files import target_lock
from tinker_sync.cli import EXIT_PARTIAL, EXIT_SYNCED
from tinker_sync.testing.archives import expected_files

MiB = 1 << 20
RUN = "run-7"


def sync_cli(server, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _zygote.run(["checkpoint", "sync", RUN, "-o", str(out), *args], cli_env(server), None, 120)


def add(server, name: str, *, kind: str = "weights", seed: int = 1, size: int = MiB // 2) -> str:
    path = f"tinker://{RUN}/{kind}/{name}"
    server.add_checkpoint(path, size=size, seed=seed, n_files=2)
    return path


def state(out: Path) -> dict[str, dict]:
    return json.loads((out / ".tinker-sync.json").read_text())["checkpoints"]


def fetched(server) -> list[str]:
    """The checkpoints whose bytes were fetched (archive requests to the API)."""
    return [r.path for r in server.requests if r.path.endswith("/archive") and r.path.startswith("/api/")]


@pytest.fixture(autouse=True)
def no_violations(tinker_server):
    yield
    assert tinker_server.violations == []


def test_a_cron_loop_mirrors_a_run_that_gains_checkpoints(tinker_server, tmp_path):
    out = tmp_path / "mirror"
    first = [add(tinker_server, "step-0100", seed=1), add(tinker_server, "step-0200", seed=2)]
    codes, downloaded = [], []
    for new in [None, None, "step-0300", None, "step-0400"]:  # between runs, the run gains checkpoints
        if new is not None:
            first.append(add(tinker_server, new, seed=len(first) + 1))
        result = sync_cli(tinker_server, out, "--format", "json", "--quiet")
        codes.append(result.returncode)
        report = json.loads(result.stdout)
        downloaded.append([d["checkpoint_path"].rsplit("/", 1)[1] for d in report["downloaded"]])
        assert result.stderr == ""  # --quiet: nothing for cron to mail unless something failed
    assert codes == [EXIT_SYNCED, 0, EXIT_SYNCED, 0, EXIT_SYNCED]
    assert downloaded == [["step-0100", "step-0200"], [], ["step-0300"], [], ["step-0400"]]
    assert sorted(state(out)) == sorted(first)
    for i, path in enumerate(first, 1):
        assert tree_hashes(out / f"{RUN}_weights_{path.rsplit('/', 1)[1]}") == expected_files(i, MiB // 2, 2)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".tinker-sync.json", *(f"{RUN}_weights_{p.rsplit('/', 1)[1]}" for p in first)]
    )
    table = sync_cli(tinker_server, out)  # a table run with nothing to do prints nothing on stdout
    assert (table.returncode, table.stdout) == (0, "")
    assert "nothing to do (4 current)" in table.stderr


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["a", "b", "c", "x"]),
        ({"kinds": ["weights"]}, ["a", "b", "c"]),
        ({"kinds": ["external_weights"]}, ["x"]),
        ({"latest": 2}, ["c", "x"]),
        ({"kinds": ["weights"], "latest": 1}, ["c"]),
        ({"since": "b"}, ["b", "c", "x"]),
    ],
)
def test_selection_by_kind_count_and_time(client, tinker_server, tmp_path, options, expected):
    for name in ("a", "b", "c"):
        add(tinker_server, name)
    add(tinker_server, "x", kind="external_weights")
    add(tinker_server, "s", kind="sampler_weights")  # never downloadable: never selected
    if "since" in options:
        stamp = tinker_server.checkpoint(f"tinker://{RUN}/weights/{options['since']}")["time"]
        options = {**options, "since": datetime.fromisoformat(stamp)}
    report = client.checkpoints.sync(RUN, tmp_path, **options)
    assert report.status == "synced"
    assert sorted(d.checkpoint_path.rsplit("/", 1)[1] for d in report.downloaded) == expected


def test_a_sampler_kind_is_refused_before_anything_happens(client, tinker_server, tmp_path):
    with pytest.raises(ValueError, match="cannot be downloaded"):
        client.checkpoints.sync(RUN, tmp_path / "m", kinds=["sampler_weights"])
    assert not (tmp_path / "m").exists()


def test_a_second_sync_of_a_held_mirror_does_nothing(tinker_server, tmp_path):
    out = tmp_path / "mirror"
    out.mkdir()
    add(tinker_server, "a")
    with target_lock(out / ".tinker-sync.lock"):  # another sync (flock: per open file)
        result = sync_cli(tinker_server, out, "--format", "json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["status"] == "locked" and f"pid {os.getpid()}@" in report["locked_by"]
    assert fetched(tinker_server) == [] and sorted(p.name for p in out.iterdir()) == []


def test_two_overlapping_syncs_never_duplicate_work(tinker_server, tmp_path):
    out = tmp_path / "mirror"
    for i in range(3):
        add(tinker_server, f"step-{i}", seed=i, size=MiB)
    tinker_server.rate_limit = 2 * MiB  # per connection: the first sync is still at it when we look
    first = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync", "checkpoint", "sync", RUN, "-o", str(out), "-q"],
        env=cli_env(tinker_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The first sync holds the mirror's lock before it fetches any bytes. Stopped then (SIGSTOP), it
        # holds it for as long as the second sync takes, however slow the machine: no race on the clock.
        _wait_for(lambda: any(r.path.startswith("/signed/") for r in tinker_server.requests), first)
        first.send_signal(signal.SIGSTOP)
        try:
            second = sync_cli(tinker_server, out, "--format", "json")
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 0 and json.loads(second.stdout)["status"] == "locked"
        stdout, stderr = first.communicate(timeout=60)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == EXIT_SYNCED, stderr
    assert sorted(fetched(tinker_server)) == sorted(set(fetched(tinker_server)))  # each fetched once
    assert len(state(out)) == 3


def _wait_for(condition, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the sync ended first"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_killed_sync_resumes_with_what_is_missing(tinker_server, tmp_path):
    out = tmp_path / "mirror"
    paths = [add(tinker_server, f"step-{i}", seed=i, size=MiB) for i in range(4)]
    tinker_server.rate_limit = 4 * MiB
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync", "checkpoint", "sync", RUN, "-o", str(out), "-q"],
        env=cli_env(tinker_server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: (out / ".tinker-sync.json").exists() and len(state(out)) >= 1, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = state(out)
    assert 1 <= len(kept) < 4
    tinker_server.rate_limit = None
    tinker_server.clear()
    result = sync_cli(tinker_server, out, "--format", "json", "-q")
    assert result.returncode == EXIT_SYNCED, result.stderr
    again = sorted(d["checkpoint_path"] for d in json.loads(result.stdout)["downloaded"])
    assert again == sorted(set(paths) - set(kept))  # only what the killed run had not finished
    assert sorted(state(out)) == sorted(paths)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".tinker-sync.json"]


def test_deleted_on_the_server_kept_until_prune(client, tinker_server, tmp_path):
    out = tmp_path / "mirror"
    keep, drop = add(tinker_server, "keep"), add(tinker_server, "drop", seed=2)
    (out / "mine").mkdir(parents=True)  # the user's own files are never touched
    assert client.checkpoints.sync(RUN, out).status == "synced"
    client.checkpoints.delete(drop)
    report = client.checkpoints.sync(RUN, out)
    assert (report.status, report.gone, report.pruned) == ("nothing to do", [drop], [])
    assert (out / f"{RUN}_weights_drop").is_dir()
    result = sync_cli(tinker_server, out, "--prune")
    assert result.returncode == EXIT_SYNCED, result.stderr
    assert "pruned" in result.stdout and drop in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [".tinker-sync.json", "mine", f"{RUN}_weights_keep"]
    assert sorted(state(out)) == [keep]


def test_a_partial_failure_keeps_the_others_and_says_so(tinker_server, tmp_path):
    out = tmp_path / "mirror"
    good = add(tinker_server, "good")
    tinker_server.add_hostile_archive(f"tinker://{RUN}/weights/bad", "symlink")
    result = sync_cli(tinker_server, out, "--format", "json", "-q")
    assert result.returncode == EXIT_PARTIAL
    report = json.loads(result.stdout)
    assert [d["checkpoint_path"] for d in report["downloaded"]] == [good]
    assert [f["checkpoint_path"] for f in report["failed"]] == [f"tinker://{RUN}/weights/bad"]
    assert result.stderr.startswith(f"tinker-sync: error: tinker://{RUN}/weights/bad: ")
    assert len(result.stderr.splitlines()) == 1
    assert sorted(state(out)) == [good]
    assert sync_cli(tinker_server, out, "-q").returncode == EXIT_PARTIAL  # tried again, still failing


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        (["--since", "yesterday"], 2, "expected an ISO 8601 time"),
        (["--since", "2025-06-15Tz"], 2, "expected an ISO 8601 time"),
        (["--latest", "0"], 2, "expected a positive integer"),
        (["--kind", "sampler_weights"], 2, "invalid choice"),
    ],
)
def test_usage_errors(tinker_server, tmp_path, args, code, stderr):
    result = sync_cli(tinker_server, tmp_path, *args)
    assert result.returncode == code and stderr in result.stderr


def test_an_unknown_run_is_an_error_that_leaves_no_mirror(tinker_server, tmp_path):
    out = tmp_path / "mirror" / "of" / "run"
    result = subprocess.run(
        [sys.executable, "-m", "tinker_sync", "checkpoint", "sync", "no-such-run", "-o", str(out)],
        env=cli_env(tinker_server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stderr.startswith("tinker-sync: error: Error code: 404")
    assert not out.exists()  # no empty directory left as if synced (parents made on the way may stay)


def test_an_unknown_run_leaves_a_mirror_that_was_there_as_it_was(client, tinker_server, tmp_path):
    (tmp_path / "mine.txt").write_text("kept")
    with pytest.raises(NotFoundError):
        client.checkpoints.sync("no-such-run", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_a_checkpoint_saved_again_under_its_name_is_replaced_and_one_already_there_adopted(
    client, tinker_server, tmp_path
):
    out = tmp_path / "mirror"
    path = add(tinker_server, "final", seed=1)
    client.checkpoints.download(path, out)  # downloaded by hand before the first sync
    report = client.checkpoints.sync(RUN, out)
    assert (report.status, report.current) == ("nothing to do", [path])  # adopted, not fetched again
    assert len(fetched(tinker_server)) == 1
    add(tinker_server, "final", seed=9)  # saved again: a new time
    report = client.checkpoints.sync(RUN, out)
    assert [d.checkpoint_path for d in report.downloaded] == [path]
    assert tree_hashes(out / f"{RUN}_weights_final") == expected_files(9, MiB // 2, 2)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"latest": 0}, ValueError, "latest must be a positive integer"),
        ({"latest": -1}, ValueError, "latest must be a positive integer"),
        ({"latest": True}, ValueError, "latest must be a positive integer"),
        ({"latest": 1.5}, ValueError, "latest must be a positive integer"),
        ({"latest": "2"}, ValueError, "latest must be a positive integer"),
        ({"since": "yesterday"}, ValueError, "since must be an ISO 8601 time"),
        ({"since": 1700000000}, TypeError, "since must be a datetime or an ISO 8601 string"),
        ({"kinds": ["bogus"]}, ValueError, "Unknown checkpoint kind 'bogus'"),
        ({"connections": 0}, ValueError, "connections must be a positive integer or 'auto'"),
    ],
)
def test_bad_arguments_are_refused_clearly_before_anything_happens(
    client, tinker_server, tmp_path, options, error, match
):
    add(tinker_server, "a")
    with pytest.raises(error, match=match):
        client.checkpoints.sync(RUN, tmp_path / "m", **options)
    assert not (tmp_path / "m").exists() and fetched(tinker_server) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"kinds": "weights"}, ["a", "b"]),  # one kind as a string, not its letters
        ({"since": "2000-01-01T00:00:00Z"}, ["a", "b", "x"]),  # an ISO string, as on the command line
        ({"since": "2000-01-01T00:00:00z"}, ["a", "b", "x"]),
        ({"since": " 2999-01-01 00:00:00Z "}, []),
        ({"since": "2000-01-01"}, ["a", "b", "x"]),
        ({"since": datetime(2000, 1, 1).date()}, ["a", "b", "x"]),
        ({"since": "2999-01-01T00:00:00+02:00"}, []),
        ({"since": datetime(2999, 1, 1)}, []),  # naive: UTC
    ],
)
def test_kinds_and_since_in_the_forms_a_user_writes(client, tinker_server, tmp_path, options, expected):
    add(tinker_server, "a")
    add(tinker_server, "b")
    add(tinker_server, "x", kind="external_weights")
    report = client.checkpoints.sync(RUN, tmp_path, **options)
    assert sorted(d.checkpoint_path.rsplit("/", 1)[1] for d in report.downloaded) == expected


def test_a_listing_whose_times_have_no_zone_is_read_as_utc(client, tinker_server, tmp_path, monkeypatch):
    """A server time without a zone (decoded naive) is compared, sorted and recorded as UTC, never
    raising TypeError against an aware ``since``."""
    old, new = add(tinker_server, "old"), add(tinker_server, "new")
    listing = client.checkpoints.list_for_run

    def naive(run_id):
        found = listing(run_id)
        for checkpoint in found.checkpoints:
            checkpoint.time = checkpoint.time.astimezone(UTC).replace(tzinfo=None)
        return found

    monkeypatch.setattr(client.checkpoints, "list_for_run", naive)
    since = datetime.fromisoformat(tinker_server.checkpoint(new)["time"])
    report = client.checkpoints.sync(RUN, tmp_path, since=since)
    assert [d.checkpoint_path for d in report.downloaded] == [new]
    report = client.checkpoints.sync(RUN, tmp_path, latest=2)
    assert ([d.checkpoint_path for d in report.downloaded], report.current) == ([old], [new])


def _remove_a_file(target: Path) -> None:
    sorted(p for p in target.rglob("*") if p.is_file() and p.stat().st_size)[0].unlink()


def _cut_a_file(target: Path) -> None:
    with open(sorted(p for p in target.rglob("*") if p.is_file() and p.stat().st_size)[0], "r+b") as f:
        f.truncate(10)


def _remove_the_directory(target: Path) -> None:
    import shutil

    shutil.rmtree(target)


@pytest.mark.parametrize("kind", ["weights", "external_weights"])
@pytest.mark.parametrize("damage", [_remove_a_file, _cut_a_file, _remove_the_directory])
def test_a_checkpoint_damaged_on_disk_after_its_sync_is_downloaded_again(
    client, tinker_server, tmp_path, kind, damage
):
    """The state says complete, the disk says otherwise: the disk wins, and the next sync repairs it
    (the others stay current)."""
    out = tmp_path / "mirror"
    hurt, fine = add(tinker_server, "hurt", kind=kind, seed=3), add(tinker_server, "fine", kind=kind, seed=4)
    assert client.checkpoints.sync(RUN, out).status == "synced"
    target = out / f"{RUN}_{kind}_hurt"
    damage(target)
    report = client.checkpoints.sync(RUN, out)
    assert (report.status, [d.checkpoint_path for d in report.downloaded], report.current) == (
        "synced",
        [hurt],
        [fine],
    )
    assert tree_hashes(target) == expected_files(3, MiB // 2, 2)
    assert client.checkpoints.sync(RUN, out).status == "nothing to do"


@pytest.mark.parametrize(
    "saved",
    [
        b"garbage{",
        b"\xff\xfe",
        b"null",
        b"[]",
        b'{"checkpoints": [1, 2]}',
        b'{"checkpoints": "x"}',
        b'{"checkpoints": {"x": 1, "tinker://run-7/weights/a": {"dir": "../../etc"}}}',
    ],
)
def test_a_state_file_that_is_not_a_state_starts_afresh_and_keeps_what_is_complete(
    tinker_server, tmp_path, saved
):
    out = tmp_path / "mirror"
    path = add(tinker_server, "a")
    assert sync_cli(tinker_server, out, "-q").returncode == EXIT_SYNCED
    (out / ".tinker-sync.json").write_bytes(saved)
    result = sync_cli(tinker_server, out, "--format", "json", "-q")
    assert (result.returncode, json.loads(result.stdout)["current"]) == (0, [path]), result.stderr
    assert sorted(state(out)) == [path]  # rewritten whole: the directory there was adopted
    assert len(fetched(tinker_server)) == 1
