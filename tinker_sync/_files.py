"""The files beside a download's target, with no HTTP in them: the partial file, its sidecar, its
lock, and where a download goes.

Files next to a download's target ``dest``:

    dest.part        the bytes received so far (renamed to ``dest`` when complete and verified)
    dest.part.json   sidecar: {"url", "validator" (ETag or Last-Modified), "total", "checksums"}, and
                     for a download over several connections "ranges": the byte ranges written
    dest.lock        holds an exclusive ``fcntl.flock`` while a download of ``dest`` runs;
                     its text names the holder ("pid N@hostname")

Rules:
1. Nothing appears at ``dest`` until every byte arrived, the size and every
   checksum on offer matched, and the data was fsynced: then ``os.replace``
   (``PartFile.finish``, called by ``_receiver.Receiver`` and ``_ranges``).
   A failed, killed or interrupted download never leaves a file at ``dest``;
   an integrity failure removes ``.part`` and its sidecar.
2. These files live in a directory others may write to: they are opened only
   as regular files, never through a link (``open_regular``).
3. A sidecar pins a resume to one version of one resource (its validator);
   one this module did not write is ignored, and so is its ``.part``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ._checksums import CHECKSUM_HEADERS, checksums_from, hash_prefix, new_hasher, verify
from ._exceptions import DownloadIntegrityError, DownloadLockedError, InvalidRequestError
from ._observe import mask_url

__all__ = [
    "PartFile",
    "PartState",
    "check_destination",
    "check_disk_space",
    "destination",
    "directory",
    "fsync_dir",
    "open_regular",
    "remove",
    "target_lock",
]

log = logging.getLogger("tinker_sync")

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
LOCK_SUFFIX = ".lock"
# How long a second download of the same target waits for the first to finish.
LOCK_WAIT = 5.0
LOCK_POLL = 0.05


# -- opening files beside the target, never through links ------------------------------------------

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symbolic link and accepts only a regular file.

    The files beside a target (``.part``, its sidecar, ``.lock``) live in a
    directory others may write to: a link planted in their place must not
    make a download write (or read) somewhere else. ``O_NONBLOCK`` keeps a
    planted FIFO from blocking the open; regular files ignore it.

    Raises:
        OSError: ELOOP for a link, EINVAL for anything but a regular file.
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_ours(path, "is a symbolic link: a download never follows one", errno.ELOOP) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO with no reader, a directory
            raise _not_ours(path, "is not a regular file", errno.EINVAL) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_ours(path, "is not a regular file", errno.EINVAL)
    return fd


def _not_ours(path: Path, what: str, code: int) -> OSError:
    return OSError(code, f"{path} {what}; it was left untouched (remove it to download here)", str(path))


def refuse_odd_files(*paths: Path) -> None:
    """Raise OSError if any of ``paths`` is a link or anything but a regular file (a missing one is fine)."""
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            raise _not_ours(path, "is a symbolic link: a download never follows one", errno.ELOOP)
        if not stat.S_ISREG(mode):
            raise _not_ours(path, "is not a regular file", errno.EINVAL)


# -- the partial file and its sidecar ---------------------------------------------------------------


@dataclass
class PartState:
    """What the sidecar says of a ``.part``: enough to resume it, pinned to one version of one resource."""

    url: str
    validator: str
    total: int | None
    checksums: dict[str, str] = field(default_factory=dict)
    size: int = 0  # the ``.part``'s current size (not stored: read from the file)
    # For a ``.part`` written over several connections (preallocated to ``total``): the byte ranges
    # [start, end) written, sorted and disjoint; None for one written front to back (``size`` bytes).
    ranges: list[tuple[int, int]] | None = None

    @property
    def done(self) -> int:
        """Bytes of the resource the ``.part`` already holds."""
        return self.size if self.ranges is None else sum(end - start for start, end in self.ranges)

    def same_resource(self, url: str) -> bool:
        """Whether this sidecar is for ``url``'s resource.

        The query may differ (a signed URL is signed anew each time) when the
        resume is pinned by an ETag, which names one version of one resource; a
        Last-Modified date could match another resource's, so then the whole URL must.
        """
        if self.url == url:
            return True
        return self.url.partition("?")[0] == url.partition("?")[0] and self.validator.startswith('"')


def file_name(url: str) -> str:
    """The file name a URL names (its last path segment, percent-decoded), as ``curl -O`` takes it.

    Raises:
        InvalidRequestError: the URL's path names no usable file (``/``, ``..``, a hidden name, a
            separator once decoded).
    """
    path = url.split("#", 1)[0].split("?", 1)[0]
    path = path.split("://", 1)[1] if "://" in path else path
    name = unquote(path.partition("/")[2].rsplit("/", 1)[-1]) if "/" in path else ""
    if name in ("", ".", "..") or any(c in name for c in "/\\\x00") or name.startswith("."):
        raise InvalidRequestError(
            f"Cannot name a file after {mask_url(url)!r}: give a file path, not a directory"
        )
    return name


def destination(dest: str | os.PathLike[str], url: str) -> Path:
    """Where a download of ``url`` to ``dest`` goes: into ``dest`` under the URL's file name when
    ``dest`` is a directory (as ``curl -O`` / ``wget -P``), else ``dest`` itself. An empty
    ``dest`` is refused as ``open("")`` refuses it (not taken for ``"."``)."""
    if not os.fspath(dest):
        raise FileNotFoundError(errno.ENOENT, "Cannot save to '': an empty path names no file", "")
    path = Path(os.fspath(dest))
    return path / file_name(url) if os.path.isdir(path) else path  # False for a name too long


def directory(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` as a ``Path``; an empty one is refused (as ``os.makedirs("")`` refuses it),
    not taken for the current directory."""
    if not os.fspath(output_dir):
        raise FileNotFoundError(errno.ENOENT, "Cannot save to '': an empty path names no directory", "")
    return Path(os.fspath(output_dir))


