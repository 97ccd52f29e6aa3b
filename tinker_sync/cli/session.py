"""``tinker-sync session export-trace ID [-o FILE] [--url-only]``: a session's Perfetto trace, built
on the server (``sessions/{id}/trace_export``, polled) and downloaded as ``download`` does:
resumable, verified when the server sends checksums, and atomic (a ``.part`` renamed at the end).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._common import AddCommand, client_from, diagnostics, emit, kept, out_of_retries, say_to
from ._progress import ProgressReporter

EXAMPLES = """examples:
  tinker-sync session export-trace session-003                 # ./session-003.pftrace
  tinker-sync session export-trace session-003 -o my.pftrace
  tinker-sync session export-trace session-003 --url-only      # the signed URL (about an hour)
"""


def _cmd_export_trace(args: argparse.Namespace) -> int:
    from pathlib import Path

    say = say_to(args)
    with client_from(args) as client:
        url = client.sessions.export_trace(
            args.session_id,
            on_pending=lambda: say(
                f"Building the trace of session {args.session_id} (this may take a while)"
            ),
        )
        if args.url_only:
            emit(args, {"session_id": args.session_id, "url": url}, url, [], [])
            return 0
        dest = Path(args.output or f"{args.session_id}.pftrace")
        try:
            with ProgressReporter(dest.name, stream=diagnostics(args)) as reporter:
                path = client.download(url, dest, progress=reporter, credentials=False)
        except Exception as exc:
            if out_of_retries(exc):
                raise kept(dest, exc) from exc
            raise
    size = path.stat().st_size
    data = {"session_id": args.session_id, "destination": os.fspath(path.absolute()), "file_size_bytes": size}
    emit(args, data, f"Saved the trace of {args.session_id} to {path} ({size} bytes)", [], [])
    return 0


def register(commands: Any, command: AddCommand) -> None:
    """Add the ``session`` group to the commands."""
    session = commands.add_parser("session", help="sessions (export-trace)")
    group = session.add_subparsers(dest="session_command", metavar="COMMAND")
    group.required = True
    export = command(
        group,
        "export-trace",
        _cmd_export_trace,
        help="export a session's timeline as a Perfetto trace (.pftrace)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("session_id", metavar="SESSION_ID")
    export.add_argument(
        "-o", "--output", metavar="FILE", help="where to save it (default: ./SESSION_ID.pftrace)"
    )
    export.add_argument("--url-only", action="store_true", help="print the signed download URL instead")
