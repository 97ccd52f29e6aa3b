"""``tinker-sync checkpoint publish|unpublish|set-ttl|delete``: the official CLI's managing commands.

``delete`` takes tinker paths, or ``--run-id RUN`` with ``--type``, ``--before`` and ``--after``
filters; it asks before deleting unless ``-y``, deletes many at once, and exits 1 when any
deletion failed (``--format json``: ``{"deleted_count", "failed": [{"tinker_path", "error"}]}``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ._common import AddCommand, client_from, emit

EXAMPLES = """examples:
  tinker-sync checkpoint publish tinker://run-1/sampler_weights/final
  tinker-sync checkpoint set-ttl tinker://run-1/weights/0001 --ttl 86400
  tinker-sync checkpoint set-ttl tinker://run-1/weights/0001 --remove
  tinker-sync checkpoint delete tinker://run-1/weights/0001 tinker://run-1/weights/0002
  tinker-sync checkpoint delete --run-id run-1 --type weights --before 2024-06-01 -y
"""
TYPES = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}
TYPES.update({v: v for v in TYPES.values()})
DELETE_CONCURRENCY = 8


def _path(value: str) -> str:
    if not value.startswith("tinker://"):
        raise argparse.ArgumentTypeError(f"not a tinker path (tinker://RUN/KIND/NAME): {value!r}")
    return value


def _date(value: str) -> datetime:
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date: {value!r} (e.g. 2024-01-01T08:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ttl(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ttl takes whole seconds, not {value!r}") from None


def _done(args: argparse.Namespace, action: str) -> int:
    emit(args, {"tinker_path": args.tinker_path, "action": action}, f"{action}: {args.tinker_path}", [], [])
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        client.checkpoints.publish(args.tinker_path)
    return _done(args, "published")


def _cmd_unpublish(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        client.checkpoints.unpublish(args.tinker_path)
    return _done(args, "unpublished")


def _cmd_set_ttl(args: argparse.Namespace) -> int:
    if (args.ttl is None) == (not args.remove):
        raise ValueError("give exactly one of --ttl SECONDS or --remove")
    with client_from(args) as client:
        client.checkpoints.set_ttl(args.tinker_path, None if args.remove else args.ttl)
    return _done(args, "ttl removed" if args.remove else f"ttl set to {args.ttl} s")


def _cmd_delete(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    if (args.type or args.before or args.after) and not args.run_id:
        raise ValueError("--type, --before and --after need --run-id")
    if bool(args.paths) == bool(args.run_id):
        raise ValueError("give checkpoint paths or --run-id RUN (not both)")
    if args.type is not None and args.type not in TYPES:
        raise ValueError(f"--type is one of weights, sampler_weights, external_weights, not {args.type!r}")
    with client_from(args) as client:
        paths = list(args.paths)
        if args.run_id:
            found = client.checkpoints.list(args.run_id).checkpoints
            paths = [
                c.tinker_path
                for c in found
                if (args.type is None or c.checkpoint_type == TYPES[args.type])
                and (args.before is None or (c.time is not None and c.time < args.before))
                and (args.after is None or (c.time is not None and c.time > args.after))
            ]
        if not paths:
            emit(args, {"deleted_count": 0, "failed": []}, "No checkpoints matched: nothing deleted", [], [])
            return 0
        if not args.yes:
            print(f"Will delete {len(paths)} checkpoint(s), permanently:", file=sys.stderr)
            for path in paths:
                print(f"  - {path}", file=sys.stderr)
            print("Delete them? [y/N] ", end="", file=sys.stderr, flush=True)
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                print("Deletion cancelled.", file=sys.stderr)
                return 1

        def delete(path: str) -> tuple[str, str | None]:
            try:
                client.checkpoints.delete(path)
            except Exception as exc:  # reported per path below
                return path, " ".join(str(exc).split())
            return path, None

        with ThreadPoolExecutor(max_workers=min(DELETE_CONCURRENCY, len(paths))) as pool:
            results = list(pool.map(delete, paths))
    failed = [{"tinker_path": p, "error": e} for p, e in results if e is not None]
    deleted = len(results) - len(failed)
    lines = [f"Deleted {deleted} checkpoint(s)"] + [
        f"Failed: {f['tinker_path']}: {f['error']}" for f in failed
    ]
    emit(args, {"deleted_count": deleted, "failed": failed}, "\n".join(lines), [], [])
    return 1 if failed else 0


def register(group: Any, command: AddCommand) -> None:
    """Add publish, unpublish, set-ttl and delete to the ``checkpoint`` group."""
    fmt: dict[str, Any] = {"epilog": EXAMPLES, "formatter_class": argparse.RawDescriptionHelpFormatter}
    for name, func, text in (
        ("publish", _cmd_publish, "make a checkpoint public (owner only)"),
        ("unpublish", _cmd_unpublish, "make a checkpoint private again"),
    ):
        sub = command(group, name, func, help=text, **fmt)
        sub.add_argument("tinker_path", type=_path, metavar="TINKER_PATH")
    ttl = command(
        group, "set-ttl", _cmd_set_ttl, help="set (--ttl N) or remove (--remove) a checkpoint's expiry", **fmt
    )
    ttl.add_argument("tinker_path", type=_path, metavar="TINKER_PATH")
    ttl.add_argument(
        "--ttl", type=_ttl, metavar="SECONDS", help="expire this many seconds from now (1 hour to 10 years)"
    )
    ttl.add_argument("--remove", action="store_true", help="remove the expiry")
    delete = command(group, "delete", _cmd_delete, help="delete checkpoints permanently", **fmt)
    delete.add_argument("paths", nargs="*", type=_path, metavar="TINKER_PATH")
    delete.add_argument("--run-id", metavar="RUN_ID", help="every checkpoint of this run (with the filters)")
    delete.add_argument("--type", metavar="TYPE", help="weights, sampler_weights or external_weights")
    delete.add_argument("--before", type=_date, metavar="DATE", help="created before (ISO 8601, UTC)")
    delete.add_argument("--after", type=_date, metavar="DATE", help="created after (ISO 8601, UTC)")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask")
