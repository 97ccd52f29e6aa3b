"""``tinker-sync download URL_OR_PATH -o PATH``: one file, atomic, verified, resumable."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import (
    AddCommand,
    add_connections,
    client_from,
    diagnostics,
    kept,
    out_of_retries,
)
from ._progress import ProgressReporter


def _cmd_download(args: argparse.Namespace) -> int:
    from .._exceptions import APIError
    from .._files import destination

    label = os.path.basename(args.output) or args.output
    with (
        client_from(args) as client,
        ProgressReporter(label, stream=diagnostics(args)) as reporter,
        _unverified_warnings(),
    ):
        try:
            path = client.download(
                args.url_or_path,
                args.output,
                progress=reporter,
                resume=not args.no_resume,
                expected_sha256=args.sha256,
                connections=args.connections,
            )
        except APIError as exc:
            dest = destination(args.output, client.build_url(args.url_or_path))
            part = Path(f"{dest}.part")
            if out_of_retries(exc) and part.is_file() and Path(f"{dest}.part.json").is_file():
                raise kept(part, exc) from exc
            raise
        reporter.summary(path, os.path.getsize(path))
    return 0


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
        "--sha256", type=_sha256_arg, metavar="HEX", help="the expected SHA-256 of the file"
    )
    add_connections(download)
