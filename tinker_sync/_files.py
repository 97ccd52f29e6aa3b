"""The file pieces of a download, with no HTTP in them: partial file, sidecar, lock, checksums.

Files next to a download's target ``dest``:

    dest.part        the bytes received so far (renamed to ``dest`` when complete and verified)
    dest.part.json   sidecar: {"url", "validator" (ETag or Last-Modified), "total", "checksums"}, and
                     for a download over several connections "ranges": the byte ranges written
    dest.lock        holds an exclusive ``fcntl.flock`` while a download of ``dest`` runs;
                     its text names the holder ("pid N@hostname")

Rules:
1. Nothing appears at ``dest`` until every byte arrived, the size and every
   checksum on offer matched, and the data was fsynced: then ``os.replace``.
   A failed, killed or interrupted download never leaves a file at ``dest``;
   an integrity failure removes ``.part`` and its sidecar.
2. Memory is constant: a ``Receiver`` reads into a reused buffer, no bigger
   than its share of the process's read budget (``_buffers``), and writes and
   hashes it on the reading thread; with checksums to compute and no more
   downloads running than CPUs, a few buffers go to a worker thread instead
   (``_workers.Worker``), so that hashing overlaps the network reads.
3. The caller decides what the bytes are (which response, which offset); this
   module only stores, hashes, verifies and renames them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol
from urllib.parse import unquote

from . import _buffers
from ._exceptions import DownloadIntegrityError, DownloadLockedError, InvalidRequestError
from ._observe import mask_url
from ._workers import Worker

__all__ = [
    "Checksum",
    "PartFile",
    "PartState",
    "Progress",
    "ProgressThrottle",
    "Receiver",
    "check_destination",
    "checksums_from",
    "destination",
    "directory",
    "remove",
    "target_lock",
]

log = logging.getLogger("tinker_sync")

Progress = Callable[[int, "int | None"], None]

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
LOCK_SUFFIX = ".lock"
# How long a second download of the same target waits for the first to finish.
LOCK_WAIT = 5.0
LOCK_POLL = 0.05
# Progress is reported at most this often (seconds), or every 1% of the total.
PROGRESS_INTERVAL = 0.1
# Bytes read from the network per buffer, and buffers in flight per download:
# the reader fills one while the worker writes and hashes the others, so a
# download holds at most BUFFERS * buffer_size (1 MiB by default).
BUFFER_SIZE = 256 * 1024
BUFFERS = 4
# A buffer goes to the disk when full, or when it has waited this long (seconds): a slow body
# still reaches the file, and the progress callback, as it arrives.
COMMIT_INTERVAL = 0.1
# A worker thread hashes while the reader reads only when there is hashing to do (measured: one
# 1 GiB download with MD5 takes 2.3 s with it, 2.6 s without; with no checksum 1.2 s with it and
# 1.0 s without) and no more bodies are being read than CPUs (beyond, they are the parallelism:
# 1,000 downloads with a thread and 4 buffers each held 969 MB, inline 117 MB, and finished sooner).
THREADED_MAX = os.cpu_count() or 1
# Read size when hashing the existing bytes of a partial file before resuming.
HASH_READ_SIZE = 1 << 20
# The headers whose values the sidecar keeps, to verify a resumed file as a whole (with those
# saying whether the checksums describe the bytes served: see ``served_transformed``).
CHECKSUM_HEADERS = (
    "x-goog-hash",
    "content-digest",
    "digest",
    "etag",
    "content-encoding",
    "x-goog-stored-content-encoding",
    "warning",
)
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
ALGORITHM_NAMES = {"md5": "MD5", "sha256": "SHA-256", "crc32c": "CRC32C"}


# -- checksums ------------------------------------------------------------------------------------


class Checksum(NamedTuple):
    """One digest a file must have: algorithm (md5, sha256, crc32c), expected hex, where it came from."""

    algorithm: str
    expected: str
    source: str


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def have_crc32c() -> bool:
    """Whether CRC32C can be checked: it needs the optional ``google-crc32c`` package (``[crc32c]`` extra)."""
    try:
        import google_crc32c  # noqa: F401
    except ImportError:
        return False
    return True


class _CRC32C:
    """google-crc32c's Checksum, fed ``bytes`` (it refuses views; the copy costs a third of the CRC)."""

    def __init__(self) -> None:
        import google_crc32c  # only offered by checksums_from when importable

        self._checksum: Any = google_crc32c.Checksum()  # type: ignore[no-untyped-call]

    def update(self, data: bytes | memoryview, /) -> None:
        self._checksum.update(data if isinstance(data, bytes) else bytes(data))

    def digest(self) -> bytes:
        digest: bytes = self._checksum.digest()
        return digest


