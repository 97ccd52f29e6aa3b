"""Mirroring a training run's checkpoints into a directory, safe to start from cron every minute.

Files in the mirror ``DIR`` besides the checkpoints (``DIR/RUN_KIND_NAME``, as downloads name them):

    DIR/.tinker-sync.lock   an ``flock`` held for the whole sync (text: "pid N@host")
    DIR/.tinker-sync.json   the state: every checkpoint complete and verified in DIR, with the
                            server's time and size for it (so a checkpoint re-created under the
                            same name is downloaded again) and the number and total size of its
                            files (so one whose files were removed or cut is downloaded again)

Rules:
1. One sync per mirror at a time: a sync that finds the lock held does nothing and reports
   ``"locked"`` (it waits ``lock_wait`` seconds first), so overlapping cron runs never duplicate
   work. The kernel drops the lock of a killed sync.
2. Each checkpoint goes through ``Checkpoints.download`` (atomic, verified, resumed, locked); the
   state is rewritten atomically (never through a link) after each one, so a killed sync keeps
   what it finished and the next run downloads only the rest (an external-weights checkpoint
   resumes its partial files). A checkpoint that fails is reported; the others go on.
3. Nothing is deleted locally unless ``prune``: then only checkpoints the state lists (this
   mirror downloaded them) whose checkpoint the server no longer lists, moved aside first.
4. A bad listing costs only its bad entries: one that is malformed (``..``, a NUL, an extra ``/``),
   another run's, or too long a name for the file system is a failure in the report, and the
   others go on; one listed twice is fetched once (the newest). Directory names are injective
   (``TinkerPath.dir_name``), and a directory is current only while the state's record of it
   (its checkpoint, inode, file count and size) matches. A state file that is not one (any JSON,
   any depth, or none) means starting afresh, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from .._exceptions import DownloadLockedError, TinkerError
from .._files import directory, fsync_dir, open_regular, target_lock
from .._receiver import Progress
from ._archive import Notify
from ._paths import KINDS, parse_tinker_path
from .types import Checkpoint, SyncedCheckpoint, SyncFailure, SyncReport

__all__ = ["DOWNLOADABLE", "LOCK_NAME", "STATE_NAME", "Download", "SyncProgress", "parse_since", "sync"]

log = logging.getLogger("tinker_sync")

LOCK_NAME = ".tinker-sync.lock"
STATE_NAME = ".tinker-sync.json"
# Sampler weights cannot be downloaded (their training checkpoint can).
DOWNLOADABLE = ("weights", "external_weights")
# The longest file name (bytes) of the usual file systems, and the room a checkpoint directory's name
# leaves for its siblings: ``.NAME.pruned-XXXXXXXX``, ``.NAME.tmp-XXXXXXXX``, ``NAME.lock``.
NAME_MAX = 255
NAME_ROOM = 18

# progress(tinker_path, downloaded, total) for the checkpoint being downloaded.
SyncProgress = Callable[[str, int, "int | None"], None]


class Download(Protocol):
    """``Checkpoints.download``, as a sync calls it."""

    def __call__(
        self,
        tinker_path: str,
        output_dir: str | os.PathLike[str] = ...,
        *,
        force: bool = ...,
        progress: Progress | None = ...,
        notify: Notify | None = ...,
    ) -> Path: ...


def sync(
    run_id: str,
    output_dir: str | os.PathLike[str],
    *,
    listing: Callable[[str], Sequence[Checkpoint]],
    download: Download,
    kinds: Collection[str] | None = None,
    latest: int | None = None,
    since: datetime | date | str | None = None,
    prune: bool = False,
    progress: SyncProgress | None = None,
    notify: Notify | None = None,
    lock_wait: float = 0.0,
) -> SyncReport:
    """Bring ``output_dir`` up to date with the checkpoints of ``run_id`` (see the module docstring).

    ``listing(run_id)`` lists the run's checkpoints; ``download`` is ``Checkpoints.download``.
    """
    wanted = _kinds(kinds)
    if latest is not None and (type(latest) is not int or latest < 1):
        raise ValueError(f"latest must be a positive integer (1 or more), got {latest!r}")
    since = parse_since(since)
    out = directory(output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    report = SyncReport(run_id=run_id, output_dir=os.fspath(out), status="nothing to do")
    try:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(target_lock(out / LOCK_NAME, wait=lock_wait, what="sync of this mirror"))
            except DownloadLockedError as exc:
                report.status, report.locked_by = "locked", str(exc)
                return report
            _run(run_id, out, report, listing, download, wanted, latest, since, prune, progress, notify)
    except BaseException:
        if created:  # an error before anything was kept (an unknown run, say) leaves no empty mirror
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return report


def _kinds(kinds: Collection[str] | None) -> tuple[str, ...]:
    if kinds is None:
        return DOWNLOADABLE
    chosen = (kinds,) if isinstance(kinds, str) else tuple(dict.fromkeys(kinds))  # "weights": one kind
    for kind in chosen:
        if kind not in KINDS:
            raise ValueError(f"Unknown checkpoint kind {kind!r}; expected one of {', '.join(KINDS)}")
        if kind not in DOWNLOADABLE:
            raise ValueError(
                f"{kind} checkpoints cannot be downloaded; sync their training checkpoints (weights)"
            )
    return chosen


def parse_since(since: object) -> datetime | None:
    """``since`` as an aware time: a ``datetime``, a ``date`` (its midnight) or an ISO 8601 string
    (``2025-06-15T12:00:00Z``, ``z`` too); without a zone, UTC."""
    if since is None:
        return None
    if isinstance(since, str):
        text = since.strip()
        try:
            since = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("z", "Z") else text)
        except ValueError:
            raise ValueError(
                f"since must be an ISO 8601 time (2025-06-15T12:00:00Z), got {since!r}"
            ) from None
    elif isinstance(since, date) and not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day)
    if not isinstance(since, datetime):
        raise TypeError(f"since must be a datetime or an ISO 8601 string, got {type(since).__name__}")
    return _utc(since)


def _utc(when: datetime) -> datetime:
    """``when`` made aware: a naive time (a caller's, or a listing's without a zone) is UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _run(
    run_id: str,
    out: Path,
    report: SyncReport,
    listing: Callable[[str], Sequence[Checkpoint]],
    download: Download,
    kinds: tuple[str, ...],
    latest: int | None,
    since: datetime | None,
    prune: bool,
    progress: SyncProgress | None,
    notify: Notify | None,
) -> None:
    state = _State(out, _notifier(notify))
    listed = list(listing(run_id))
    selected = []
    for checkpoint, problem in _vet(run_id, listed):
        if problem is not None:
            log.warning("Skipping %r: %s", checkpoint.tinker_path, problem)
            report.failed.append(SyncFailure(checkpoint_path=checkpoint.tinker_path, error=problem))
        elif parse_tinker_path(checkpoint.tinker_path).kind in kinds:
            selected.append(checkpoint)
    if since is not None:
        selected = [c for c in selected if _utc(c.time) >= since]
    selected.sort(key=lambda c: _utc(c.time), reverse=True)
    if latest is not None:
        selected = selected[:latest]
    for checkpoint in reversed(selected):  # oldest first: a cut-short sync leaves the older complete
        path = checkpoint.tinker_path
        try:
            _one(checkpoint, out, state, report, download, progress, notify)
        except (TinkerError, OSError, ValueError, LookupError) as exc:
            log.warning("Could not download %s: %s", path, exc)
            report.failed.append(SyncFailure(checkpoint_path=path, error=" ".join(str(exc).split())))
    on_server = {c.tinker_path for c in listed}
    for path in sorted(p for p in state.entries if p not in on_server and parse_tinker_path(p).run == run_id):
        if not prune:
            report.gone.append(path)
            continue
        _remove_dir(out / parse_tinker_path(path).dir_name)
        state.remove(path)
        report.pruned.append(path)
    if report.failed:
        report.status = "partial failure"
    elif report.downloaded or report.pruned:
        report.status = "synced"


