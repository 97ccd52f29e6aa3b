"""Streaming, hardened extraction of a checkpoint tar into a private directory.

Owns: reading a tar (plain, gzip, bzip2 or xz) from a stream that is read
once, front to back, and creating its regular files and directories under
``dest``. Never uses ``TarFile.extract``/``extractall`` or extraction
filters: the Pythons our users run include 3.11 releases older than the
June 2025 tarfile fixes (CVE-2025-4517, -4330, -4138, CVE-2024-12718), and
link tricks have bypassed the filters before. We read headers with
``tarfile`` in stream mode and create everything ourselves.

Rule 1: only regular files and directories. Links, devices, FIFOs,
contiguous and sparse files and unknown types are refused with
``UnsafeArchiveError`` naming the member and the reason.
Rule 2: a member is validated in full (type, name, size, limits) before
anything is created for it; a refusal raises and the caller deletes
``dest`` (it owns it), so ``extract_tar`` never cleans up.
Rule 3: paths are resolved one component at a time with ``dir_fd``-relative
calls: a component is entered with ``O_DIRECTORY | O_NOFOLLOW``, created
with ``os.mkdir(0o755)`` when missing, and files are created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` (a duplicate or colliding name is refused).
No string-prefix test anywhere.
Rule 4: the archive's owners, times, set-id bits and modes are ignored:
files are created 0o644 and directories 0o755, *through the umask* (as tar
does for ordinary users; we do not chmod, so a private umask stays private).
Rule 5: bounded resources: member count, total extracted size, name length,
extended-header sizes; decompression is ours, with a bounded output per
read (tarfile's own stream decompressors are not: one bzip2 block can
inflate to gigabytes); data is copied through one reused 1 MiB buffer.
Rule 6: malformed or truncated input raises
``UnsafeArchiveError("malformed archive: ...")`` chained to the cause, never
an early, quiet end: a bad header after the first is not taken for the end
(as tarfile alone would), both end-of-archive blocks must be there, and the
stream is read to its end (bounded) so a compressed stream's end and CRC are
checked. An exception raised by ``stream.read`` itself propagates unchanged.

POSIX only (``dir_fd`` and ``O_NOFOLLOW``). Importing this module imports
``tarfile``; the download code imports it lazily.
"""

from __future__ import annotations

import bz2
import errno
import lzma
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, Any, Protocol, Self, cast

from ._exceptions import UnsafeArchiveError
from ._workers import Worker

__all__ = ["DEFAULT_MAX_MEMBERS", "ExtractResult", "extract_tar"]

# A checkpoint holds a handful of files; 10k members leaves room for sharded
# or per-tensor layouts while bounding the inode count, directory-walk work
# and header-parsing time a hostile archive can cost (a second or two).
DEFAULT_MAX_MEMBERS = 10_000

# Member data is read in blocks of this size and handed to the writer thread,
# which holds at most _WRITE_QUEUE blocks: memory stays bounded (~9 MiB).
_COPY_BLOCK = 1 << 20
_WRITE_QUEUE = 8
# Compressed bytes read from the stream at a time, and the most decompressed
# bytes one read may produce (so a bomb cannot inflate in one call).
_RAW_CHUNK = 64 * 1024
_MAX_INFLATE = 1 << 20
# Extended headers (pax, GNU long names) are read whole into memory by
# tarfile, and Pythons before 3.11.10 parse pax with a regex that is
# quadratic in a run of digits (CVE-2024-6232): cap each one (room for a
# name and a link name of max_name_length, plus slack), the whole archive's
# total, and how many may be chained before one real member.
_EXTENDED_HEADER_SLACK = 8 * 1024
_MAX_EXTENDED_TOTAL = 1 << 20
_MAX_EXTENDED_CHAIN = 8
# What may follow the end-of-archive marker (writers pad to a 10 KiB record).
_MAX_TRAILER = 1 << 20

# tarfile's header errors (undocumented, stable since 3.2): a zero block is the end of the
# archive, an empty (short) header is a truncation.
_EOF_HEADER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EMPTY_HEADER: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_EXTENDED_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_LONG_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC


class _Readable(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class ExtractResult:
    """What ``extract_tar`` created.

    Attributes:
        files: regular files written.
        directories: directory members seen (created, or already present).
        total_size: bytes written to files.
        archive_bytes: bytes read from the stream (compressed size, if compressed).
    """

    files: int
    directories: int
    total_size: int
    archive_bytes: int


def _refuse(name: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"refusing archive member {name!r}: {reason}")


def _malformed(reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"malformed archive: {reason}")


# -- input layers: stream -> _CountingReader -> _Inflater -> tarfile "r|" -------------------


class _CountingReader:
    """Counts the bytes read from ``stream`` and remembers an exception it raised."""

    def __init__(self, stream: _Readable) -> None:
        self._stream = stream
        self._pushback = b""
        self.count = 0
        self.error: BaseException | None = None

    def read(self, n: int = -1, /) -> bytes:
        if self._pushback:
            data, self._pushback = self._pushback[:n], self._pushback[n:]
            return data
        try:
            data = self._stream.read(n)
        except BaseException as exc:
            self.error = exc
            raise
        self.count += len(data)
        return data

    def peek(self, n: int) -> bytes:
        """Read up to ``n`` bytes (fewer only at end of stream) and push them back."""
        data = self._pushback
        while len(data) < n:
            more = self.read(n - len(data))
            if not more:
                break
            data += more
        self._pushback = data
        return data


class _Inflater:
    """``read(n)`` over a compressed stream, at most ``n`` decompressed bytes per call.

    Concatenated members (``cat a.gz b.gz``) are followed. A stream that ends
    inside a compressed member raises: it was truncated.
    """

    def __init__(self, raw: _CountingReader, kind: str) -> None:
        self._raw = raw
        self._kind = kind
        self._dec = self._new()
        self._tail = b""  # zlib's unconsumed input

    def _new(self) -> Any:
        if self._kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._kind == "bzip2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)

    def _inflate(self, data: bytes, n: int) -> bytes:
        try:
            if self._kind == "gzip":
                out = self._dec.decompress(self._tail + data, n)
                self._tail = self._dec.unconsumed_tail
                return out  # type: ignore[no-any-return]
            return self._dec.decompress(data, n)  # type: ignore[no-any-return]
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise _malformed(f"corrupt {self._kind} data ({exc})") from exc

    def _needs_input(self) -> bool:
        if self._kind == "gzip":
            return not self._tail
        return bool(self._dec.needs_input)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _MAX_INFLATE
        n = max(1, min(n, _MAX_INFLATE))
        while True:
            if self._dec.eof:
                rest = self._dec.unused_data or self._raw.read(_RAW_CHUNK)
                if not rest:
                    return b""
                self._dec, self._tail = self._new(), b""
                out = self._inflate(rest, n)
            elif self._needs_input():
                data = self._raw.read(_RAW_CHUNK)
                if not data:
                    raise _malformed(f"the {self._kind} stream is truncated")
                out = self._inflate(data, n)
            else:
                out = self._inflate(b"", n)
            if out:
                return out


def _open_layers(raw: _CountingReader) -> _Readable:
    magic = raw.peek(6)
    if magic.startswith(b"\x1f\x8b"):
        return _Inflater(raw, "gzip")
    if magic.startswith(b"BZh"):
        return _Inflater(raw, "bzip2")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return _Inflater(raw, "xz")
    return raw


# -- header guard: a TarInfo subclass that bounds what tarfile parses -----------------------


class _Guard:
    """Per-extraction state the header guard needs."""

    def __init__(self, max_extended: int) -> None:
        self.max_extended = max_extended
        self.extended_total = 0
        self.chain = 0
        self.last_name: str | None = None

    def where(self) -> str:
        return "at the start" if self.last_name is None else f"after member {self.last_name!r}"


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses, before tarfile reads them, headers that would cost unbounded memory or time.

    ``_proc_member`` is the hook tarfile documents for subclasses. We also turn
    the header errors tarfile would silently take for the end of the archive
    (a bad checksum or a short header after the first member) into errors.
    """

    _guard: _Guard

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            return super().frombuf(buf, encoding, errors)
        except _EOF_HEADER:
            raise  # a zero block: the normal end of the archive
        except _EMPTY_HEADER as exc:
            raise _malformed(
                f"the stream ends {cls._guard.where()} without an end-of-archive marker (truncated?)"
            ) from exc
        except tarfile.HeaderError as exc:
            raise _malformed(f"invalid header {cls._guard.where()} ({exc})") from exc

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        guard = self._guard
        if self.size < 0:
            raise _refuse(self.name, f"negative size {self.size}")
        if self.type in _EXTENDED_TYPES or self.type in _LONG_TYPES:
            guard.chain += 1
            guard.extended_total += self.size
            if self.size > guard.max_extended:
                raise _refuse(
                    self.name, f"extended header of {self.size} bytes, over the limit of {guard.max_extended}"
                )
            if guard.extended_total > _MAX_EXTENDED_TOTAL:
                raise _refuse(self.name, f"extended headers total over {_MAX_EXTENDED_TOTAL} bytes")
            if guard.chain > _MAX_EXTENDED_CHAIN:
                raise _refuse(self.name, f"more than {_MAX_EXTENDED_CHAIN} chained extended headers")
        else:
            guard.chain = 0
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise _refuse(self.name, "a sparse file")
        return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]

    def _proc_gnusparse_00(self, next: tarfile.TarInfo, *args: Any) -> None:
        raise _refuse(next.name, "a sparse file (pax GNU.sparse)")

    _proc_gnusparse_01 = _proc_gnusparse_00
    _proc_gnusparse_10 = _proc_gnusparse_00


# -- names and the directory tree -----------------------------------------------------------


def _split_name(name: str, max_name_length: int) -> list[str]:
    """The components of a member name, or a refusal saying why it may not be used."""
    if not name:
        raise _refuse(name, "empty name")
    if "\x00" in name:
        raise _refuse(name, "name contains a NUL byte")
    try:
        length = len(os.fsencode(name))
    except UnicodeError as exc:
        raise _refuse(name, "name is not valid in the filesystem encoding") from exc
    if length > max_name_length:
        raise _refuse(name[:64] + "...", f"name of {length} bytes, over the limit of {max_name_length}")
    if name.startswith("/"):
        raise _refuse(name, "absolute name")
    if "\\" in name:
        raise _refuse(name, "name contains a backslash")
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        raise _refuse(name, "Windows drive letter")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refuse(name, "'..' component")
    return parts


class _Tree:
    """Creates directories and files under ``dest`` one component at a time."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.root = os.open(dest, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        # The last parent entered, kept open: archives list a directory's files together.
        self._cached: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _enter(self, name: str, dirs: tuple[str, ...]) -> int:
        """An fd for the directory ``dirs`` (relative to dest), creating what is missing."""
        if not dirs:
            return self.root
        if self._cached is not None and self._cached[0] == dirs:
            return self._cached[1]
        self._drop_cache()
        fd = self.root
        try:
            for i, part in enumerate(dirs):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    where = "/".join(dirs[: i + 1])
                    raise _refuse(name, f"{where!r} exists and is not a directory") from exc
                if fd != self.root:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != self.root:
                os.close(fd)
            raise
        self._cached = (dirs, fd)
        return fd

    def make_dir(self, name: str, parts: list[str]) -> None:
        if not parts:
            return  # "./": dest itself
        parent = self._enter(name, tuple(parts[:-1]))
        try:
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
        except FileExistsError:
            mode = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode
            if not stat.S_ISDIR(mode):
                raise _refuse(name, "a directory over an existing file") from None

    def open_file(self, name: str, parts: list[str]) -> int:
        if not parts:
            raise _refuse(name, "a file name with no components")
        parent = self._enter(name, tuple(parts[:-1]))
        try:
            return os.open(parts[-1], _FILE_FLAGS, 0o644, dir_fd=parent)
        except FileExistsError:
            mode = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode
            what = "an existing directory" if stat.S_ISDIR(mode) else "a file already extracted"
            raise _refuse(name, f"a file over {what}") from None


def _write_member_data(item: tuple[int, bytes | None]) -> None:
    """Write a block of member data to its file, or close the file (data None)."""
    fd, data = item
    if data is None:
        os.close(fd)
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close_only(item: tuple[int, bytes | None]) -> None:
    """After a write error or an abort: skip the data, still close every file."""
    fd, data = item
    if data is None:
        os.close(fd)


def _file_writer() -> Worker[tuple[int, bytes | None]]:
    """Member data is written on its own thread.

    Writing a big file is mostly the kernel copying it into the page cache;
    on its own thread that copy overlaps reading the next bytes from the
    network (and parsing them), instead of taking turns with it. Every file
    descriptor handed over is closed by the thread, in order, whatever happens.
    """
    return Worker(_write_member_data, depth=_WRITE_QUEUE, name="tinker-sync-extract", discard=_close_only)


def _copy(
    archive: tarfile.TarFile, member: tarfile.TarInfo, fd: int, writer: Worker[tuple[int, bytes | None]]
) -> None:
    """Copy a file member's data to ``fd`` through ``writer``; a short member raises."""
    source = archive.extractfile(member)
    assert source is not None  # a regular file always has a reader
    remaining = member.size
    try:
        with source:
            while remaining:
                data = source.read(min(remaining, _COPY_BLOCK))
                if not data:
                    raise tarfile.ReadError("unexpected end of data")
                writer.put((fd, data))
                remaining -= len(data)
    except tarfile.ReadError as exc:
        raise _malformed(
            f"member {member.name!r} is truncated: {member.size - remaining} of {member.size} bytes ({exc})"
        ) from exc


def _finish(stream: Any, guard: _Guard) -> None:
    """Read what follows the first end-of-archive block, to EOF, within a bound.

    The second zero block must be there (POSIX writes two), and reading to
    the end makes the decompressor check a compressed stream's end and CRC:
    a stream cut anywhere raises.
    """
    rest = stream.read(_MAX_TRAILER + 1)
    if rest[: tarfile.BLOCKSIZE] != bytes(tarfile.BLOCKSIZE):
        raise _malformed(f"the end-of-archive marker {guard.where()} is incomplete (truncated?)")
    if len(rest) > _MAX_TRAILER:
        raise _malformed(f"more than {_MAX_TRAILER} bytes after the end-of-archive marker")


# -- the entry point ------------------------------------------------------------------------


def extract_tar(
    stream: _Readable,
    dest: str | os.PathLike[str],
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_size: int | None = None,
    max_name_length: int = 4096,
) -> ExtractResult:
    """Extract the tar read from ``stream`` into the existing, empty directory ``dest``.

    ``stream`` is read once, sequentially, with ``read(n)``; plain, gzip,
    bzip2 and xz archives are detected from their first bytes. Only regular
    files (0o644) and directories (0o755) are created, modes through the umask.

    Args:
        stream: a binary file-like object with ``read(n)``.
        dest: a private directory the caller created and deletes on failure.
        max_members: most members (files and directories) accepted.
        max_total_size: when given, most bytes of file data accepted in all
            (the checkpoint's known size); checked before each file is created.
        max_name_length: longest member name accepted, in encoded bytes.

    Returns:
        An ``ExtractResult`` counting what was created.

    Raises:
        UnsafeArchiveError: a member was refused (the message names it and
            says why), a limit was passed, or the archive is malformed or
            truncated ("malformed archive: ..."). ``dest`` may then hold a
            partial extraction.
        Exception: whatever ``stream.read`` raised, unchanged.
    """
    raw = _CountingReader(stream)
    guard = _Guard(max_extended=2 * max_name_length + _EXTENDED_HEADER_SLACK)
    info_class = type("_BoundTarInfo", (_GuardedTarInfo,), {"_guard": guard})
    members = files = directories = total = 0
    tree = _Tree(dest)
    writer = _file_writer()
    finished = False
    try:
        # bufsize: tarfile's stream reads 10 KiB at a time by default; 256 KiB
        # (one network chunk) halves the per-byte overhead on big archives.
        with tarfile.open(
            fileobj=cast(IO[bytes], _open_layers(raw)),
            mode="r|",
            bufsize=1 << 18,
            tarinfo=info_class,
            encoding="utf-8",
            errors="surrogateescape",
        ) as archive:
            while (member := archive.next()) is not None:
                archive.members.clear()  # type: ignore[attr-defined]  # stream mode keeps every TarInfo otherwise
                name = member.name
                members += 1
                if members > max_members:
                    raise _refuse(name, f"more than {max_members} members")
                if member.type == tarfile.DIRTYPE:
                    if member.size:
                        raise _refuse(name, f"a directory with a size ({member.size})")
                    parts = _split_name(name, max_name_length)
                    tree.make_dir(name, parts)
                    directories += 1
                elif member.type in _FILE_TYPES:
                    if member.sparse is not None:
                        raise _refuse(name, "a sparse file")
                    parts = _split_name(name, max_name_length)
                    if max_total_size is not None and total + member.size > max_total_size:
                        raise _refuse(
                            name,
                            f"{member.size} bytes would bring the total over max_total_size={max_total_size}",
                        )
                    fd = tree.open_file(name, parts)
                    try:
                        _copy(archive, member, fd, writer)
                    finally:
                        writer.put((fd, None))
                    total += member.size
                    files += 1
                else:
                    what = _TYPE_NAMES.get(member.type, f"an unsupported member type {member.type!r}")
                    raise _refuse(name, f"{what}; only regular files and directories are extracted")
                guard.last_name = name
            _finish(archive.fileobj, guard)
        if not files:  # a block of zeros, or directories only: no checkpoint, whatever tar says
            raise _malformed(f"no files in the archive ({directories} directories)")
        finished = True
        writer.close()  # the last writes: a full disk raises here
    except (UnsafeArchiveError, tarfile.TarError, EOFError, zlib.error, RecursionError) as exc:
        if raw.error is not None:
            raise raw.error from None  # the stream's own error, never wrapped
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise _malformed(f"{str(exc) or type(exc).__name__} {guard.where()}") from exc
    finally:
        if not finished:
            writer.close(abort=True)
        tree.close()
    return ExtractResult(files=files, directories=directories, total_size=total, archive_bytes=raw.count)