def new_hasher(algorithm: str) -> Hasher:
    if algorithm == "crc32c":
        return _CRC32C()
    return hashlib.new(algorithm)


def _b64_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value.strip().strip(":"), validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _items(value: str | None) -> list[tuple[str, str]]:
    """``a=1, b=2`` as [("a", "1"), ("b", "2")], names lower-cased."""
    found = []
    for part in (value or "").split(","):
        name, _, digest = part.partition("=")
        if part.strip():
            found.append((name.strip().lower(), digest))
    return found


def served_transformed(headers: Mapping[str, str]) -> str | None:
    """Why the bytes served are not the bytes the store keeps (its checksums then describe other
    bytes), or None.

    GCS decompresses an object stored with ``Content-Encoding: gzip`` for a
    client that does not accept gzip ("decompressive transcoding"): it says
    so with ``X-Goog-Stored-Content-Encoding`` and no ``Content-Encoding``,
    and its ``x-goog-hash`` stays the stored bytes'. A proxy that changed
    the body says ``Warning: 214``.
    """
    stored = (headers.get("x-goog-stored-content-encoding") or "identity").strip().lower()
    served = (headers.get("content-encoding") or "identity").strip().lower()
    if stored != "identity" and served != stored:
        return f"the store decoded its {stored} object on the way (X-Goog-Stored-Content-Encoding: {stored})"
    if any(warning.strip().startswith("214") for warning in (headers.get("warning") or "").split(",")):
        return "a proxy transformed the body (Warning: 214)"
    return None


def checksums_from(headers: Mapping[str, str], expected_sha256: str | None = None) -> list[Checksum]:
    """Every checksum on offer: ``x-goog-hash`` (md5, crc32c), ``Content-Digest`` / ``Digest``
    (sha-256, md5), an ETag that is a plain MD5, and the caller's ``expected_sha256``.

    CRC32C is left out, with a log line, when ``google-crc32c`` is not installed. The
    server's checksums are left out, with a warning, when the body is not the stored
    bytes they describe (``served_transformed``): such a file is saved unverified
    unless ``expected_sha256`` is given.

    Raises:
        ValueError: ``expected_sha256`` is not 64 hex digits.
    """
    transformed = served_transformed(headers)
    if transformed is not None:
        log.warning(
            "The server's checksums do not apply: %s; the file is verified only by expected_sha256, if given",
            transformed,
        )
        headers = {}
    found: list[Checksum] = []
    for name, value in _items(headers.get("x-goog-hash")):
        if name in ("md5", "crc32c") and (digest := _b64_hex(value)) is not None:
            found.append(Checksum(name, digest, f"x-goog-hash {name}"))
    for header in ("content-digest", "digest"):
        for name, value in _items(headers.get(header)):
            algorithm = {"sha-256": "sha256", "md5": "md5"}.get(name)
            if algorithm is not None and (digest := _b64_hex(value)) is not None:
                found.append(Checksum(algorithm, digest, f"{header.title()} {name}"))
    etag = (headers.get("etag") or "").strip()
    if (
        not any(c.algorithm == "md5" for c in found)
        and _HEX32.match(etag.strip('"'))
        and not etag.startswith("W/")
    ):
        found.append(Checksum("md5", etag.strip('"').lower(), "ETag"))
    if expected_sha256 is not None:
        value = expected_sha256.strip().lower()
        if not _HEX64.match(value):
            raise ValueError(f"expected_sha256 must be 64 hex digits, got {expected_sha256!r}")
        found.append(Checksum("sha256", value, "expected_sha256"))
    if any(c.algorithm == "crc32c" for c in found) and not have_crc32c():
        log.info("Not checking CRC32C: install google-crc32c (pip install 'tinker-sync[crc32c]') to check it")
        found = [c for c in found if c.algorithm != "crc32c"]
    return found