def _vet(run_id: str, listed: Sequence[Checkpoint]) -> list[tuple[Checkpoint, str | None]]:
    """Each listed checkpoint once (the newest of those listed twice, the first of equals), with
    why it cannot be mirrored, if it cannot: a malformed path, another run's, or a directory name
    too long for the file system (with room for its lock and temporary names)."""
    newest: dict[str, Checkpoint] = {}
    for checkpoint in listed:
        seen = newest.get(checkpoint.tinker_path)
        if seen is None or _utc(checkpoint.time) > _utc(seen.time):
            newest[checkpoint.tinker_path] = checkpoint
    vetted: list[tuple[Checkpoint, str | None]] = []
    for checkpoint in newest.values():
        try:
            path = parse_tinker_path(checkpoint.tinker_path)
        except ValueError as exc:
            vetted.append((checkpoint, f"malformed checkpoint path in the listing: {exc}"))
            continue
        if path.run != run_id:
            vetted.append((checkpoint, f"listed for training run {run_id!r} but belongs to {path.run!r}"))
        elif len(os.fsencode(path.dir_name)) + NAME_ROOM > NAME_MAX:
            vetted.append(
                (
                    checkpoint,
                    f"its directory name ({len(os.fsencode(path.dir_name))} bytes) is too long "
                    f"for the file system ({NAME_MAX - NAME_ROOM} bytes at most)",
                )
            )
        else:
            vetted.append((checkpoint, None))
    return vetted


