"""``tinker-sync checkpoint list|info|download|sync``: checkpoints listed and shown as the official
CLI does, downloaded (all or nothing, resumable) and mirrored; ``sync``'s exit code tells its
outcomes apart (``EXIT_SYNCED``, ``EXIT_PARTIAL``)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import checkpoint_manage
from ._common import (
    EXIT_PARTIAL,
    EXIT_SYNCED,
    PROG,
    AddCommand,
    add_connections,
    add_limit,
    client_from,
    collect,
    diagnostics,
    emit,
    kept,
    lora,
    more,
    out_of_retries,
    say_to,
    size_cell,
    when,
)
from ._progress import ProgressReporter, SyncProgress, format_size

if TYPE_CHECKING:
    from .._client import Client
    from .._options import Connections


def download_checkpoint(
    client: Client,
    tinker_path: str,
    output: str,
    force: bool,
    stream: TextIO | None = None,
    connections: Connections = "auto",
) -> tuple[str, int]:
    """Download with a progress bar; notes (preparing, resumed) go above it. Returns (path, bytes)."""
    with ProgressReporter(tinker_path.rsplit("/", 1)[-1], stream=stream) as reporter:
        path = client.checkpoints.download(
            tinker_path, output, force=force, progress=reporter, notify=reporter.note, connections=connections
        )
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        reporter.summary(path, size)
    return os.fspath(path), size


def _cmd_checkpoint_download(args: argparse.Namespace) -> int:
    from .._exceptions import APIError

    with client_from(args) as client:
        try:
            path, size = download_checkpoint(
                client, args.tinker_path, args.output, args.force, diagnostics(args), args.connections
            )
        except APIError as exc:
            from ..resources._paths import parse_tinker_path

            partial = Path(args.output) / f".{parse_tinker_path(args.tinker_path).dir_name}.partial"
            if out_of_retries(exc) and partial.is_dir():
                raise kept(partial, exc) from exc
            raise
    if args.format == "json":
        emit(
            args,
            {"checkpoint_path": args.tinker_path, "destination": path, "file_size_bytes": size},
            "",
            [],
            [],
        )
    else:
        print(path)
    return 0


def _cmd_checkpoint_sync(args: argparse.Namespace) -> int:
    """Mirror a run's checkpoints: what changed on stdout (nothing in a table when nothing did),
    progress and notes on stderr; the exit code says which outcome (module docstring)."""
    say = say_to(args)
    with client_from(args) as client, SyncProgress(diagnostics(args)) as bars:
        report = client.checkpoints.sync(
            args.run_id,
            args.output,
            kinds=args.kind,
            latest=args.latest,
            since=args.since,
            prune=args.prune,
            progress=bars,
            notify=bars.note,
            connections=args.connections,
        )
    if report.status == "locked":
        say(f"{report.locked_by}; nothing to do")
    for failure in report.failed:
        print(f"{PROG}: error: {failure.checkpoint_path}: {failure.error}", file=sys.stderr)
    if report.gone and not args.quiet:
        say(
            f"{len(report.gone)} checkpoint(s) no longer on the server kept in {report.output_dir} (--prune removes them)"
        )
    rows = [
        ["downloaded", d.checkpoint_path, format_size(d.file_size_bytes), d.destination]
        for d in report.downloaded
    ]
    rows += [["failed", f.checkpoint_path, "-", f.error] for f in report.failed]
    rows += [["pruned", path, "-", "-"] for path in report.pruned]
    if args.format == "json":
        emit(args, report, "", [], [])
    elif rows:
        title = (
            f"{report.run_id} -> {report.output_dir}: {len(report.downloaded)} downloaded, "
            f"{len(report.failed)} failed, {len(report.pruned)} pruned, {len(report.current)} already current"
        )
        emit(args, report, title, ["Change", "Checkpoint", "Size", "Where / why"], rows)
    else:
        say(f"{report.run_id} -> {report.output_dir}: nothing to do ({len(report.current)} current)")
    return {"synced": EXIT_SYNCED, "partial failure": EXIT_PARTIAL}.get(report.status, 0)


def _cmd_checkpoint_list(args: argparse.Namespace) -> int:
    from ..resources.types import Checkpoint

    run_id = args.run or args.run_id
    total: int | None = None
    with client_from(args) as client:
        if run_id:
            found = client.checkpoints.list_for_run(run_id).checkpoints
        else:

            def fetch(offset: int, size: int) -> tuple[list[Checkpoint], int | None, int | None]:
                page = client.checkpoints.list(limit=size, offset=offset)
                if page.cursor is None:
                    return page.checkpoints, None, None
                return page.checkpoints, page.cursor.total_count, page.cursor.offset

            found, total = collect(fetch, args.limit)
    where = f" for run {run_id}" if run_id else ""
    count = f"{len(found)} checkpoint{'' if len(found) == 1 else 's'}{where}{more(len(found), total)}"
    columns = ["Checkpoint ID", "Type", "Size", "Public", "Created", "Expires", "Path"]
    rows = [
        [
            c.checkpoint_id,
            c.checkpoint_type,
            size_cell(c.size_bytes),
            "Yes" if c.public else "No",
            when(c.time),
            when(c.expires_at, "Never"),
            c.tinker_path,
        ]
        for c in found
    ]
    data: dict[str, Any] = {"run_id": run_id} if run_id else {}
    data["checkpoints"] = found
    emit(args, data, count if found else f"No checkpoints found{where}", columns, rows)
    return 0


def _cmd_checkpoint_info(args: argparse.Namespace) -> int:
    import msgspec

    from ..resources._paths import parse_tinker_path

    path = parse_tinker_path(args.tinker_path)
    with client_from(args) as client:
        checkpoint = client.checkpoints.get(args.tinker_path)
        run = client.training_runs.get(path.run, access_scope="accessible")
    rows = [
        ["Checkpoint ID", checkpoint.checkpoint_id],
        ["Type", checkpoint.checkpoint_type],
        ["Tinker Path", checkpoint.tinker_path],
        ["Size", size_cell(checkpoint.size_bytes)],
        ["Public", "Yes" if checkpoint.public else "No"],
        ["Created", when(checkpoint.time)],
        ["Expires", when(checkpoint.expires_at, "Never")],
        ["Training Run ID", path.run],
        ["Base Model", run.base_model],
        ["LoRA", lora(run.is_lora, run.lora_rank)],
    ]
    data = msgspec.to_builtins(checkpoint) | {"is_lora": run.is_lora, "lora_rank": run.lora_rank}
    emit(args, data, f"Checkpoint {checkpoint.checkpoint_id}", ["Property", "Value"], rows)
    return 0


def _positive_arg(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


def _time_arg(value: str) -> datetime:
    from ..resources._sync import parse_since

    try:
        when = parse_since(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time (2025-06-15T12:00:00Z, 2025-06-15), got {value!r}"
        ) from None
    assert when is not None  # a string is never None
    return when


def register(commands: Any, command: AddCommand) -> None:
    """Add the ``checkpoint`` group to the commands."""
    checkpoint = commands.add_parser("checkpoint", help="checkpoints (list, info, download, sync)")
    checkpoint_commands = checkpoint.add_subparsers(dest="checkpoint_command", metavar="COMMAND")
    checkpoint_commands.required = True
    ck_list = command(
        checkpoint_commands,
        "list",
        _cmd_checkpoint_list,
        help="list your checkpoints (newest first), or every checkpoint of RUN_ID",
    )
    ck_list.add_argument("run", nargs="?", metavar="RUN_ID", help="a training run (default: all yours)")
    ck_list.add_argument("--run-id", metavar="RUN_ID", help="the same, as the official CLI spells it")
    add_limit(ck_list)
    ck_info = command(checkpoint_commands, "info", _cmd_checkpoint_info, help="show one checkpoint")
    ck_info.add_argument("tinker_path", metavar="TINKER_PATH", help="tinker://RUN/KIND/NAME")
    ck_download = command(
        checkpoint_commands,
        "download",
        _cmd_checkpoint_download,
        help="download and extract a checkpoint (tinker://RUN/weights/NAME or .../external_weights/NAME)",
        description="Download into DIR/RUN_KIND_NAME: all or nothing, resumed after a broken connection, "
        "hardened extraction. Prints the directory on stdout when done.",
    )
    ck_download.add_argument("tinker_path", metavar="TINKER_PATH", help="tinker://RUN/KIND/NAME")
    ck_download.add_argument(
        "-o", "--output", default=".", metavar="DIR", help="parent directory (default: .)"
    )
    ck_download.add_argument("--force", action="store_true", help="replace an existing download")
    add_connections(ck_download)
    checkpoint_manage.register(checkpoint_commands, command)  # publish, unpublish, set-ttl, delete
    ck_sync = command(
        checkpoint_commands,
        "sync",
        _cmd_checkpoint_sync,
        help="mirror every checkpoint of a training run into a directory (safe to run from cron)",
        description="Download each checkpoint of RUN_ID not yet complete in DIR (as `checkpoint download` "
        "does), oldest first. DIR/.tinker-sync.json lists what is complete; DIR/.tinker-sync.lock keeps "
        "overlapping runs apart (a second one does nothing). What changed goes to stdout (nothing in a "
        "table when nothing did), progress to stderr. Nothing is deleted locally without --prune.",
        epilog="exit status: 0 nothing to do (the mirror was current, or another sync holds it), "
        f"{EXIT_SYNCED} synced, {EXIT_PARTIAL} partial failure (one or more checkpoints failed, the others "
        "are complete), 1 error (nothing synced), 2 usage error",
    )
    ck_sync.add_argument("run_id", metavar="RUN_ID", help="the training run to mirror")
    ck_sync.add_argument("-o", "--output", required=True, metavar="DIR", help="the mirror directory")
    ck_sync.add_argument(
        "--kind",
        action="append",
        choices=("weights", "external_weights"),
        help="only this kind (repeatable; default: both; sampler weights cannot be downloaded)",
    )
    ck_sync.add_argument("--latest", type=_positive_arg, metavar="K", help="only the K newest checkpoints")
    ck_sync.add_argument(
        "--since",
        type=_time_arg,
        metavar="TIME",
        help="only checkpoints saved at or after TIME (ISO 8601; UTC if no zone)",
    )
    ck_sync.add_argument(
        "--prune", action="store_true", help="remove local checkpoints the server no longer lists"
    )
    add_connections(ck_sync)