def verify(
    dest: Path,
    size: int,
    sizes: Iterable[tuple[int | None, str]],
    checks: Sequence[Checksum],
    hashers: Mapping[str, Hasher],
) -> None:
    """Raise DownloadIntegrityError unless ``size`` and every digest match."""
    for want, source in sizes:
        if want is not None and size != want:
            raise DownloadIntegrityError(
                f"Size mismatch for {dest}: expected {want} bytes ({source}), received {size}"
            )
    for check in checks:
        actual = hashers[check.algorithm].digest().hex()
        if actual != check.expected:
            raise DownloadIntegrityError(
                f"{ALGORITHM_NAMES[check.algorithm]} mismatch for {dest}: expected {check.expected} "
                f"({check.source}), got {actual}"
            )


def hash_prefix(f: BinaryIO, size: int, hashers: Iterable[Hasher]) -> None:
    """Feed the first ``size`` bytes of ``f`` to ``hashers`` (resuming: hash what is there first)."""
    hashers = list(hashers)
    if not hashers:
        return
    f.seek(0)
    remaining = size
    while remaining > 0:
        data = f.read(min(HASH_READ_SIZE, remaining))
        if not data:
            break
        remaining -= len(data)
        for h in hashers:
            h.update(data)


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


# -- receiving ------------------------------------------------------------------------------------


