"""Mirroring survives a bad listing and a bad state file (``checkpoints.sync``, ``checkpoint sync``).

The listing comes over a real socket from a front server (tests/_front.py) that alters the mock's
own listing: malformed entries, another run's, names too long for the file system, duplicates. The
mirror's directory names are injective, and the state file may hold anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import _zygote
import msgspec
import pytest
from _front import Front
from _helpers import client_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinker_sync import Client
from tinker_sync.cli import EXIT_PARTIAL, EXIT_SYNCED
from tinker_sync.resources._paths import KINDS, TinkerPath
from tinker_sync.testing.archives import expected_files

API_KEY = "tml-test-key"
RUN = "run-7"
LISTING = f"/api/v1/training_runs/{RUN}/checkpoints"
KiB = 1 << 10


def add(server, name: str, *, run: str = RUN, kind: str = "weights", seed: int = 1) -> str:
    path = f"tinker://{run}/{kind}/{name}"
    server.add_checkpoint(path, size=64 * KiB, seed=seed, n_files=2)
    return path


def tree(root: Path) -> dict[str, str]:
    """Each file under ``root``: its sha256, as ``expected_files`` gives it."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def names(out: Path) -> list[str]:
    """What the mirror holds, but its lock file (kept or not, as the lock does)."""
    return sorted(p.name for p in out.iterdir() if p.name != ".tinker-sync.lock")


def fetched(server) -> list[str]:
    return [r.path for r in server.requests if r.path.endswith("/archive") and r.path.startswith("/api/")]


def cli(url: str, out: Path, *args: str, run: str = RUN) -> subprocess.CompletedProcess[str]:
    return _zygote.run(
        ["checkpoint", "sync", run, "-o", str(out), *args], client_env(API_KEY, url), None, 120
    )


def with_entries(*extra: dict, keep: bool = True):
    """A listing answer: the mock's own entries (when ``keep``) plus ``extra`` raw entries."""

    def answer(query, upstream):
        listing = json.loads(upstream(LISTING))
        listing["checkpoints"] = (listing["checkpoints"] if keep else []) + list(extra)
        return 200, json.dumps(listing).encode()

    return answer


def entry(tinker_path: str, time: str = "2025-01-01T00:00:00Z", size: int | None = 64 * KiB) -> dict:
    return {
        "checkpoint_id": "weights/x",
        "checkpoint_type": "training",
        "time": time,
        "tinker_path": tinker_path,
        "training_run_id": RUN,
        "size_bytes": size,
        "public": False,
    }


# -- a malformed entry is one failure; the others go on ---------------------------------------------

HOSTILE = {
    "dotdot": f"tinker://{RUN}/weights/..",
    "dot": f"tinker://{RUN}/weights/.",
    "pct_dotdot": f"tinker://{RUN}/weights/%2e%2e",
    "double_pct_dotdot": f"tinker://{RUN}/weights/%252e%252E",
    "dotdot_run": "tinker://../weights/a",
    "nul": f"tinker://{RUN}/weights/a\x00b",
    "newline": f"tinker://{RUN}/weights/a\nb",
    "extra_slash": f"tinker://{RUN}/weights/a/b",
    "double_slash": f"tinker://{RUN}//weights/a",
    "trailing_slash": f"tinker://{RUN}/weights/a/",
    "backslash": f"tinker://{RUN}/weights/a\\..\\b",
    "pct_slash": f"tinker://{RUN}/weights/..%2Fescape",
    "empty_name": f"tinker://{RUN}/weights/",
    "unknown_kind": f"tinker://{RUN}/blobs/a",
    "no_scheme": f"{RUN}/weights/a",
    "http": "http://127.0.0.1:9/x",
    "empty": "",
    "other_run": "tinker://run-8/weights/a",
    "other_run_dotted": "tinker://run-7./weights/a",
    "too_long_name": f"tinker://{RUN}/weights/" + "n" * 300,
    "too_long_with_room": f"tinker://{RUN}/weights/" + "n" * (255 - len(f"{RUN}_weights_") - 5),
    "too_long_utf8": f"tinker://{RUN}/weights/" + "é" * 120,
    "fullwidth_dotdot": f"tinker://{RUN}/weights/\uff0e\uff0e",
}