def check_destination(dest: Path) -> None:
    """Report a destination that cannot be written before anything is sent or created.

    Raises:
        FileNotFoundError: its directory does not exist.
        NotADirectoryError: a file stands where a directory of its path should be.
        IsADirectoryError: ``dest`` itself is a directory.
        OSError: (``ENAMETOOLONG``) its name, or a name beside it (``.part.json.tmp``), is too long.
        PermissionError: its directory cannot be written.
    """
    parent = dest.parent if str(dest.parent) else Path(".")
    for part in (parent, *parent.parents):
        if os.path.lexists(part) and not part.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, f"Cannot save to {dest}: {part} is not a directory", str(dest)
            )
    if not parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"Cannot save to {dest}: the directory {parent} does not exist", str(dest)
        )
    if os.path.isdir(dest):
        raise IsADirectoryError(errno.EISDIR, f"Cannot save to {dest}: it is a directory", str(dest))
    longest = len(os.fsencode(dest.name + SIDECAR_SUFFIX + ".tmp"))  # the longest name beside it
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if longest > name_max:
        raise OSError(
            errno.ENAMETOOLONG,
            f"Cannot save to {dest}: its name is too long ({len(os.fsencode(dest.name))} bytes; with the "
            f"{SIDECAR_SUFFIX}.tmp beside it at most {name_max} bytes in {parent})",
            str(dest),
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"Cannot save to {dest}: {parent} is not writable", str(dest))


