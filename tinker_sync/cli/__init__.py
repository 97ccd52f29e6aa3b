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
import re
import sys
from collections.abc import Sequence
from typing import Any

from . import auth, checkpoint, demo, download, model, run, session
from ._common import EXIT_PARTIAL, EXIT_SYNCED, PROG, Command, add_max_retries, add_proxytunnel, version
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
    add_proxytunnel(common)  # and may go through a proxy
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
    for name, sub in _commands(parser):
        _footer(name, sub)
    return parser


# What every command's --help ends with: its exit codes, the environment it reads, an example.
EXIT_CODES = "0 success, 1 error (one line on stderr), 2 usage error, 130 interrupted (Ctrl-C)"
ENVIRONMENT = (
    "TINKER_API_KEY (required), TINKER_BASE_URL, TINKER_MAX_RETRIES (--max-retries wins), "
    "HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY, SSL_CERT_FILE / SSL_CERT_DIR / REQUESTS_CA_BUNDLE, "
    "TINKER_LOG=info|debug"
)
EXAMPLES = {
    "download": f"{PROG} download https://example.com/signed/model.bin -o model.bin --sha256 HEX",
    "run list": f"{PROG} run list --limit 0 -f json",
    "run info": f"{PROG} run info RUN_ID",
    "checkpoint list": f"{PROG} checkpoint list RUN_ID",
    "checkpoint info": f"{PROG} checkpoint info tinker://RUN_ID/weights/final",
    "checkpoint download": f"{PROG} checkpoint download tinker://RUN_ID/weights/final -o models/",
    "checkpoint sync": f"{PROG} checkpoint sync RUN_ID -o mirror/ --latest 3",
    "demo": f"{PROG} demo",
}


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every leaf command under ``parser``, with its name (``checkpoint sync``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{prefix} {name}".strip())
            return found
    return [(prefix, parser)]


def _footer(name: str, parser: argparse.ArgumentParser) -> None:
    """Append the exit codes, environment and an example to ``parser``'s epilog (a command's own
    exit codes, when it gives them, replace the usual ones)."""
    positionals = " ".join(str(a.metavar or a.dest.upper()) for a in parser._actions if not a.option_strings)
    example = EXAMPLES.get(name, f"{PROG} {name} {positionals}".rstrip())
    lines = (
        []
        if parser.epilog and re.search(r"exit (status|code)", parser.epilog)
        else [f"exit status: {EXIT_CODES}"]
    )
    if parser.epilog:
        lines.append(parser.epilog)
    environment = "none (the demo server runs in this process)" if name == "demo" else ENVIRONMENT
    lines += [f"environment: {environment}", f"example: {example}"]
    parser.epilog = "\n\n".join(lines)
    parser.formatter_class = _Formatter


# Library messages name Python arguments; the command line's user knows flags and variables.
_CLI_TERMS = (
    (
        re.compile(r"pass Client\(api_key=\.\.\.\)(, | or )set the TINKER_API_KEY environment variable"),
        "set the TINKER_API_KEY environment variable",
    ),
    (re.compile(r"\(use force=True, or --force, to replace it\)"), "(use --force to replace it)"),
    (
        re.compile(r"Client\(verify=tinker_sync\.TLS\(extra_ca=\.\.\.\)\) or SSL_CERT_FILE"),
        "SSL_CERT_FILE or REQUESTS_CA_BUNDLE",
    ),
    (
        re.compile(
            r" \(max_response_size; set it with Client\(max_response_size=\.\.\.\) or "
            r"client\.with_options\(max_response_size=\.\.\.\), or stream the response\)"
        ),
        " (the most a listing may hold)",
    ),
    (re.compile(r"pass expected_size or expected_sha256"), "pass --sha256"),
)


def _in_cli_terms(message: str) -> str:
    """``message`` with the library's Python wording in the command line's terms."""
    for pattern, replacement in _CLI_TERMS:
        message = pattern.sub(replacement, message)
    return message


def _said(body: object) -> str | None:
    """What a JSON error body says, in words: ``{"error": {"message": ...}}``, ``{"error": "..."}``,
    ``{"detail": "..."}`` or FastAPI's ``{"detail": [{"msg": ...}]}``, ``{"message": ...}``."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    for said in (error, body.get("detail"), body.get("message")):
        if isinstance(said, str) and said:
            return said
    detail = body.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) and "msg" in d for d in detail):
        return "; ".join(str(d["msg"]) for d in detail)
    return None


class _Formatter(argparse.HelpFormatter):
    """argparse's help, with the epilog's paragraphs kept apart (each wrapped on its own)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            super(_Formatter, self)._fill_text(part, width, indent) for part in text.split("\n\n")
        )


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
        message = _in_cli_terms(" ".join(_message(exc).split())) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


def _message(exc: BaseException) -> str:
    """An error's one line: an OSError's text with its file named once, without ``[Errno N]``; an
    API error's JSON body (``{"error": {"message"}}``, ``{"detail"}``) as its message."""
    from .._exceptions import APIStatusError

    if isinstance(exc, APIStatusError) and (said := _said(exc.body)) is not None:
        return f"Error code: {exc.status_code} - {said}"
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename
        return exc.strerror if name is None or str(name) in exc.strerror else f"{exc.strerror}: {name}"
    return str(exc)