@pytest.mark.parametrize("hostile", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_bad_entry_is_one_failure_and_the_others_are_mirrored(client, tinker_server, tmp_path, hostile):
    good = [add(tinker_server, "a", seed=1), add(tinker_server, "b", seed=2)]
    out = tmp_path / "mirror"
    with Front(tinker_server.url, {LISTING: with_entries(entry(hostile))}) as front:
        with Client(api_key=API_KEY, base_url=front.url) as hostile_client:
            report = hostile_client.checkpoints.sync(RUN, out)
        assert report.status == "partial failure"
        assert sorted(d.checkpoint_path for d in report.downloaded) == good
        assert [f.checkpoint_path for f in report.failed] == [hostile]
        assert report.failed[0].error  # says why, in one line
        assert "\n" not in report.failed[0].error
        # Nothing outside the mirror, nothing but the two checkpoints and the mirror's own files in it.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]
        assert names(out) == [".tinker-sync.json", f"{RUN}_weights_a", f"{RUN}_weights_b"]
        # The next run: the same failure, and nothing fetched again.
        with Client(api_key=API_KEY, base_url=front.url) as hostile_client:
            again = hostile_client.checkpoints.sync(RUN, out)
        assert (again.status, sorted(again.current)) == ("partial failure", good)
        assert [f.checkpoint_path for f in again.failed] == [hostile]
    assert len(fetched(tinker_server)) == 2


def test_a_listing_of_nothing_but_bad_entries_fails_each_and_creates_nothing_else(tinker_server, tmp_path):
    out = tmp_path / "mirror"
    entries = [entry(p) for p in HOSTILE.values()]
    with Front(tinker_server.url, {LISTING: with_entries(*entries, keep=False)}) as front:
        add(tinker_server, "unused")
        result = cli(front.url, out, "--format", "json", "-q")
    assert result.returncode == EXIT_PARTIAL, result.stderr
    failed = [f["checkpoint_path"] for f in json.loads(result.stdout)["failed"]]
    assert sorted(failed) == sorted(HOSTILE.values())
    assert names(out) in ([], [".tinker-sync.json"])
    assert fetched(tinker_server) == []


# -- an entry listed twice: fetched once, the newest wins, current next time ------------------------

TWICE = {
    "older_copy_after": (-86400, "after"),
    "older_copy_before": (-86400, "before"),
    "newer_copy_after": (86400, "after"),
    "newer_copy_before": (86400, "before"),
    "same_time_after": (0, "after"),
    "same_time_before": (0, "before"),
}


@pytest.mark.parametrize(("shift", "where"), TWICE.values(), ids=TWICE.keys())
def test_an_entry_listed_twice_is_fetched_once_and_stays_current(
    client, tinker_server, tmp_path, shift, where
):
    from datetime import datetime, timedelta

    path = add(tinker_server, "a", seed=5)
    other = add(tinker_server, "b", seed=6)
    real = tinker_server.checkpoint(path)
    when = datetime.fromisoformat(real["time"].replace("Z", "+00:00")) + timedelta(seconds=shift)
    copy = {**real, "time": when.isoformat()}

    def answer(query, upstream):
        listing = json.loads(upstream(LISTING))
        listing["checkpoints"] = (
            [copy, *listing["checkpoints"]]
            if where == "before"
            else [
                *listing["checkpoints"],
                copy,
            ]
        )
        return 200, json.dumps(listing).encode()

    out = tmp_path / "mirror"
    with (
        Front(tinker_server.url, {LISTING: answer}) as front,
        Client(api_key=API_KEY, base_url=front.url) as c,
    ):
        first = c.checkpoints.sync(RUN, out)
        assert first.status == "synced" and first.failed == []
        assert sorted(d.checkpoint_path for d in first.downloaded) == sorted([path, other])
        state = json.loads((out / ".tinker-sync.json").read_text())["checkpoints"]
        newest = max(when, datetime.fromisoformat(real["time"].replace("Z", "+00:00")))
        assert datetime.fromisoformat(state[path]["time"]) == newest
        second = c.checkpoints.sync(RUN, out)
        assert (second.status, sorted(second.current), second.downloaded) == (
            "nothing to do",
            sorted([path, other]),
            [],
        )
    assert len(fetched(tinker_server)) == 2
    assert tree(out / f"{RUN}_weights_a") == expected_files(5, 64 * KiB, 2)


# -- directory names are injective ------------------------------------------------------------------

COLLIDING = {
    "kind_in_run_and_name": ("tinker://a/weights/b_weights_c", "tinker://a_weights_b/weights/c"),
    "external_in_name": ("tinker://a/weights/external_weights_c", "tinker://a_weights_external/weights/c"),
    "kinds_differ": ("tinker://a_external/weights/x", "tinker://a/external_weights/x"),
    "sampler_in_name": ("tinker://r/weights/s_sampler_weights_t", "tinker://r_weights_s/sampler_weights/t"),
    "escape_looks_like_run": ("tinker://a%5Fb/weights/c", "tinker://a_b/weights/c"),
    "escape_in_name": ("tinker://a/weights/x%2Elock", "tinker://a/weights/x.lock"),
    "escape_in_run": ("tinker://a%5fb/weights/c", "tinker://a_b/weights/c"),
    "escape_of_escape": ("tinker://a%255Fb/weights/c", "tinker://a%5Fb/weights/c"),
    "lock_file_of_another": ("tinker://r/weights/x.lock", "tinker://r/weights/x"),
    "partial_dir_of_another": ("tinker://.r/weights/x.partial", "tinker://r/weights/x"),
    "tmp_dir_of_another": ("tinker://.r/weights/x.tmp-abc", "tinker://r/weights/x"),
    "dotted_run": ("tinker://%2Er/weights/x", "tinker://.r/weights/x"),
}


LEFTOVER_PREFIXES = (".{}.tmp-", ".{}.old-", ".{}.pruned-")


def _exact_siblings(name: str) -> set[str]:
    """The names a download of directory ``name`` creates beside it, and its own."""
    return {name, f"{name}.lock", f".{name}.partial"}


def _taken_by(a: str, b: str) -> bool:
    """Whether a download or prune of directory ``b`` could take ``a``'s directory or files."""
    mine = _exact_siblings(a)
    return bool(mine & _exact_siblings(b)) or any(
        n.startswith(p.format(b)) for n in mine for p in LEFTOVER_PREFIXES
    )


@pytest.mark.parametrize(("first", "second"), COLLIDING.values(), ids=COLLIDING.keys())
def test_two_paths_never_share_a_directory_or_its_siblings(first, second):
    a, b = (TinkerPath(*p[len("tinker://") :].split("/", 2)) for p in (first, second))
    assert a.dir_name != b.dir_name
    assert not _taken_by(a.dir_name, b.dir_name) and not _taken_by(b.dir_name, a.dir_name)
    for path in (a, b):
        assert "/" not in path.dir_name and not path.dir_name.startswith(".")
        assert not path.dir_name.endswith(".lock")


component = st.text(st.sampled_from("ab_.%5F2Eef_wlock-"), min_size=1, max_size=12)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))  # a loaded CI machine
@given(component, st.sampled_from(KINDS), component, component, st.sampled_from(KINDS), component)
def test_dir_names_are_injective(run1, kind1, name1, run2, kind2, name2):
    a, b = TinkerPath(run1, kind1, name1), TinkerPath(run2, kind2, name2)
    if a != b:
        assert a.dir_name != b.dir_name
    assert not a.dir_name.startswith(".") and not a.dir_name.endswith(".lock")


