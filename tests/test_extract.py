"""tinker_sync._extract against real archives written to real directories.

Checkpoint archives come from tinker_sync.testing.archives (headers by
tarfile's writer, data from _data.generate), hostile ones from its
HOSTILE_ARCHIVES table; the expectations for each hostile kind live here.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tinker_sync._exceptions import APIConnectionError, UnsafeArchiveError
from tinker_sync._extract import DEFAULT_MAX_MEMBERS, ExtractResult, extract_tar
from tinker_sync.testing import archives
from tinker_sync.testing._data import generate
from tinker_sync.testing.archives import (
    HOSTILE_ARCHIVES,
    HOSTILE_DEST_NAME,
    HOSTILE_MAX_MEMBERS,
    HOSTILE_MAX_TOTAL_SIZE,
    checkpoint_files,
    expected_files,
    iter_checkpoint_tar,
    write_checkpoint_tar,
)

UMASK = os.umask(0o022)
os.umask(UMASK)
FILE_MODE = 0o644 & ~UMASK
DIR_MODE = 0o755 & ~UMASK
MiB = 1 << 20


class ChunkReader:
    """A read-once ``read(n)`` stream over an iterable of chunks, like a network body."""

    def __init__(
        self, chunks: Iterable[bytes], fail_after: int | None = None, error: BaseException | None = None
    ) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._view = memoryview(b"")
        self._fail_after = fail_after
        self._error = error
        self.delivered = 0

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self.delivered >= self._fail_after:
            assert self._error is not None
            raise self._error
        while not self._view:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._view = memoryview(chunk)
        if n < 0:
            n = len(self._view)
        if self._fail_after is not None:
            n = max(1, min(n, self._fail_after - self.delivered))
        out = bytes(self._view[:n])
        self._view = self._view[n:]
        self.delivered += len(out)
        return out


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / HOSTILE_DEST_NAME
    path.mkdir(mode=0o700)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> "dir", "file" or "link" for everything under root (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            out[path.relative_to(root).as_posix()] = kind
    return out


# -- checkpoint archives -------------------------------------------------------------------------


@pytest.mark.parametrize("total_size", [0, 1, 5000, 3 * MiB + 123])
def test_checkpoint_files_sizes_sum_exactly(total_size: int) -> None:
    files = checkpoint_files(7, total_size)
    assert sum(size for _, size, _ in files) == total_size
    assert files == checkpoint_files(7, total_size)
    assert len({seed for _, _, seed in files}) == len(files) == 4
    assert any("/" in name for name, _, _ in files)
    assert files[-1][0] == "checkpoint_complete"
    if total_size > 100_000:
        assert max(files, key=lambda f: f[1])[0] == "weights/adapter_model.safetensors"


@pytest.mark.parametrize("compression", [None, "gz", "bz2", "xz"])
def test_checkpoint_archive_is_a_plain_deterministic_tar(compression: str | None) -> None:
    out = io.BytesIO()
    write_checkpoint_tar(out, 3, 100_000, n_files=5, compression=compression)
    assert out.getvalue() == b"".join(iter_checkpoint_tar(3, 100_000, n_files=5, compression=compression))
    # tarfile itself is the oracle for the format
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:*") as tar:
        members = tar.getmembers()
        files = {m.name: m for m in members if m.isfile()}
        assert {m.name for m in members if m.isdir()} == {"weights", "weights/shard_000", "weights/shard_001"}
        for m in members:
            assert (m.uid, m.gid, m.mtime) == (0, 0, archives.MTIME)
            assert m.mode == (0o755 if m.isdir() else 0o644)
        for name, digest in expected_files(3, 100_000, n_files=5).items():
            data = tar.extractfile(files[name]).read()  # type: ignore[union-attr]
            assert hashlib.sha256(data).hexdigest() == digest


@pytest.mark.parametrize("compression", [None, "gz", "bz2", "xz"])
@pytest.mark.slow
def test_extracts_checkpoint(dest: Path, compression: str | None) -> None:
    size = 3 * MiB + 12345
    data = b"".join(iter_checkpoint_tar(11, size, compression=compression))
    result = extract_tar(ChunkReader([data]), dest, max_total_size=size)
    expected = expected_files(11, size)
    dirs = {"weights", "weights/shard_000"}
    assert result == ExtractResult(files=4, directories=len(dirs), total_size=size, archive_bytes=len(data))
    assert {name: _sha256(dest / name) for name in expected} == expected
    assert _tree(dest) == {**dict.fromkeys(dirs, "dir"), **dict.fromkeys(expected, "file")}
    for name in dirs:
        assert stat.S_IMODE((dest / name).stat().st_mode) == DIR_MODE
    for name in expected:
        assert stat.S_IMODE((dest / name).stat().st_mode) == FILE_MODE


def test_extracts_under_any_chunking(dest: Path) -> None:
    data = b"".join(iter_checkpoint_tar(5, 70_000, compression="gz"))
    reader = ChunkReader(data[i : i + 7] for i in range(0, len(data), 7))
    extract_tar(reader, dest)
    expected = expected_files(5, 70_000)
    assert {name: _sha256(dest / name) for name in expected} == expected


def test_dot_prefixed_names_and_repeated_directories(dest: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in ("./", "./a/", "./a/"):
            tar.addfile(_dir(name))
        info = tarfile.TarInfo("./a/b.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    result = extract_tar(io.BytesIO(out.getvalue()), dest)
    assert (result.files, result.directories, result.total_size) == (1, 3, 3)
    assert (dest / "a" / "b.txt").read_bytes() == b"abc"


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_default_limits() -> None:
    assert DEFAULT_MAX_MEMBERS == 10_000


# -- hostile archives ----------------------------------------------------------------------------

# kind -> (text the message must hold, what dest holds afterwards)
HOSTILE_EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    "symlink": ("member 'link': a symbolic link", {}),
    "hardlink": ("member 'link': a hard link", {}),
    "chardev": ("member 'dev': a character device", {}),
    "blockdev": ("member 'dev': a block device", {}),
    "fifo": ("member 'fifo': a FIFO", {}),
    "contiguous": ("member 'contiguous': a contiguous file", {}),
    "unknown_type": ("member 'unknown': an unsupported member type", {}),
    "absolute": ("member '/etc/x': absolute name", {}),
    "dotdot": ("member '../x': '..' component", {}),
    "nested_dotdot": ("member 'a/../../x': '..' component", {}),
    "drive_letter": ("member 'C:/x': Windows drive letter", {}),
    "drive_relative": ("member 'C:x': Windows drive letter", {}),
    "backslash_dotdot": ("member '..\\\\x': name contains a backslash", {}),
    "empty_name": ("member '': empty name", {}),
    "nul_in_name": ("member 'a\\x00b': name contains a NUL byte", {}),
    "long_name": ("name of 4201 bytes, over the limit of 4096", {}),
    "prefix_sibling": (f"member '../{HOSTILE_DEST_NAME}-evil/x': '..' component", {}),
    "symlink_then_file": ("member 'a': a symbolic link", {}),
    "hardlink_escape": ("member 'a': a hard link", {}),
    "duplicate_file": ("member 'x': a file over a file already extracted", {"x": "file"}),
    "file_over_dir": ("member 'a': a file over an existing directory", {"a": "dir"}),
    "dir_over_file": ("member 'a': a directory over an existing file", {"a": "file"}),
    "file_under_file": ("member 'a/b': 'a' exists and is not a directory", {"a": "file"}),
    "dir_with_size": ("member 'd': a directory with a size", {}),
    "too_many_members": (
        f"member 'f{HOSTILE_MAX_MEMBERS}': more than {HOSTILE_MAX_MEMBERS} members",
        {f"f{i}": "file" for i in range(HOSTILE_MAX_MEMBERS)},
    ),
    "oversize": ("member 'big': 1048577 bytes would bring the total over max_total_size=1048576", {}),
    "gzip_bomb": ("member 'zeros': 33554432 bytes would bring the total over max_total_size", {}),
    "pax_header_bomb": ("member '././@PaxHeader': extended header of", {}),
    "gnu_sparse": ("member 'sparse': a sparse file", {}),
    "pax_sparse": ("member 'sparse': a sparse file", {}),
    "negative_size": ("member 'negative': negative size -1", {}),
    "malformed_header": (
        "malformed archive: invalid header after member 'good' (bad checksum)",
        {"good": "file"},
    ),
    "truncated": (
        "malformed archive: member 'truncated' is truncated: 0 of 10000 bytes",
        {"truncated": "file"},
    ),
    "no_end_marker": (
        "malformed archive: the stream ends after member 'complete' without an end-of-archive marker",
        {"complete": "file"},
    ),
    "million_members": (
        f"member 'm{HOSTILE_MAX_MEMBERS:07d}': more than {HOSTILE_MAX_MEMBERS} members",
        {f"m{i:07d}": "file" for i in range(HOSTILE_MAX_MEMBERS)},
    ),
    "empty": ("malformed archive: the stream ends at the start without an end-of-archive marker", {}),
    "zeros": ("malformed archive: no files in the archive (0 directories)", {}),
    "html": ("malformed archive: invalid header at the start", {}),
    "only_directories": (
        "malformed archive: no files in the archive (2 directories)",
        {"a": "dir", "a/b": "dir"},
    ),
}


def test_every_hostile_kind_has_an_expectation() -> None:
    assert set(HOSTILE_ARCHIVES) == set(HOSTILE_EXPECTED) | {"setuid_mode"}


@pytest.mark.parametrize(
    ("kind", "compression"),
    # each kind as built, and gzipped (gzip_bomb is gzipped already)
    [(kind, None) for kind in sorted(HOSTILE_EXPECTED)]
    + [(kind, "gz") for kind in sorted(HOSTILE_EXPECTED) if kind not in ("gzip_bomb", "million_members")],
)
def test_hostile_archive_refused(tmp_path: Path, dest: Path, kind: str, compression: str | None) -> None:
    data = HOSTILE_ARCHIVES[kind]()
    if compression == "gz":
        data = zlib.compress(data, 1, wbits=16 + zlib.MAX_WBITS)
    text, left = HOSTILE_EXPECTED[kind]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UnsafeArchiveError) as info:
        extract_tar(
            ChunkReader([data]), dest, max_members=HOSTILE_MAX_MEMBERS, max_total_size=HOSTILE_MAX_TOTAL_SIZE
        )
    assert text in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before == [HOSTILE_DEST_NAME]
    assert _tree(dest) == left  # nothing of the refused member, and never a link
    assert not any(Path(p).is_symlink() for p in ("/tmp/x", "/tmp/a"))


def test_setuid_mode_extracted_without_set_id_bits(dest: Path) -> None:
    result = extract_tar(io.BytesIO(HOSTILE_ARCHIVES["setuid_mode"]()), dest)
    assert result.files == 1
    assert stat.S_IMODE((dest / "setuid").stat().st_mode) == FILE_MODE


def test_existing_symlink_in_dest_is_not_followed(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / "a").symlink_to(outside)
    data = HOSTILE_ARCHIVES["file_under_file"]()[1024:]  # just the member "a/b"
    with pytest.raises(UnsafeArchiveError, match="'a' exists and is not a directory"):
        extract_tar(io.BytesIO(data), dest)
    assert list(outside.iterdir()) == []


def test_max_name_length_is_configurable(dest: Path) -> None:
    data = b"".join(iter_checkpoint_tar(1, 100))
    with pytest.raises(UnsafeArchiveError, match="over the limit of 10"):
        extract_tar(io.BytesIO(data), dest, max_name_length=10)


def test_max_members_counts_directories(dest: Path) -> None:
    data = b"".join(iter_checkpoint_tar(1, 100))  # 2 directories + 4 files
    assert extract_tar(io.BytesIO(data), dest, max_members=6).files == 4
    other = dest.parent / "other"
    other.mkdir()
    with pytest.raises(UnsafeArchiveError, match="more than 5 members"):
        extract_tar(io.BytesIO(data), other, max_members=5)


def test_max_total_size_checked_before_writing(dest: Path) -> None:
    size = 2 * MiB
    data = b"".join(iter_checkpoint_tar(1, size))
    with pytest.raises(UnsafeArchiveError, match="adapter_model.safetensors.*max_total_size"):
        extract_tar(io.BytesIO(data), dest, max_total_size=size - 20_000)
    assert not (dest / "weights" / "adapter_model.safetensors").exists()


# -- truncation and stream errors ----------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gz"])
def test_every_truncation_raises(dest: Path, compression: str | None) -> None:
    data = b"".join(iter_checkpoint_tar(2, 20_000, compression=compression))
    step = 509 if compression is None else 97
    cuts = [*range(1, len(data), step), len(data) - 1]
    for i, cut in enumerate(cuts):
        target = dest / str(i)
        target.mkdir()
        with pytest.raises(UnsafeArchiveError, match="malformed archive"):
            extract_tar(ChunkReader([data[:cut]]), target)


def test_empty_stream_is_malformed(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="malformed archive") as info:
        extract_tar(io.BytesIO(b""), dest)
    assert info.value.__cause__ is not None


def test_not_a_tar_is_malformed(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="malformed archive"):
        extract_tar(io.BytesIO(b"<html>not found</html>" * 100), dest)


@pytest.mark.parametrize("compression", [None, "gz", "bz2", "xz"])
@pytest.mark.parametrize("fail_after", [0, 3, 700, 200_000])
def test_stream_error_propagates_unchanged(dest: Path, compression: str | None, fail_after: int) -> None:
    error = APIConnectionError("peer closed the connection")
    data = b"".join(iter_checkpoint_tar(4, 1 * MiB, compression=compression))
    with pytest.raises(APIConnectionError) as info:
        extract_tar(ChunkReader([data], fail_after=fail_after, error=error), dest)
    assert info.value is error
    assert error.__cause__ is None


# -- memory --------------------------------------------------------------------------------------


@pytest.fixture
def warm_data() -> None:
    """Build _data's per-seed base blocks outside the measured test."""
    for seed in (21, 22):
        for _, _, member_seed in checkpoint_files(seed, 512 * MiB):
            next(generate(member_seed, 1), None)


