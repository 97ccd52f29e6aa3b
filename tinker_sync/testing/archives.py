"""Deterministic checkpoint archives, and a library of hostile ones.

Owns: the tar the mock server serves for a checkpoint (``iter_checkpoint_tar``
yields it chunk by chunk, in constant memory, so the server can stream any
size without a temp file; ``write_checkpoint_tar`` writes it to a file) and
what a correct extraction must produce (``expected_files``), plus
``HOSTILE_ARCHIVES``: small archives each breaking one rule of
``tinker_sync._extract``.

Rules: stdlib only (the mock server imports this lazily, and it never imports
the client); the same arguments always give the same bytes (fixed mtime,
uid/gid 0, modes 0o644/0o755, gzip header mtime 0). Headers come from
``tarfile.TarInfo.tobuf``; data blocks come straight from ``_data.generate``.
"""

from __future__ import annotations

import bz2
import functools
import io
import lzma
import random
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ._data import generate, sha256_of

__all__ = [
    "HOSTILE_ARCHIVES",
    "HOSTILE_DEST_NAME",
    "HOSTILE_MAX_MEMBERS",
    "HOSTILE_MAX_TOTAL_SIZE",
    "checkpoint_files",
    "expected_files",
    "iter_checkpoint_tar",
    "write_checkpoint_tar",
]

MTIME = 1_700_000_000
_BLOCK = tarfile.BLOCKSIZE
_BIG_FILE = "weights/adapter_model.safetensors"


def checkpoint_files(seed: int, total_size: int, n_files: int = 4) -> list[tuple[str, int, int]]:
    """``(relative name, size, member seed)`` for each file, in archive order.

    Sizes sum to exactly ``total_size``; the small files get a few hundred
    bytes to a few KiB each (less if ``total_size`` is tiny), the big
    ``weights/adapter_model.safetensors`` the rest.
    """
    if n_files < 1:
        raise ValueError("n_files must be at least 1")
    extra = [f"weights/shard_{i:03d}/optimizer.bin" for i in range(max(0, n_files - 3))]
    small = ["adapter_config.json", *extra, "checkpoint_complete"][: n_files - 1]
    if "checkpoint_complete" not in small and n_files > 1:
        small[-1] = "checkpoint_complete"
    rng = random.Random(seed)
    remaining = total_size
    sizes = {}
    for name in small:
        size = min(remaining, rng.randrange(0, 4097))
        sizes[name] = size
        remaining -= size
    sizes[_BIG_FILE] = remaining
    # The small data files, then the big one, the completion marker last.
    order = [name for name in small if name != "checkpoint_complete"] + [_BIG_FILE]
    order += [name for name in small if name == "checkpoint_complete"]
    return [(name, sizes[name], seed * 1_000_003 + i + 1) for i, name in enumerate(order)]


def expected_files(seed: int, total_size: int, n_files: int = 4) -> dict[str, str]:
    """Relative name -> SHA-256 hex of each file a correct extraction produces."""
    return {name: sha256_of(mseed, size) for name, size, mseed in checkpoint_files(seed, total_size, n_files)}


