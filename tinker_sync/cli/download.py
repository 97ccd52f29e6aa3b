"""``tinker-sync download URL_OR_PATH -o PATH``: one file, atomic, verified, resumable."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    PROG,
    AddCommand,
    add_connections,
    client_from,
    diagnostics,
    emit,
    kept,
    out_of_retries,
    say_to,
)
from ._progress import ProgressReporter

if TYPE_CHECKING:
    from .._client import Client


def _cmd_download(args: argparse.Namespace) -> int:
    from .._exceptions import APIError
    from .._files import destination

    started = time.monotonic()
    with client_from(args) as client, _unverified_warnings():
        dest = destination(args.output, client.build_url(args.url_or_path))
        part = Path(f"{dest}.part")
        if dest.is_file() and not args.force:
            checksum = _already_complete(client, args.url_or_path, dest, args.sha256)
            if checksum is not None:
                say_to(args)(
                    f"{dest} is already complete ({dest.stat().st_size} bytes, {checksum[0]} verified "
                    "against the server); --force downloads it again"
                )
                return _done(args, dest, checksum, resumed=0, started=started)
        resumed = (
            part.stat().st_size
            if not args.no_resume and part.is_file() and _sidecar(part).is_file()
            else None
        )
        if resumed:
            say_to(args)(f"Resuming {dest} at byte {resumed} (a re-run of an interrupted download)")
        label = os.path.basename(args.output) or args.output
        try:
            with ProgressReporter(label, stream=diagnostics(args)) as reporter:
                path = client.download(
                    args.url_or_path,
                    args.output,
                    progress=reporter,
                    resume=not args.no_resume,
                    expected_sha256=args.sha256,
                    connections=args.connections,
                )
                reporter.summary(path, os.path.getsize(path))
        except KeyboardInterrupt:
            if part.is_file() and _sidecar(part).is_file():
                print(
                    f"{PROG}: interrupted; {part} ({part.stat().st_size} bytes) was kept: run the same "
                    "command again to resume",
                    file=sys.stderr,
                )
                raise SystemExit(130) from None
            raise
        except APIError as exc:
            if out_of_retries(exc) and part.is_file() and _sidecar(part).is_file():
                raise kept(part, exc) from exc
            raise
    return _done(args, path, ("sha256", _sha256(path)), resumed=resumed or 0, started=started)


class _UnverifiedWarnings(logging.Handler):
    """Prints a download's warning that its file could not be verified (stored as served under an
    encoding nobody asked for, with no checksum) as a line of the command's own: the library only logs."""

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "unverified_encoding"):
            print(f"tinker-sync: warning: {record.getMessage()}", file=sys.stderr)


@contextlib.contextmanager
def _unverified_warnings() -> Iterator[None]:
    logger = logging.getLogger("tinker_sync")
    handler = _UnverifiedWarnings(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _sidecar(part: Path) -> Path:
    return Path(f"{part}.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _done(
    args: argparse.Namespace, path: Path, checksum: tuple[str, str], *, resumed: int, started: float
) -> int:
    """The result on stdout: the saved path (table), or path, bytes, checksum, resumed, seconds (json)."""
    size = path.stat().st_size
    result = {
        "path": os.fspath(path),
        "bytes": size,
        "checksum": f"{checksum[0]}:{checksum[1]}",
        "resumed": bool(resumed),
        "resumed_at": resumed or 0,
        "seconds": round(time.monotonic() - started, 3),
    }
    emit(args, result, os.fspath(path), [], [])
    return 0


def _already_complete(
    client: Client, url_or_path: str, dest: Path, sha256: str | None
) -> tuple[str, str] | None:
    """The checksum (algorithm, hex) by which ``dest`` is known to be the server's file, without its
    body: the size the server announces (HEAD) and a checksum it sends, or ``--sha256``; None when
    it cannot be shown (then the file is downloaded again)."""
    from .._checksums import checksums_from, new_hasher
    from .._exceptions import TinkerError

    size = dest.stat().st_size
    try:
        with client.stream(
            "HEAD",
            url_or_path,
            credentials=client.is_api_url(client.build_url(url_or_path)),
            follow_redirects=True,
            max_retries=0,
        ) as response:
            headers = response.headers
            status = response.status_code
    except TinkerError:
        return None
    if status != 200 or headers.get("content-length", "").strip() != str(size):
        return None
    for check in checksums_from(headers, sha256):
        hasher = new_hasher(check.algorithm)
        with open(dest, "rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
        if hasher.digest().hex() != check.expected:
            return None
        return (check.algorithm, check.expected)
    return None


def _url_or_path_arg(value: str) -> str:
    if value.startswith("tinker://"):
        raise argparse.ArgumentTypeError(
            f"{value} is a checkpoint path: download it with `tinker-sync checkpoint download {value} -o DIR`"
        )
    return value


def _sha256_arg(value: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits, got {value!r}")
    return text


def register(commands: Any, command: AddCommand) -> None:
    """Add ``download`` to the commands."""
    download = command(
        commands,
        "download",
        _cmd_download,
        help="download a URL or API path to a file (atomic, verified, resumable)",
        description="Download to FILE via FILE.part; verified against the size and checksums on offer; "
        "an interrupted run resumes where it stopped.",
    )
    download.add_argument(
        "url_or_path",
        type=_url_or_path_arg,
        metavar="URL_OR_PATH",
        help="an absolute URL or a path under TINKER_BASE_URL (a tinker:// path: checkpoint download)",
    )
    download.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help="the file to save it as, or a directory to save it in",
    )
    download.add_argument(
        "--no-resume", action="store_true", help="ignore a partial download and start from zero"
    )
    download.add_argument(
        "--force",
        action="store_true",
        help="download again even when the file is already complete (verified against the server)",
    )
    download.add_argument(
        "--sha256", type=_sha256_arg, metavar="HEX", help="the expected SHA-256 of the file"
    )
    add_connections(download)
