"""Checksums and verification, with no HTTP and no files in them: which digests a response
offers (``x-goog-hash``, ``Content-Digest`` / ``Digest``, an MD5 ETag, the caller's SHA-256),
the hashers that compute them, and the check of a file's size and digests.

Rules:
1. A checksum that describes other bytes than the ones served (a store that decoded its object
   on the way, a proxy that transformed the body: ``served_transformed``) is never checked.
2. CRC32C is checked only with the optional ``google-crc32c`` package; without it, it is
   skipped with a log line, never failed.
3. A mismatch is a ``DownloadIntegrityError`` naming the algorithm, both digests and where the
   expected one came from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from ._exceptions import DownloadIntegrityError

__all__ = [
    "check_expected",
    "CHECKSUM_HEADERS",
    "HASH_READ_SIZE",
    "Checksum",
    "Hasher",
    "checksums_from",
    "hash_prefix",
    "headers_from",
    "have_crc32c",
    "new_hasher",
    "served_transformed",
    "verify",
]

log = logging.getLogger("tinker_sync")

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


class Checksum(NamedTuple):
    """One digest a file must have: algorithm (md5, sha256, crc32c), expected hex, where it came from."""

    algorithm: str
    expected: str
    source: str


class Hasher(Protocol):
    """hashlib's interface, which the CRC32C hasher has too."""

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
    """A hasher for ``md5``, ``sha256`` or ``crc32c``."""
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


def check_expected(expected_size: object, expected_sha256: object, progress: object = None) -> None:
    """Refuse, before anything is sent, what a download is told to expect when it cannot be right:
    an ``expected_size`` that is not a whole number of bytes, an ``expected_sha256`` that is not
    64 hex digits, a ``progress`` that cannot be called.

    Raises:
        ValueError, TypeError: saying which argument, and what it should be.
    """
    if expected_size is not None and (type(expected_size) is not int or expected_size < 0):
        raise ValueError(f"expected_size must be a whole number of bytes (0 or more), got {expected_size!r}")
    if expected_sha256 is not None and (
        not isinstance(expected_sha256, str) or not _HEX64.match(expected_sha256.strip())
    ):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {expected_sha256!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable as progress(downloaded, total), got {progress!r}")


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


def headers_from(saved: Mapping[str, str]) -> dict[str, Any]:
    """Sidecar-saved headers with lower-cased names (as ``checksums_from`` reads them)."""
    return {k.lower(): v for k, v in saved.items()}