DOWNLOADABLE_PAIRS = ["kind_in_run_and_name", "external_in_name", "kinds_differ", "escape_looks_like_run"]


@pytest.mark.parametrize(
    ("first", "second"), [COLLIDING[k] for k in DOWNLOADABLE_PAIRS], ids=DOWNLOADABLE_PAIRS
)
def test_the_second_run_downloads_its_own_checkpoint_not_the_firsts(
    client, tinker_server, tmp_path, first, second
):
    """Two runs mirrored into one directory: each gets its own files, neither adopts the other's."""
    out = tmp_path / "mirror"
    tinker_server.add_checkpoint(first, size=64 * KiB, seed=11, n_files=2)
    tinker_server.add_checkpoint(second, size=64 * KiB, seed=12, n_files=2)
    runs = [p[len("tinker://") :].split("/")[0] for p in (first, second)]
    reports = [client.checkpoints.sync(run, out) for run in runs]
    for report, path in zip(reports, (first, second), strict=True):
        assert [d.checkpoint_path for d in report.downloaded] == [path] and report.current == []
    a, b = (TinkerPath(*p[len("tinker://") :].split("/", 2)) for p in (first, second))
    assert tree(out / a.dir_name) == expected_files(11, 64 * KiB, 2)
    assert tree(out / b.dir_name) == expected_files(12, 64 * KiB, 2)
    assert all(client.checkpoints.sync(run, out).status == "nothing to do" for run in runs)


def test_a_checkpoint_and_its_lock_namesake_are_both_mirrored(client, tinker_server, tmp_path):
    paths = [
        add(tinker_server, "x", seed=1),
        add(tinker_server, "x.lock", seed=2),
        add(tinker_server, "x.partial", seed=3),
    ]
    report = client.checkpoints.sync(RUN, tmp_path)
    assert (report.status, sorted(d.checkpoint_path for d in report.downloaded)) == ("synced", sorted(paths))
    assert client.checkpoints.sync(RUN, tmp_path).status == "nothing to do"