class ProgressThrottle:
    """Calls ``progress(done, total)`` at most every PROGRESS_INTERVAL s or 1% of ``total``, and at the end."""

    def __init__(self, progress: Progress | None, total: int | None, done: int = 0) -> None:
        self.progress = progress
        self.total = total
        self.done = done
        self._next_bytes = 0
        self._next_time = 0.0
        self._step = max(1, total // 100) if total else 1 << 62
        self.report()

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None and (
            self.done >= self._next_bytes or time.monotonic() >= self._next_time
        ):
            self.report()

    def report(self) -> None:
        if self.progress is not None:
            self._next_bytes = self.done + self._step
            self._next_time = time.monotonic() + PROGRESS_INTERVAL
            self.progress(self.done, self.total)


class Receiver:
    """Writes a body into ``dest.part`` from ``offset``: hashed, verified, renamed into place.

    Use as a context manager::

        with Receiver(part, checks=..., total=...) as receiver:
            while n := read_into(receiver.buffer()):
                receiver.commit(n)
            receiver.complete()

    ``buffer()`` lends a buffer to read into, ``commit(n)`` hands its first
    ``n`` bytes to the worker thread that writes and hashes them, and
    ``complete()`` drains, fsyncs, verifies and renames. Leaving the block
    without ``complete()`` stops the worker and removes the ``.part`` and its
    sidecar, unless ``keep`` is set and the sidecar exists (a later run resumes).

    Args:
        offset: bytes already in the ``.part`` (hashed first, to verify the whole).
        checks: the digests the whole file must have.
        total: the resource's size, when known; expected_size: the caller's.
        progress: ``progress(done, total)``, throttled, in bytes of the file.
        buffer_size: the most bytes per read (and per write); less when many bodies are read at
            once (its lease of the read budget, ``_buffers``).
        threaded: True writes and hashes on a worker thread with up to BUFFERS buffers; False on
            the caller's thread, with one buffer; None (the default) chooses (see THREADED_MAX).
        keep: keep the ``.part`` on failure when its sidecar exists.
    """

    def __init__(
        self,
        part: PartFile,
        *,
        offset: int = 0,
        checks: Sequence[Checksum] = (),
        total: int | None = None,
        expected_size: int | None = None,
        progress: Progress | None = None,
        buffer_size: int = BUFFER_SIZE,
        threaded: bool | None = None,
        keep: bool = False,
    ) -> None:
        self.part = part
        self.total = total
        self.expected_size = expected_size
        self.keep = keep
        self._progress = progress
        self._checks = list(checks)
        self._buffer_size = buffer_size
        self._check_sizes()
        needed = total if total is not None else expected_size
        if needed is not None:
            check_disk_space(part.dest, needed - offset)
        flags = os.O_RDWR | os.O_CREAT | (0 if offset else os.O_TRUNC)
        self._file: BinaryIO = os.fdopen(open_regular(part.part, flags), "r+b")
        self._hashers = {c.algorithm: new_hasher(c.algorithm) for c in self._checks}
        if offset:
            hash_prefix(self._file, offset, self._hashers.values())
            self._file.seek(offset)
            self._file.truncate()
        self._throttle = ProgressThrottle(progress, total, offset)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._allocated = 0
        self._lent: bytearray | None = None
        self._inline: bytearray | None = None
        self._worker: Worker[tuple[bytearray, int]] | None = None
        self._lease = _buffers.Lease()  # closed in _close
        if threaded is None:
            threaded = bool(self._checks) and _buffers.active() <= THREADED_MAX
        if threaded and self._lease.resize(BUFFERS * buffer_size) >= BUFFERS * buffer_size:
            self._worker = Worker(self._store, depth=BUFFERS, name="tinker-sync-write")
        self._done = False

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if self._done:
            return
        keep = self.keep and exc_type is not DownloadIntegrityError and self.part.sidecar.exists()
        try:
            self._close(abort=not keep)  # kept: write what was received, for the next run to resume
        except Exception as exc:  # noqa: BLE001 - the error being raised matters more
            log.warning("Could not write the last received bytes of %s: %s", self.part.part, exc)
        if not keep:
            self.part.discard()

    def _check_sizes(self) -> None:
        if self.expected_size is not None and self.total is not None and self.expected_size != self.total:
            raise DownloadIntegrityError(
                f"Size mismatch for {self.part.dest}: expected {self.expected_size} bytes (expected_size), "
                f"the server announces {self.total}"
            )

    @property
    def confirmable(self) -> bool:
        """Whether ``complete()`` can confirm the file is whole: a known size or a checksum to match."""
        return self.total is not None or self.expected_size is not None or bool(self._checks)

    def _store(self, item: tuple[bytearray, int]) -> None:
        buffer, n = item
        view = memoryview(buffer)[:n]
        try:
            self._file.write(view)
            for hasher in self._hashers.values():
                hasher.update(view)
        finally:
            view.release()
            if self._worker is not None:
                self._free.put(buffer)

    def buffer(self) -> memoryview:
        """A buffer to read the next bytes into (waits while every buffer is being written)."""
        if self._lent is None:
            if self._worker is None:  # one buffer, resized to the body's share of the read budget
                size = min(self._lease.resize(self._buffer_size), self._buffer_size)
                if self._inline is None or len(self._inline) != size:
                    self._inline = bytearray(size)
                self._lent = self._inline
            elif self._allocated < BUFFERS and self._free.empty():
                self._allocated += 1
                self._lent = bytearray(self._buffer_size)
            else:
                self._lent = self._free.get()
        return memoryview(self._lent)

    def commit(self, n: int) -> None:
        """Write and hash the first ``n`` bytes of the buffer lent by ``buffer()``."""
        buffer, self._lent = self._lent, None
        assert buffer is not None, "commit() without buffer()"
        if self._worker is not None:
            self._worker.put((buffer, n))
        else:
            self._store((buffer, n))
        self._throttle.add(n)

    def _drain(self) -> None:
        if self._worker is not None:
            self._worker.join()

    def restart(self, checks: Sequence[Checksum], total: int | None) -> None:
        """Start the file again from byte 0 (the resource came back whole, maybe changed)."""
        self._drain()
        self._file.seek(0)
        self._file.truncate()
        self.total = total
        self._check_sizes()
        self._checks = list(checks)
        self._hashers = {c.algorithm: new_hasher(c.algorithm) for c in self._checks}
        self._throttle = ProgressThrottle(self._progress, total)

    def _close(self, *, abort: bool) -> None:
        try:
            if self._worker is not None:
                self._worker.close(abort=abort)
        finally:
            self._file.close()
            self._lease.close()

    def complete(self, *, length: int | None = None) -> int:
        """Drain, fsync, verify (size against ``total``, ``expected_size`` and ``length``) and rename.

        Returns:
            The size of the final file.

        Raises:
            DownloadIntegrityError: a size or digest mismatch (the ``.part`` is removed).
        """
        try:
            self._drain()
            self._file.flush()
            os.fsync(self._file.fileno())
            size = self._file.tell()
        finally:
            self._close(abort=False)
        self._throttle.report()
        sizes = (
            (self.total, "the server's length"),
            (self.expected_size, "expected_size"),
            (length, "the length"),
        )
        verify(self.part.dest, size, sizes, self._checks, self._hashers)
        self._done = True
        self.part.finish()
        return size


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


def headers_from(saved: Mapping[str, str]) -> dict[str, Any]:
    """Sidecar-saved headers with lower-cased names (as ``checksums_from`` reads them)."""
    return {k.lower(): v for k, v in saved.items()}