def _info(
    name: str, *, size: int = 0, type: bytes = tarfile.REGTYPE, mode: int | None = None, linkname: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = type
    info.mode = (0o755 if type == tarfile.DIRTYPE else 0o644) if mode is None else mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.linkname = linkname
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def _iter_plain_tar(seed: int, total_size: int, n_files: int) -> Iterator[bytes]:
    files = checkpoint_files(seed, total_size, n_files)
    seen: set[str] = set()
    for name, size, mseed in files:
        parts = name.split("/")[:-1]
        for i in range(len(parts)):
            directory = "/".join(parts[: i + 1])
            if directory not in seen:
                seen.add(directory)
                yield _header(_info(directory + "/", type=tarfile.DIRTYPE))
        yield _header(_info(name, size=size))
        yield from generate(mseed, size)
        yield _padding(size)
    yield bytes(2 * _BLOCK)


def _compressor(compression: str | None) -> object | None:
    if compression in (None, "", "tar"):
        return None
    if compression in ("gz", "gzip"):
        return zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip, header mtime 0
    if compression in ("bz2", "bzip2"):
        return bz2.BZ2Compressor(1)
    if compression == "xz":
        return lzma.LZMACompressor(preset=0)
    raise ValueError(f"unknown compression {compression!r}")


def iter_checkpoint_tar(
    seed: int, total_size: int, *, n_files: int = 4, compression: str | None = None
) -> Iterator[bytes]:
    """Yield the checkpoint tar (``compression``: None, "gz", "bz2" or "xz") in chunks of <= 1 MiB."""
    compressor = _compressor(compression)
    chunks = _iter_plain_tar(seed, total_size, n_files)
    if compressor is None:
        yield from chunks
        return
    for chunk in chunks:
        out = compressor.compress(chunk)  # type: ignore[attr-defined]
        if out:
            yield out
    yield compressor.flush()  # type: ignore[attr-defined]


def write_checkpoint_tar(
    fileobj: BinaryIO, seed: int, total_size: int, *, n_files: int = 4, compression: str | None = None
) -> None:
    """Write the checkpoint tar to ``fileobj``, in constant memory."""
    for chunk in iter_checkpoint_tar(seed, total_size, n_files=n_files, compression=compression):
        fileobj.write(chunk)


# -- hostile archives -------------------------------------------------------------------------
# Each builder returns a whole small archive. Limits the tests pass to extract_tar:
HOSTILE_MAX_MEMBERS = 10
HOSTILE_MAX_TOTAL_SIZE = 1 << 20
# prefix_sibling targets a sibling of a destination directory with this name.
HOSTILE_DEST_NAME = "out"


def _tar(*members: tuple[tarfile.TarInfo, bytes], end: bool = True) -> bytes:
    """A pax tar of (info, data) members; data defaults to ``info.size`` bytes of b"x"."""
    out = io.BytesIO()
    for info, data in members:
        out.write(_header(info))
        out.write(data)
        out.write(_padding(len(data)))
    if end:
        out.write(bytes(2 * _BLOCK))
    return out.getvalue()


def _file(name: str, data: bytes = b"data\n", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, size=len(data), **kw), data  # type: ignore[arg-type]


def _entry(name: str, type: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, type=type, linkname=linkname), b""


def _ustar_header(name: bytes, size_field: bytes, *, checksum_ok: bool = True) -> bytes:
    """A hand-written ustar header with a raw 12-byte size field."""
    buf = bytearray(_BLOCK)
    buf[0 : len(name)] = name
    buf[100:108] = b"0000644\x00"
    buf[108:116] = buf[116:124] = b"0000000\x00"
    buf[124:136] = size_field
    buf[136:148] = b"%011o\x00" % MTIME
    buf[148:156] = b" " * 8
    buf[156:157] = tarfile.REGTYPE
    buf[257:265] = b"ustar\x0000"
    checksum = sum(buf) + (0 if checksum_ok else 1)
    buf[148:156] = b"%06o\x00 " % checksum
    return bytes(buf)


def _negative_size() -> bytes:
    # base-256 size field: 0xff... is -1 once sign-extended
    return _ustar_header(b"negative", b"\xff" * 12) + bytes(2 * _BLOCK)


def _malformed_header() -> bytes:
    # a good member, then a header whose checksum is off by one: tarfile alone
    # would take it for the end of the archive and report success
    good = _tar(_file("good"), end=False)
    return good + _ustar_header(b"corrupt", b"%011o\x00" % 5, checksum_ok=False) + bytes(3 * _BLOCK)


def _truncated() -> bytes:
    # a header promising 10000 bytes followed by 100 of them, and nothing else
    return _ustar_header(b"truncated", b"%011o\x00" % 10000) + b"x" * 100


def _no_end_marker() -> bytes:
    # complete members, but the stream stops where the end-of-archive blocks belong
    return _tar(_file("complete"), end=False)


def _gzip_bomb() -> bytes:
    # 32 MiB of zeros in one member, gzipped to ~32 KiB
    size = 32 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(_header(_info("zeros", size=size)))]
    zeros = bytes(1 << 20)
    parts += [compressor.compress(zeros) for _ in range(size >> 20)]
    parts += [compressor.compress(bytes(2 * _BLOCK)), compressor.flush()]
    return b"".join(parts)


