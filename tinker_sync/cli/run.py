"""``tinker-sync run list|info``: training runs, as the official CLI shows them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._common import (
    AddCommand,
    add_access_scope,
    add_limit,
    client_from,
    collect,
    emit,
    lora,
    more,
    when,
)

if TYPE_CHECKING:
    from ..resources.types import TrainingRun


def _cmd_run_list(args: argparse.Namespace) -> int:

    with client_from(args) as client:

        def fetch(offset: int, size: int) -> tuple[list[TrainingRun], int | None, int | None]:
            page = client.training_runs.list(limit=size, offset=offset, access_scope=args.access_scope)
            return page.training_runs, page.cursor.total_count, page.cursor.offset

        found, total = collect(fetch, args.limit)
    title = f"{len(found)} training run{'' if len(found) == 1 else 's'}{more(len(found), total)}"
    columns = ["Run ID", "Base Model", "Owner", "LoRA", "Last Update", "Status"]
    rows = [
        [
            r.training_run_id,
            r.base_model,
            r.model_owner,
            lora(r.is_lora, r.lora_rank),
            when(r.last_request_time),
            "Failed" if r.corrupted else "OK",
        ]
        for r in found
    ]
    emit(args, {"runs": found}, title if found else "No training runs found", columns, rows)
    return 0


def _cmd_run_info(args: argparse.Namespace) -> int:

    with client_from(args) as client:
        run = client.training_runs.get(args.run_id, access_scope=args.access_scope)
    rows = [
        ["Run ID", run.training_run_id],
        ["Base Model", run.base_model],
        ["Owner", run.model_owner],
        ["LoRA", lora(run.is_lora, run.lora_rank)],
        ["Last Update", when(run.last_request_time)],
        ["Status", "Failed" if run.corrupted else "OK"],
    ]
    for label, checkpoint in (("Training", run.last_checkpoint), ("Sampler", run.last_sampler_checkpoint)):
        if checkpoint is not None:
            rows.append([f"Last {label} Checkpoint", checkpoint.tinker_path])
            rows.append(["  - Time", when(checkpoint.time)])
    rows += [[f"Metadata {key}", value] for key, value in (run.user_metadata or {}).items()]
    emit(args, run, f"Training run {run.training_run_id}", ["Property", "Value"], rows)
    return 0


def register(commands: Any, command: AddCommand) -> None:
    """Add the ``run`` group to the commands."""
    run = commands.add_parser("run", help="training runs (list, info)")
    run_commands = run.add_subparsers(dest="run_command", metavar="COMMAND")
    run_commands.required = True
    run_list = command(run_commands, "list", _cmd_run_list, help="list training runs")
    add_limit(run_list)
    add_access_scope(run_list)
    run_info = command(run_commands, "info", _cmd_run_info, help="show one training run")
    run_info.add_argument("run_id", metavar="RUN_ID")
    add_access_scope(run_info)
