"""A checkpoint's target directory, all or nothing: filled in a private (0o700) temp directory
beside it and renamed into place when complete, the leftovers of killed runs removed.

Rules:
1. The target appears only complete: ``install`` renames the finished temp
   directory into place; with ``force`` an old target is removed only after that.
2. Temp directories are private while filled (an existing one is accepted
   only if it is ours, private and not a link) and ordinary (the umask's
   mode) once installed.
3. Leftovers (``.<target>.tmp-*``, ``.old-*``, ``.partial``) are removed
   only under the target's lock, so none of them belongs to a live run.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["check_target", "install", "private_dir", "remove", "remove_leftovers"]

log = logging.getLogger("tinker_sync")


def check_target(target: Path, force: bool) -> None:
    """Refuse an existing ``target`` unless ``force`` (FileExistsError, saying how to replace it)."""
    if os.path.lexists(target) and not force:
        raise FileExistsError(
            errno.EEXIST, f"{target} already exists (use force=True, or --force, to replace it)", str(target)
        )


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def remove_leftovers(target: Path, keep: str | None = None) -> None:
    """Remove temp directories of killed runs (we hold the lock, so none is live)."""
    prefixes = (f".{target.name}.tmp-", f".{target.name}.old-", f".{target.name}.partial")
    for entry in target.parent.iterdir():
        if entry.name != keep and entry.name.startswith(prefixes):
            log.info("Removing %s, left by an interrupted download", entry)
            remove(entry)


def private_dir(path: Path) -> None:
    """Create ``path`` 0o700, or accept an existing one only if it is ours, private and not a link."""
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise FileExistsError(
            errno.EEXIST, f"{path} exists and is not a private directory of ours", str(path)
        )
    log.info("Resuming the partial download in %s", path)


def install(tmp: Path, target: Path, force: bool) -> None:
    """Rename the complete ``tmp`` to ``target``; with ``force`` an old target goes only after that."""
    os.chmod(tmp, 0o777 & ~_umask())  # private while filled; an ordinary directory once done
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if not force:
        check_target(target, force)
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    moved = old / "previous"
    os.rename(target, moved)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(moved, target)
        remove(old)
        raise
    remove(old)