@functools.lru_cache(maxsize=1)
def _million_members(count: int = 1_000_000) -> bytes:
    """A gzipped tar of ``count`` empty files (~5 MB): refused after the extractor's member limit,
    long before its last header. Headers are built by hand, a thousand at a time (tarfile would take
    ~10 s for a million, one header per Python step 1.5 s): a run of 1,000 headers m....000 to
    m....999, then per run its four leading digits and each header's checksum, column by column."""
    if not 0 <= count <= 10**7:
        raise ValueError("count must be within 0..10**7 (names are m0000000..m9999999)")
    template = bytearray(_ustar_header(b"", b"%011o\x00" % 0))
    size = len(template)
    base = sum(template[:148]) + sum(template[156:]) + 8 * 0x20  # the checksum counts its field as spaces
    lows = [b"%03d" % low for low in range(1000)]
    run = bytearray()
    for low in lows:
        template[0:8] = b"m0000" + low  # digits 1-4 and the checksum are written per run
        run += template
    checksums: dict[int, list[bytes]] = {}  # digit sum of digits 1-4 -> the 8 columns of the checksums

    def checksum_columns(high_sum: int) -> list[bytes]:
        if high_sum not in checksums:
            fields = b"".join(b"%06o\x00 " % (base + ord("m") + high_sum + sum(low)) for low in lows)
            checksums[high_sum] = [fields[k::8] for k in range(8)]
        return checksums[high_sum]

    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = []
    for high in range(-(-count // 1000)):
        n = min(1000, count - 1000 * high)
        batch = run[: size * n]
        digits = b"%04d" % high
        for k, digit in enumerate(digits):
            batch[1 + k :: size] = bytes([digit]) * n
        for k, column in enumerate(checksum_columns(sum(digits))):
            batch[148 + k :: size] = column[:n]
        parts.append(compressor.compress(batch))
    parts += [compressor.compress(bytes(2 * _BLOCK)), compressor.flush()]
    return b"".join(parts)


def _pax(name: str, headers: dict[str, str], data: bytes = b"data\n") -> tuple[tarfile.TarInfo, bytes]:
    info, data = _file(name, data)
    info.pax_headers = headers
    return info, data


def _pax_header_bomb() -> bytes:
    # a pax header of 1 MiB (a comment of digits: quadratic to parse before CVE-2024-6232's fix)
    return _tar(_pax("bomb", {"comment": "1" * (1 << 20)}))


HOSTILE_ARCHIVES: dict[str, Callable[[], bytes]] = {
    # links and special files: never extracted, whatever they point to
    "symlink": lambda: _tar(_entry("link", tarfile.SYMTYPE, "/etc/passwd")),
    "hardlink": lambda: _tar(_entry("link", tarfile.LNKTYPE, "/etc/passwd")),
    "chardev": lambda: _tar(_entry("dev", tarfile.CHRTYPE)),
    "blockdev": lambda: _tar(_entry("dev", tarfile.BLKTYPE)),
    "fifo": lambda: _tar(_entry("fifo", tarfile.FIFOTYPE)),
    "contiguous": lambda: _tar(_file("contiguous", type=tarfile.CONTTYPE)),
    "unknown_type": lambda: _tar(_file("unknown", type=b"Z")),
    # names leaving dest or meaningless
    "absolute": lambda: _tar(_file("/etc/x")),
    "dotdot": lambda: _tar(_file("../x")),
    "nested_dotdot": lambda: _tar(_file("a/../../x")),
    "drive_letter": lambda: _tar(_file("C:/x")),
    "drive_relative": lambda: _tar(_file("C:x")),
    "backslash_dotdot": lambda: _tar(_file("..\\x")),
    "empty_name": lambda: _tar(_file("")),
    "nul_in_name": lambda: _tar(_pax("a", {"path": "a\x00b"})),  # ustar fields stop at NUL: pax
    "long_name": lambda: _tar(_file("d/" * 2100 + "x")),  # 4201 bytes, via a pax path
    # a string-prefix test would take "<dest>-evil" for inside "<dest>"
    "prefix_sibling": lambda: _tar(_file(f"../{HOSTILE_DEST_NAME}-evil/x")),
    # link tricks: a link then a file through it
    "symlink_then_file": lambda: _tar(_entry("a", tarfile.SYMTYPE, "/tmp"), _file("a/x")),
    "hardlink_escape": lambda: _tar(_entry("a", tarfile.LNKTYPE, "../../etc/passwd")),
    # collisions inside dest
    "duplicate_file": lambda: _tar(_file("x"), _file("x", b"other\n")),
    "file_over_dir": lambda: _tar(_entry("a", tarfile.DIRTYPE), _file("a")),
    "dir_over_file": lambda: _tar(_file("a"), _entry("a", tarfile.DIRTYPE)),
    "file_under_file": lambda: _tar(_file("a"), _file("a/b")),
    "dir_with_size": lambda: _tar((_info("d", type=tarfile.DIRTYPE, size=512), bytes(512))),
    # resource limits (HOSTILE_MAX_MEMBERS, HOSTILE_MAX_TOTAL_SIZE)
    "too_many_members": lambda: _tar(*(_file(f"f{i}") for i in range(HOSTILE_MAX_MEMBERS + 1))),
    "oversize": lambda: _tar(_file("big", bytes(HOSTILE_MAX_TOTAL_SIZE + 1))),
    "gzip_bomb": _gzip_bomb,
    "million_members": _million_members,
    "pax_header_bomb": _pax_header_bomb,
    # sparse files: GNU header type and pax GNU.sparse records
    "gnu_sparse": lambda: _tar(_file("sparse", type=tarfile.GNUTYPE_SPARSE)),
    "pax_sparse": lambda: _tar(_pax("sparse", {"GNU.sparse.map": "0,5", "GNU.sparse.size": "5"})),
    # malformed input: must fail, never end early with success
    "negative_size": _negative_size,
    "malformed_header": _malformed_header,
    "truncated": _truncated,
    "no_end_marker": _no_end_marker,
    # not an archive at all: never a success with an empty directory
    "empty": lambda: b"",
    "zeros": lambda: bytes(10 * _BLOCK * 2),
    "html": lambda: (
        b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>denied</body></html>\n"
    ),
    "only_directories": lambda: _tar(_entry("a", tarfile.DIRTYPE), _entry("a/b", tarfile.DIRTYPE)),
    # accepted: the archive's mode is ignored, the file is created 0o644 (through the umask)
    "setuid_mode": lambda: _tar(_file("setuid", mode=0o4777)),
}