def test_a_directory_replaced_after_its_sync_is_not_taken_for_it(client, tinker_server, tmp_path):
    """The state records the directory's identity: another directory put in its place (same file
    count and sizes) is downloaded again."""
    path = add(tinker_server, "a", seed=3)
    assert client.checkpoints.sync(RUN, tmp_path).status == "synced"
    target = tmp_path / f"{RUN}_weights_a"
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    for rel in tree(target):
        (impostor / rel).parent.mkdir(parents=True, exist_ok=True)
        (impostor / rel).write_bytes(b"\0" * (target / rel).stat().st_size)
    import shutil

    shutil.rmtree(target)
    os.rename(impostor, target)
    report = client.checkpoints.sync(RUN, tmp_path)
    assert [d.checkpoint_path for d in report.downloaded] == [path]
    assert tree(target) == expected_files(3, 64 * KiB, 2)


# -- any state file: start afresh with a warning ----------------------------------------------------

DEEP = 200_000
STATES = {
    "deep_list": b"[" * DEEP + b"]" * DEEP,
    "deep_dict": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep_under_checkpoints": b'{"checkpoints": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "deep_record": b'{"checkpoints": {"tinker://run-7/weights/a": '
    + b'{"x":' * DEEP
    + b"1"
    + b"}" * DEEP
    + b"}}",
    "unclosed_deep": b"[" * DEEP,
    "huge_int": b'{"checkpoints": {"tinker://run-7/weights/a": {"dir": "run-7_weights_a", "bytes": '
    + b"9" * 100_000
    + b"}}}",
    "huge_float": b'{"checkpoints": {"tinker://run-7/weights/a": {"dir": "run-7_weights_a", "bytes": 1e999}}}',
    "nan": b'{"checkpoints": {"tinker://run-7/weights/a": {"dir": "run-7_weights_a", "files": NaN}}}',
    "lone_surrogate": b'{"checkpoints": {"tinker://run-7/weights/\\ud800": {"dir": "x"}}}',
    "empty_file": b"",
    "bom": b'\xef\xbb\xbf{"checkpoints": {}}',
    "string": b'"checkpoints"',
    "number": b"42",
    "true": b"true",
    "null": b"null",
    "list_of_states": b'[{"checkpoints": {}}]',
    "checkpoints_null": b'{"checkpoints": null}',
    "checkpoints_number": b'{"checkpoints": 3}',
    "record_list": b'{"checkpoints": {"tinker://run-7/weights/a": ["run-7_weights_a"]}}',
    "record_wrong_types": b'{"checkpoints": {"tinker://run-7/weights/a": {"dir": "run-7_weights_a", '
    b'"time": [1], "size_bytes": {}, "files": "2", "bytes": null, "inode": "x"}}}',
    "record_other_dir": b'{"checkpoints": {"tinker://run-7/weights/a": {"dir": "run-7_weights_b"}}}',
    "record_bad_path": b'{"checkpoints": {"tinker://run-7/weights/..": {"dir": "run-7_weights_.."}}}',
    "utf16": '{"checkpoints": {}}'.encode("utf-16"),
    "binary": bytes(range(256)) * 4,
    "trailing_garbage": b'{"checkpoints": {}} x',
}


@pytest.mark.parametrize("saved", STATES.values(), ids=STATES.keys())
def test_any_state_file_means_start_afresh_never_a_crash(client, tinker_server, tmp_path, saved):
    out = tmp_path / "mirror"
    path = add(tinker_server, "a", seed=4)
    assert client.checkpoints.sync(RUN, out).status == "synced"
    (out / ".tinker-sync.json").write_bytes(saved)
    result = cli(tinker_server.url, out, "--format", "json")
    assert result.returncode in (0, EXIT_SYNCED), result.stderr  # adopted, or fetched again
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    shown = json.loads(result.stdout)
    assert shown["current"] + [d["checkpoint_path"] for d in shown["downloaded"]] == [path]
    state = msgspec.json.decode((out / ".tinker-sync.json").read_bytes())
    assert sorted(state["checkpoints"]) == [path]  # rewritten whole
    assert tree(out / f"{RUN}_weights_a") == expected_files(4, 64 * KiB, 2)
    assert len(fetched(tinker_server)) <= 2
    if saved in NOT_A_STATE:
        assert "starting afresh" in result.stderr  # the warning, by default


# The files with no state in them at all (the others are states, some with records it cannot use).
NOT_A_STATE = {
    v
    for k, v in STATES.items()
    if not k.startswith("record_")
    and k not in ("huge_int", "huge_float", "nan", "lone_surrogate", "bom", "utf16")
}