@pytest.mark.usefixtures("warm_data")
@pytest.mark.limit_memory("32 MB", current_thread_only=True)
@pytest.mark.parametrize(("seed", "size"), [(21, 512 * MiB), (22, 64 * MiB)])
def test_memory_is_constant(dest: Path, seed: int, size: int) -> None:
    result = extract_tar(ChunkReader(iter_checkpoint_tar(seed, size)), dest, max_total_size=size)
    assert result.total_size == size
    assert (dest / "weights" / "adapter_model.safetensors").stat().st_size > size - 20_000


def test_a_failing_disk_write_raises_and_every_file_is_closed(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (ENOSPC from write, on the writer thread) raises in the caller; no fd leaks."""
    import errno

    import tinker_sync._extract as extract_module

    real_write = os.write
    written = [0]

    def write(fd: int, data: memoryview) -> int:
        if written[0] > 3 * 1024 * 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(extract_module.os, "write", write)
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as raised:
        extract_tar(ChunkReader(iter_checkpoint_tar(31, 16 * 1024 * 1024)), dest)
    assert raised.value.errno == errno.ENOSPC
    assert len(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.limit_memory("48 MB", current_thread_only=True)
@pytest.mark.slow
def test_a_million_members_are_refused_early_with_the_default_limit(dest: Path) -> None:
    """The default limit (10,000) stops a million-member archive after 10,000 small files."""
    data = HOSTILE_ARCHIVES["million_members"]()
    with pytest.raises(UnsafeArchiveError, match=f"member 'm{DEFAULT_MAX_MEMBERS:07d}': more than"):
        extract_tar(ChunkReader([data]), dest)
    assert len(os.listdir(dest)) == DEFAULT_MAX_MEMBERS  # nothing past the limit was created
