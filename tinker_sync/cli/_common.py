"""What every command shares: exit codes, output (stdout: a table or JSON; stderr: diagnostics),
the client from the environment, the "out of retries, kept, run again" error, the argument types
and the options several commands take. Nothing here runs a command."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

from ._progress import format_size

if TYPE_CHECKING:
    from .._client import Client
    from .._exceptions import TinkerError
    from .._observe import RetryInfo

PROG = "tinker-sync"
X = TypeVar("X")

# ``checkpoint sync``: 0 when the mirror was current (or another sync holds it), else these; an
# error (nothing synced: the run could not be listed, ...) is 1 and a usage error 2, as everywhere.
EXIT_SYNCED = 3
EXIT_PARTIAL = 4

# List commands fetch this many items per request.
PAGE_SIZE = 100

Command = Callable[[argparse.Namespace], int]


class AddCommand(Protocol):
    """``command(group, name, func, **add_parser_kwargs)``: a subcommand running ``func``, with the
    options every command takes (``--format``, ``--quiet``); ``build_parser`` hands it to each group."""

    def __call__(self, group: Any, name: str, func: Command, **kw: Any) -> argparse.ArgumentParser: ...


# -- output -----------------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print a result on stdout: JSON (``data``, Structs included) or a plain-text table."""
    if args.format == "json":
        import msgspec

        print(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())
        return
    print(title)
    if not rows:
        return
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
    for line in (columns, ["-" * w for w in widths], *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def when(value: datetime | None, default: str = "-") -> str:
    """A table cell for a time: ``2025-06-15 12:00 UTC``, or ``default``."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else default


def lora(is_lora: bool | None, rank: int | None) -> str:
    """A table cell for LoRA: ``Rank 8``, ``Yes`` or ``No``."""
    return (f"Rank {rank}" if rank else "Yes") if is_lora else "No"


def size_cell(value: int | None) -> str:
    """A table cell for a size: ``1.5 KiB``, or ``N/A``."""
    return format_size(value) if value is not None else "N/A"


def more(shown: int, total: int | None) -> str:
    """The title's note on items a ``--limit`` left out."""
    left = (total or 0) - shown
    return f" ({left} more not shown, use --limit to see more)" if left > 0 else ""


def say_to(args: argparse.Namespace) -> Callable[[str], None]:
    """Diagnostics: one line on stderr, unless ``--quiet``."""

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    return say


class _Discard(io.TextIOBase):
    """Where ``--quiet`` sends progress."""

    def write(self, text: str) -> int:
        return len(text)


def diagnostics(args: argparse.Namespace) -> TextIO:
    """Where progress and notes go: stderr, or nowhere under ``--quiet``."""
    return _Discard() if args.quiet else sys.stderr  # type: ignore[return-value]


def collect(
    fetch: Callable[[int, int], tuple[list[X], int | None, int | None]], limit: int
) -> tuple[list[X], int | None]:
    """Up to ``limit`` items (0: all), ``PAGE_SIZE`` a request, and the total the API reported.

    ``fetch`` answers as ``iterate_pages`` wants it: items, total, and the page's own offset."""
    from ..resources._resource import iterate_pages

    total: list[int | None] = [None]

    def page(offset: int, size: int) -> tuple[list[X], int | None, int | None]:
        items, total[0], answered = fetch(offset, size)
        return items, total[0], answered

    return list(iterate_pages(page, limit=PAGE_SIZE, max_items=limit or None)), total[0]


def version() -> str:
    """``tinker-sync 0.1.0 (SSE decoder: cython)``; a pure-Python install says so."""
    from .._version import __version__
    from ..sse import IMPLEMENTATION

    note = ""
    if IMPLEMENTATION == "python":  # built without the extension, or told not to use it
        built_pure = (Path(__file__).parent.parent / "_pure_build").exists()
        note = (
            ", a pure-Python install"
            if built_pure
            else ", chosen by TINKER_SYNC_NO_EXTENSIONS or the interpreter"
        )
    return f"{PROG} {__version__} (SSE decoder: {IMPLEMENTATION}{note})"


# -- the client and its errors ----------------------------------------------------------------------


def client_from(args: argparse.Namespace) -> Client:
    """The client, from the environment; ``--max-retries`` over ``TINKER_MAX_RETRIES`` over the default.

    Like the official CLI, it fetches the server's flags first and follows them (JWT auth).
    """
    from .._client import Client
    from .._config import max_retries_from_env

    retries = args.max_retries if args.max_retries is not None else max_retries_from_env()
    hooks: dict[str, list[Callable[[Any], object]]] = {} if args.quiet else {"retry": [say_retry]}
    options: dict[str, Any] = {
        "event_hooks": hooks,
        "proxy_tunnel": bool(getattr(args, "proxytunnel", False)),  # -p: http:// through CONNECT too
    }
    if retries is not None:
        options["max_retries"] = retries
    return Client(**options)


def say_retry(info: RetryInfo) -> None:
    """One line on stderr per retry, resume or reconnect, as curl --retry and pip print them:
    ``Retrying in 2.3 s (attempt 3 of 11): connection refused``."""
    reason = " ".join(str(info.reason).split())
    print(
        f"{PROG}: Retrying in {info.wait:.1f} s (attempt {info.failures + 1} of {info.max_retries + 1}): {reason}",
        file=sys.stderr,
        flush=True,
    )


def out_of_retries(exc: BaseException) -> bool:
    """Whether ``exc`` ended a download that retries could have mended (a connection failure, a 5xx, ...)."""
    from .._exceptions import APIConnectionError, APIStatusError
    from .._retry import NEVER_RETRIED, should_retry_status

    if isinstance(exc, APIConnectionError):
        return exc.cause not in NEVER_RETRIED
    if isinstance(exc, APIStatusError):
        return should_retry_status(exc.status_code, getattr(exc.response, "headers", None) or {})
    return False


def kept(what: Path, exc: BaseException) -> TinkerError:
    """``exc`` (out of retries) with what was kept and how to resume it."""
    from .._exceptions import TinkerError

    if what.is_dir():
        note = f"the partial download {what} was kept"
    else:
        note = f"the partial file {what} ({what.stat().st_size} bytes) was kept"
    return TinkerError(f"{exc} (out of retries); {note}: run the same command again to resume")


# -- arguments --------------------------------------------------------------------------------------


def _retries_arg(value: str) -> int:
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return int(value)


def _connections_arg(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")
    return int(value)


def _count_arg(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {count}")
    return count


def add_connections(parser: argparse.ArgumentParser) -> None:
    """``--connections N|auto``: for the commands that download files."""
    parser.add_argument(
        "--connections",
        type=_connections_arg,
        default="auto",
        metavar="N",
        help="connections per file when the server takes byte ranges (default: auto: 1 below 32 MiB, "
        "one more per 16 MiB, up to 8)",
    )


def add_max_retries(parser: argparse.ArgumentParser) -> None:
    """``--max-retries N``: for every command (read by ``client_from``), through the options all
    subcommands share."""
    parser.add_argument(
        "--max-retries",
        type=_retries_arg,
        metavar="N",
        help="failures in a row without progress before giving up (default: TINKER_MAX_RETRIES, else 10)",
    )


def add_proxytunnel(parser: argparse.ArgumentParser) -> None:
    """``-p/--proxytunnel`` (curl's): for every command (read by ``client_from``), through the options
    all subcommands share. Without it, http:// URLs go to the proxy in absolute form."""
    parser.add_argument(
        "-p",
        "--proxytunnel",
        action="store_true",
        help="tunnel http:// URLs through the proxy (HTTP_PROXY) with CONNECT too, as curl -p does; "
        "https:// URLs are always tunnelled",
    )


def add_limit(parser: argparse.ArgumentParser) -> None:
    """``--limit N``: for the list commands (read by ``collect``)."""
    parser.add_argument(
        "--limit", type=_count_arg, default=20, metavar="N", help="show at most N (default 20; 0: all)"
    )


def add_access_scope(parser: argparse.ArgumentParser) -> None:
    """``--access-scope owned|accessible``: for the training-run commands."""
    parser.add_argument(
        "--access-scope",
        choices=("owned", "accessible"),
        default="owned",
        help="owned (default) or accessible",
    )
