"""The ``tinker-sync`` command line (argparse); ``python -m tinker_sync`` runs it too.

Rules:
1. ``main(argv=None) -> int``: 0 on success, 1 on an expected error (one
   line on stderr, no traceback), 2 on a usage error, 130 on Ctrl-C;
   ``checkpoint sync`` tells its outcomes apart: 0 nothing to do, 3 synced,
   4 partial failure (``EXIT_SYNCED``, ``EXIT_PARTIAL``).
2. Results go to stdout (``--format table``, the default, or ``json`` for
   scripts, with the official CLI's JSON shapes); diagnostics to stderr
   (``--quiet`` silences all but errors).
3. Progress goes to stderr: a tqdm bar on a terminal, plain occasional lines
   otherwise (at most one per ~10 s or per 10%, never a ``\\r``), so cron
   logs stay readable. ``ProgressReporter`` is the one place that decides.
4. The client is built from the environment (``TINKER_API_KEY``,
   ``TINKER_BASE_URL``, ``TINKER_MAX_RETRIES``, proxies and CAs); tqdm is
   imported only when a bar is drawn, and without it (a plain
   ``pip install tinker-sync``) a terminal gets the plain lines too.
5. A download that runs out of retries says what was kept and that
   running the same command again resumes it.

One module per command group (``download``, ``run``, ``checkpoint`` with
``checkpoint_manage``, ``session``, ``model`` (and ``version``), ``auth``, ``demo``), each with a ``register(commands, command)`` that adds its
subcommands; what they share is in ``_common`` and ``_progress``. This
package is never imported by ``tinker_sync`` itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import auth, checkpoint, demo, download, model, run, session
from ._common import EXIT_PARTIAL, EXIT_SYNCED, PROG, Command, add_max_retries, version
from ._progress import ProgressReporter, format_size

__all__ = ["EXIT_PARTIAL", "EXIT_SYNCED", "ProgressReporter", "build_parser", "format_size", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subparser per command, each with ``func``.

    ``--format`` and ``--quiet`` are accepted before the command (as the
    official CLI has them) and after it.
    """

    def options(parser: argparse.ArgumentParser, table: object, quiet: object) -> argparse.ArgumentParser:
        parser.add_argument(
            "-f",
            "--format",
            choices=("table", "json"),
            default=table,
            help="output format: table (default) or json, for scripts",
        )
        parser.add_argument(
            "-q", "--quiet", action="store_true", default=quiet, help="no progress or notes on stderr"
        )
        return parser

    # After the command, the options default to nothing, so that they never undo those given before it.
    common = options(argparse.ArgumentParser(add_help=False), argparse.SUPPRESS, argparse.SUPPRESS)
    add_max_retries(common)  # every command talks to a server: every command takes --max-retries
    parser = options(
        argparse.ArgumentParser(prog=PROG, description="A synchronous, streaming-first Tinker API client."),
        "table",
        False,
    )
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(group: Any, name: str, func: Command, **kw: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, parents=[common], **kw)
        sub.set_defaults(func=func)
        return sub

    for group in (download, run, checkpoint, session, model, auth, demo):  # the order of ``--help``
        group.register(commands, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tinker-sync``; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    func: Command = args.func
    from .._exceptions import TinkerError

    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (``| head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (TinkerError, OSError, ValueError, LookupError) as exc:
        message = " ".join(_message(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


def _message(exc: BaseException) -> str:
    """An error's one line: an OSError's text with its file named once, without ``[Errno N]``."""
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename
        return exc.strerror if name is None or str(name) in exc.strerror else f"{exc.strerror}: {name}"
    return str(exc)