class PartFile:
    """The files beside one download's target: ``dest.part``, ``dest.part.json`` and ``dest.lock``."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.dest = Path(os.fspath(dest))
        self.part = Path(f"{self.dest}{PART_SUFFIX}")
        self.sidecar = Path(f"{self.dest}{SIDECAR_SUFFIX}")
        self.lock_path = Path(f"{self.dest}{LOCK_SUFFIX}")

    def __repr__(self) -> str:
        return f"<PartFile {self.part}>"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``dest.lock`` for the block (see ``target_lock``); a link or an odd file planted at the
        ``.part`` or its sidecar raises OSError before anything is read, written or removed."""
        check_destination(self.dest)
        with target_lock(self.lock_path):
            refuse_odd_files(self.part, self.sidecar, Path(f"{self.sidecar}.tmp"))
            yield

    def discard(self) -> None:
        """Remove the ``.part`` and its sidecar."""
        remove(self.part, self.sidecar)

    def load(self, url: str) -> PartState | None:
        """The state of a resumable, non-empty ``.part`` for ``url``, else None."""
        try:
            fd = open_regular(self.sidecar, os.O_RDONLY)
            with os.fdopen(fd, "rb") as f:
                saved = json.loads(f.read(1 << 20))
            size = os.lstat(self.part).st_size
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(saved, dict):
            return None
        url_saved, validator, total, checksums, ranges = (
            saved.get(k) for k in ("url", "validator", "total", "checksums", "ranges")
        )
        if not (isinstance(url_saved, str) and isinstance(validator, str)):
            return None
        if checksums is not None and not (
            isinstance(checksums, dict) and all(isinstance(v, str) for v in checksums.values())
        ):
            return None  # not a sidecar this module wrote: the bytes it lists cannot be trusted either
        state = PartState(
            url_saved,
            validator,
            total if isinstance(total, int) else None,
            checksums if isinstance(checksums, dict) else {},
            size,
        )
        if not state.same_resource(url):
            log.info("Not resuming %s: its sidecar is for another URL", self.part)
            return None
        if (total is not None and state.total is None) or (state.total is not None and size > state.total):
            return None
        if ranges is not None:
            state.ranges = _ranges_within(ranges, min(size, state.total or 0))
            if state.ranges is None:
                return None
        return state if state.done > 0 else None

    def save(
        self,
        url: str,
        validator: str | None,
        total: int | None,
        headers: Mapping[str, str],
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Write the sidecar for a ``.part`` starting at byte 0 of the resource (atomic), or with
        ``ranges`` for one written at several offsets at once.

        Without a validator nothing could pin a later resume to the same
        resource: then there is no sidecar (and the ``.part`` goes on failure).
        """
        if validator is None:
            remove(self.sidecar)
            return
        state: dict[str, Any] = {
            "url": url,
            "validator": validator,
            "total": total,
            "checksums": {name: headers[name] for name in CHECKSUM_HEADERS if headers.get(name)},
        }
        if ranges is not None:
            state["ranges"] = [list(r) for r in ranges]
        tmp = Path(f"{self.sidecar}.tmp")
        with os.fdopen(open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
            f.write(json.dumps(state))
        os.replace(tmp, self.sidecar)

    def finish(self) -> Path:
        """Rename the verified, fsynced ``.part`` into place and drop the sidecar."""
        os.replace(self.part, self.dest)
        fsync_dir(self.dest.parent)
        remove(self.sidecar)
        return self.dest

    def is_complete(
        self, state: PartState, total: int | None, expected_size: int | None, expected_sha256: str | None
    ) -> bool:
        """Whether the ``.part`` already holds the whole resource of ``total`` bytes, verified.

        For a 416 answered to ``Range: bytes=<part size>-``: only a checksum can
        prove the bytes are the resource's, so without one the answer is no.
        """
        if total is None or total != state.size or state.total not in (None, state.size) or state.ranges:
            return False
        if expected_size is not None and expected_size != state.size:
            return False
        checks = checksums_from({k.lower(): v for k, v in state.checksums.items()}, expected_sha256)
        if not checks:
            return False
        hashers = {c.algorithm: new_hasher(c.algorithm) for c in checks}
        with os.fdopen(open_regular(self.part, os.O_RDONLY), "rb") as f:
            hash_prefix(f, state.size, hashers.values())
        try:
            verify(self.dest, state.size, (), checks, hashers)
        except DownloadIntegrityError:
            return False
        return True


def _ranges_within(value: object, size: int) -> list[tuple[int, int]] | None:
    """A sidecar's ``ranges`` if they are sorted, disjoint ``[start, end]`` pairs within ``size`` bytes."""
    if not isinstance(value, list):
        return None
    ranges: list[tuple[int, int]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(type(x) is int for x in item)):
            return None
        start, end = item
        if not (0 <= start < end <= size) or (ranges and start < ranges[-1][1]):
            return None
        ranges.append((start, end))
    return ranges


# -- the lock -------------------------------------------------------------------------------------


@contextlib.contextmanager
def target_lock(path: Path, *, wait: float | None = None, what: str = "download") -> Iterator[None]:
    """Hold ``path`` (``dest.lock``) exclusively for the block.

    An ``fcntl.flock`` on the lock file: the kernel drops it when its holder
    exits, even after ``kill -9``, so a lock file left by a dead process is
    simply reclaimed. The file's text ("pid N@hostname") names the holder in
    the error a second download gets after waiting ``wait`` seconds
    (``LOCK_WAIT`` by default; ``what`` says what holds such locks).
    The file is removed on release; a waiter that then locks the removed
    file notices (its inode is no longer at ``path``) and tries again.
    """
    import fcntl  # POSIX only; imported here so the module imports anywhere

    wait = LOCK_WAIT if wait is None else wait
    deadline = time.monotonic() + wait
    while True:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise DownloadLockedError(
                    f"{path} is held by another {what} ({holder}); waited {wait:g} s"
                ) from None
            time.sleep(LOCK_POLL)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder had just removed: try the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}@{socket.gethostname()}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


# -- small helpers --------------------------------------------------------------------------------


def check_disk_space(dest: Path, needed: int) -> None:
    """Raise OSError(ENOSPC) when ``dest``'s file system has fewer than ``needed`` bytes free."""
    directory = dest.parent if str(dest.parent) else Path(".")
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"Not enough disk space for {dest}: need {needed} bytes, {free} free (short by {needed - free} bytes)",
        )


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename in it survives a crash (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(*paths: Path) -> None:
    """Remove files; a missing one is fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