def _one(
    checkpoint: Checkpoint,
    out: Path,
    state: _State,
    report: SyncReport,
    download: Download,
    progress: SyncProgress | None,
    notify: Notify | None,
) -> None:
    """Bring one checkpoint up to date in ``out`` (current, adopted or downloaded)."""
    path = checkpoint.tinker_path
    target = out / parse_tinker_path(path).dir_name
    record = state.entries.get(path)
    if record is not None and target.is_dir():
        if _current(record, checkpoint, target):
            report.current.append(path)
            return
        if _same_checkpoint(record, checkpoint, target):
            log.warning(
                "%s changed on disk since it was synced (a file removed or cut, or replaced): "
                "downloading it again",
                target,
            )
    if record is None and target.is_dir() and not target.is_symlink():
        # A download installs its directory only when complete, under a name no other path has.
        log.info("Adopting %s, already in %s", path, out)
        state.add(path, _record(checkpoint, target))
        report.current.append(path)
        return
    done = download(
        path,
        out,
        force=record is not None,  # a changed checkpoint replaces the old copy once complete
        progress=None if progress is None else _for(progress, path),
        notify=notify,
    )
    record = _record(checkpoint, done)
    state.add(path, record)
    report.downloaded.append(
        SyncedCheckpoint(checkpoint_path=path, destination=os.fspath(done), file_size_bytes=record["bytes"])
    )


def _notifier(notify: Notify | None) -> Notify:
    """A warning for the log and, when the caller listens, for ``notify`` (the CLI's stderr)."""

    def warn(message: str) -> None:
        log.warning("%s", message)
        if notify is not None:
            notify(message)

    return warn


def _for(progress: SyncProgress, path: str) -> Progress:
    def report(done: int, total: int | None) -> None:
        progress(path, done, total)

    return report


def _record(checkpoint: Checkpoint, target: Path) -> dict[str, Any]:
    """What the state keeps of a checkpoint complete in ``target``: the server's time and size for
    it, and how many files and bytes its directory holds (to notice one removed or cut later)."""
    return {**_listed(checkpoint, target), **_on_disk(target)}


def _listed(checkpoint: Checkpoint, target: Path) -> dict[str, Any]:
    return {
        "dir": target.name,
        "time": _utc(checkpoint.time).astimezone(UTC).isoformat(),
        "size_bytes": checkpoint.size_bytes,
    }


def _on_disk(target: Path) -> dict[str, int]:
    """The directory's identity (its inode: replaced, it is another) and the regular files under it
    (links not followed): their count and total size."""
    files = total = 0
    for root, _, names in os.walk(target):
        for name in names:
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode):
                files, total = files + 1, total + info.st_size
    return {"inode": os.lstat(target).st_ino, "files": files, "bytes": total}


def _same_checkpoint(record: dict[str, Any], checkpoint: Checkpoint, target: Path) -> bool:
    """Whether ``record`` is for the checkpoint the server lists now (not one saved again since)."""
    return all(record.get(k) == v for k, v in _listed(checkpoint, target).items())


def _current(record: dict[str, Any], checkpoint: Checkpoint, target: Path) -> bool:
    """Whether ``target`` still holds the checkpoint as the state recorded it complete: the same one
    on the server, and the same files on disk (a state written before it counted them: not checked)."""
    if not _same_checkpoint(record, checkpoint, target):
        return False
    return all(record.get(k, v) == v for k, v in _on_disk(target).items())


class _State:
    """``DIR/.tinker-sync.json``: the checkpoints complete in the mirror, rewritten atomically."""

    def __init__(self, out: Path, warn: Notify) -> None:
        self.path = out / STATE_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        try:
            with os.fdopen(open_regular(self.path, os.O_RDONLY), "rb") as f:
                saved = json.loads(f.read(64 << 20))
        except FileNotFoundError:
            return
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than the parser goes
            saved = None
        entries = saved.get("checkpoints") if isinstance(saved, dict) else None
        if not isinstance(entries, dict):  # not JSON, or JSON but not a state this module wrote
            warn(f"{self.path} is not a sync state; starting afresh (complete checkpoints are kept)")
            return
        for path, record in entries.items():
            try:
                if isinstance(record, dict) and record.get("dir") == parse_tinker_path(path).dir_name:
                    self.entries[path] = record
            except ValueError:
                continue  # never trust a name it could not have written itself

    def add(self, path: str, record: dict[str, Any]) -> None:
        self.entries[path] = record
        self._save()

    def remove(self, path: str) -> None:
        del self.entries[path]
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"version": 1, "checkpoints": self.entries}, indent=1, sort_keys=True)
        with os.fdopen(open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


def _remove_dir(target: Path) -> None:
    """Remove a checkpoint directory: renamed aside first (atomic), never following a link."""
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        log.warning("Not pruning %s: not a directory this mirror created", target)
        return
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.pruned-"))
    os.rename(target, aside / "checkpoint")
    shutil.rmtree(aside, ignore_errors=True)
