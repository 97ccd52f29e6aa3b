"""The ``tinker-sync`` command line (argparse); ``python -m tinker_sync`` runs it too.

Rules:
1. ``main(argv=None) -> int``: 0 on success, 1 on an expected error (one
   line on stderr, no traceback), 2 on a usage error, 130 on Ctrl-C;
   ``checkpoint sync`` tells its outcomes apart: 0 nothing to do, 3 synced,
   4 partial failure (``EXIT_*`` below).
2. Results go to stdout (``--format table``, the default, or ``json`` for
   scripts, with the official CLI's JSON shapes); diagnostics to stderr
   (``--quiet`` silences all but errors).
3. Progress goes to stderr: a tqdm bar on a terminal, plain occasional lines
   otherwise (at most one per ~10 s or per 10%, never a ``\\r``), so cron
   logs stay readable. ``ProgressReporter`` is the one place that decides.
3. The client is built from the environment (``TINKER_API_KEY``,
   ``TINKER_BASE_URL``, ``TINKER_MAX_RETRIES``, proxies and CAs); tqdm is
   imported only when a bar is drawn, and without it (a plain
   ``pip install tinker-sync``) a terminal gets the plain lines too.
4. A download that runs out of retries says what was kept and that
   running the same command again resumes it.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from ._client import Client
    from ._exceptions import TinkerError
    from ._response import Connections

__all__ = ["ProgressReporter", "build_parser", "format_size", "main"]

PROG = "tinker-sync"
X = TypeVar("X")

# ``checkpoint sync``: 0 when the mirror was current (or another sync holds it), else these; an
# error (nothing synced: the run could not be listed, ...) is 1 and a usage error 2, as everywhere.
EXIT_SYNCED = 3
EXIT_PARTIAL = 4


def format_size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable


class ProgressReporter:
    """A ``progress(done, total)`` callback that shows a transfer on ``stream`` (stderr).

    On a terminal: a tqdm bar (bytes, rate, ETA). Otherwise: plain lines, at
    most one per ``interval`` seconds or per ``step`` of the total, without
    ``\\r``. A ``done`` lower than before (a restart from zero) is shown as such.
    Use as a context manager; ``summary(path, size)`` prints the final line.

    Reused by every command that transfers bytes (``download``, ``checkpoint
    download``, ``demo``); ``note(message)`` prints a line above the bar.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        interval: float = 10.0,
        step: float = 0.1,
        bar: bool | None = None,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.step = step
        self.bar_enabled = _isatty(self.stream) if bar is None else bar
        self.started = time.monotonic()
        self._bar: Any = None
        self._last_line = 0.0
        self._last_fraction = -1.0
        self._done = 0

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar_enabled:
            self._update_bar(done, total)
        else:
            self._maybe_line(done, total)
        self._done = done

    def _update_bar(self, done: int, total: int | None) -> None:
        if self._bar is None:
            try:
                from tqdm import tqdm  # lazy: only a terminal needs it
            except ImportError:  # tqdm is the [cli] extra: without it, plain lines
                self.bar_enabled = False
                self._maybe_line(done, total)
                return

            self._bar = tqdm(
                total=total,
                initial=0,
                desc=self.label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self.stream,
                leave=True,
                # A terminal reporting 0x0 (an unsized pty) would make tqdm draw nothing.
                **({"dynamic_ncols": True} if _columns(self.stream) else {"ncols": 80, "nrows": 24}),
            )
        bar = self._bar
        if total is not None and bar.total != total:
            bar.total = total
        if done < bar.n:
            bar.reset(total=total)
        bar.update(done - bar.n)

    def _maybe_line(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if done < self._done:
            self._print(f"{self.label}: restarting from byte 0")
            self._last_fraction = 0.0
        fraction = done / total if total else None
        due_time = now - self._last_line >= self.interval
        due_step = fraction is not None and fraction - self._last_fraction >= self.step - 1e-9
        if self._last_line and not (due_time or due_step):
            return
        if fraction is not None:
            fraction_step = int(fraction / self.step) * self.step if self.step else fraction
            self._last_fraction = fraction_step
        self._last_line = now
        elapsed = now - self.started
        rate = f", {format_size(done / elapsed)}/s" if elapsed > 0 and done else ""
        if total:
            self._print(
                f"{self.label}: {format_size(done)} / {format_size(total)} ({100 * done / total:.0f}%{rate})"
            )
        else:
            self._print(f"{self.label}: {format_size(done)}{rate}")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def note(self, message: str) -> None:
        """Print a one-line note (archive being prepared, transfer resumed) without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self._print(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, path: str | os.PathLike[str], size: int) -> None:
        """Close the bar and print the final line: path, size and time taken."""
        self.close()
        elapsed = time.monotonic() - self.started
        rate = f", {format_size(size / elapsed)}/s" if elapsed > 0 else ""
        self._print(f"Saved {os.fspath(path)} ({format_size(size)}, {size} bytes) in {elapsed:.1f} s{rate}")


def _columns(stream: Any) -> int:
    """The terminal's width, 0 when unknown (a pty nobody sized): tqdm would draw nothing."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# -- output -----------------------------------------------------------------------------------------

# List commands fetch this many items per request.
PAGE_SIZE = 100


def _emit(args: argparse.Namespace, data: Any, title: str, columns: list[str], rows: list[list[str]]) -> None:
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


def _when(value: datetime | None, default: str = "-") -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else default


def _lora(is_lora: bool | None, rank: int | None) -> str:
    return (f"Rank {rank}" if rank else "Yes") if is_lora else "No"


def _size(value: int | None) -> str:
    return format_size(value) if value is not None else "N/A"


def _more(shown: int, total: int | None) -> str:
    left = (total or 0) - shown
    return f" ({left} more not shown, use --limit to see more)" if left > 0 else ""


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    """Diagnostics: one line on stderr, unless ``--quiet``."""

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    return say


# -- commands ---------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    """The client, from the environment; ``--max-retries`` over ``TINKER_MAX_RETRIES`` over the default."""
    from ._client import Client
    from ._config import max_retries_from_env

    retries = args.max_retries if args.max_retries is not None else max_retries_from_env()
    return Client() if retries is None else Client(max_retries=retries)


def _out_of_retries(exc: BaseException) -> bool:
    """Whether ``exc`` ended a download that retries could have mended (a connection failure, a 5xx, ...)."""
    from ._exceptions import APIConnectionError, APIStatusError
    from ._retry import NEVER_RETRIED, should_retry_status

    if isinstance(exc, APIConnectionError):
        return exc.cause not in NEVER_RETRIED
    if isinstance(exc, APIStatusError):
        return should_retry_status(exc.status_code, getattr(exc.response, "headers", None) or {})
    return False


def _kept(what: Path, exc: BaseException) -> TinkerError:
    """``exc`` (out of retries) with what was kept and how to resume it."""
    from ._exceptions import TinkerError

    if what.is_dir():
        kept = f"the partial download {what} was kept"
    else:
        kept = f"the partial file {what} ({what.stat().st_size} bytes) was kept"
    return TinkerError(f"{exc} (out of retries); {kept}: run the same command again to resume")


def _cmd_download(args: argparse.Namespace) -> int:
    from ._exceptions import APIError
    from ._files import destination

    label = os.path.basename(args.output) or args.output
    with _client(args) as client, ProgressReporter(label, stream=_diagnostics(args)) as reporter:
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
            if _out_of_retries(exc) and part.is_file() and Path(f"{dest}.part.json").is_file():
                raise _kept(part, exc) from exc
            raise
        reporter.summary(path, os.path.getsize(path))
    return 0


class _Discard(io.TextIOBase):
    """Where ``--quiet`` sends progress."""

    def write(self, text: str) -> int:
        return len(text)


def _diagnostics(args: argparse.Namespace) -> TextIO:
    return _Discard() if args.quiet else sys.stderr  # type: ignore[return-value]


def _checkpoint_download(
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
    from ._exceptions import APIError

    with _client(args) as client:
        try:
            path, size = _checkpoint_download(
                client, args.tinker_path, args.output, args.force, _diagnostics(args), args.connections
            )
        except APIError as exc:
            name = args.tinker_path.removeprefix("tinker://").replace("/", "_")
            partial = Path(args.output) / f".{name}.partial"
            if _out_of_retries(exc) and partial.is_dir():
                raise _kept(partial, exc) from exc
            raise
    if args.format == "json":
        _emit(
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
    say = _say(args)
    with _client(args) as client, _SyncProgress(_diagnostics(args)) as bars:
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
        _emit(args, report, "", [], [])
    elif rows:
        title = (
            f"{report.run_id} -> {report.output_dir}: {len(report.downloaded)} downloaded, "
            f"{len(report.failed)} failed, {len(report.pruned)} pruned, {len(report.current)} already current"
        )
        _emit(args, report, title, ["Change", "Checkpoint", "Size", "Where / why"], rows)
    else:
        say(f"{report.run_id} -> {report.output_dir}: nothing to do ({len(report.current)} current)")
    return {"synced": EXIT_SYNCED, "partial failure": EXIT_PARTIAL}.get(report.status, 0)


class _SyncProgress:
    """``progress(tinker_path, done, total)`` for a sync: one ``ProgressReporter`` per checkpoint."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.path: str | None = None
        self.reporter: ProgressReporter | None = None

    def __enter__(self) -> _SyncProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._finish()

    def __call__(self, path: str, done: int, total: int | None) -> None:
        if path != self.path:
            self._finish()
            self.path, self.reporter = path, ProgressReporter(path.rsplit("/", 1)[-1], stream=self.stream)
        assert self.reporter is not None
        self.reporter(done, total)

    def note(self, message: str) -> None:
        if self.reporter is not None:
            self.reporter.note(message)
        else:
            print(message, file=self.stream, flush=True)

    def _finish(self) -> None:
        if self.reporter is not None:
            self.reporter.close()
            self.reporter = None


def _collect(
    fetch: Callable[[int, int], tuple[list[X], int | None]], limit: int
) -> tuple[list[X], int | None]:
    """Up to ``limit`` items (0: all), ``PAGE_SIZE`` a request, and the total the API reported."""
    from .resources._resource import iterate_pages

    total: list[int | None] = [None]

    def page(offset: int, size: int) -> tuple[list[X], int | None]:
        items, total[0] = fetch(offset, size)
        return items, total[0]

    return list(iterate_pages(page, limit=PAGE_SIZE, max_items=limit or None)), total[0]


def _cmd_run_list(args: argparse.Namespace) -> int:
    from ._client import Client
    from .resources.types import TrainingRun

    with Client() as client:

        def fetch(offset: int, size: int) -> tuple[list[TrainingRun], int | None]:
            page = client.training_runs.list(limit=size, offset=offset, access_scope=args.access_scope)
            return page.training_runs, page.cursor.total_count

        found, total = _collect(fetch, args.limit)
    title = f"{len(found)} training run{'' if len(found) == 1 else 's'}{_more(len(found), total)}"
    columns = ["Run ID", "Base Model", "Owner", "LoRA", "Last Update", "Status"]
    rows = [
        [
            r.training_run_id,
            r.base_model,
            r.model_owner,
            _lora(r.is_lora, r.lora_rank),
            _when(r.last_request_time),
            "Failed" if r.corrupted else "OK",
        ]
        for r in found
    ]
    _emit(args, {"runs": found}, title if found else "No training runs found", columns, rows)
    return 0


def _cmd_run_info(args: argparse.Namespace) -> int:
    from ._client import Client

    with Client() as client:
        run = client.training_runs.get(args.run_id, access_scope=args.access_scope)
    rows = [
        ["Run ID", run.training_run_id],
        ["Base Model", run.base_model],
        ["Owner", run.model_owner],
        ["LoRA", _lora(run.is_lora, run.lora_rank)],
        ["Last Update", _when(run.last_request_time)],
        ["Status", "Failed" if run.corrupted else "OK"],
    ]
    for label, checkpoint in (("Training", run.last_checkpoint), ("Sampler", run.last_sampler_checkpoint)):
        if checkpoint is not None:
            rows.append([f"Last {label} Checkpoint", checkpoint.tinker_path])
            rows.append(["  - Time", _when(checkpoint.time)])
    rows += [[f"Metadata {key}", value] for key, value in (run.user_metadata or {}).items()]
    _emit(args, run, f"Training run {run.training_run_id}", ["Property", "Value"], rows)
    return 0


def _cmd_checkpoint_list(args: argparse.Namespace) -> int:
    from ._client import Client
    from .resources.types import Checkpoint

    run_id = args.run or args.run_id
    total: int | None = None
    with Client() as client:
        if run_id:
            found = client.checkpoints.list_for_run(run_id).checkpoints
        else:

            def fetch(offset: int, size: int) -> tuple[list[Checkpoint], int | None]:
                page = client.checkpoints.list(limit=size, offset=offset)
                return page.checkpoints, page.cursor.total_count if page.cursor is not None else None

            found, total = _collect(fetch, args.limit)
    where = f" for run {run_id}" if run_id else ""
    count = f"{len(found)} checkpoint{'' if len(found) == 1 else 's'}{where}{_more(len(found), total)}"
    columns = ["Checkpoint ID", "Type", "Size", "Public", "Created", "Expires", "Path"]
    rows = [
        [
            c.checkpoint_id,
            c.checkpoint_type,
            _size(c.size_bytes),
            "Yes" if c.public else "No",
            _when(c.time),
            _when(c.expires_at, "Never"),
            c.tinker_path,
        ]
        for c in found
    ]
    data: dict[str, Any] = {"run_id": run_id} if run_id else {}
    data["checkpoints"] = found
    _emit(args, data, count if found else f"No checkpoints found{where}", columns, rows)
    return 0


def _cmd_checkpoint_info(args: argparse.Namespace) -> int:
    import msgspec

    from ._client import Client
    from .resources._paths import parse_tinker_path

    path = parse_tinker_path(args.tinker_path)
    with Client() as client:
        checkpoint = client.checkpoints.get(args.tinker_path)
        run = client.training_runs.get(path.run, access_scope="accessible")
    rows = [
        ["Checkpoint ID", checkpoint.checkpoint_id],
        ["Type", checkpoint.checkpoint_type],
        ["Tinker Path", checkpoint.tinker_path],
        ["Size", _size(checkpoint.size_bytes)],
        ["Public", "Yes" if checkpoint.public else "No"],
        ["Created", _when(checkpoint.time)],
        ["Expires", _when(checkpoint.expires_at, "Never")],
        ["Training Run ID", path.run],
        ["Base Model", run.base_model],
        ["LoRA", _lora(run.is_lora, run.lora_rank)],
    ]
    data = msgspec.to_builtins(checkpoint) | {"is_lora": run.is_lora, "lora_rank": run.lora_rank}
    _emit(args, data, f"Checkpoint {checkpoint.checkpoint_id}", ["Property", "Value"], rows)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The mock server in-process: a few streamed sampling events, then a checkpoint download that
    survives an injected connection reset."""
    from ._client import Client
    from .testing import Fault, MockTinkerServer  # lazy: only the demo runs a server

    size = int(args.size * (1 << 20))
    # trust_env=False: the server is in this process, on loopback; a proxy from the environment could not reach it.
    with (
        MockTinkerServer() as server,
        Client(api_key=server.api_key, base_url=server.url, trust_env=False) as client,
    ):
        print(f"Mock Tinker server at {server.url}")
        print(_version().removeprefix(f"{PROG} "))
        print("Streaming a sample (client.sampling.stream_sample):")
        for chunk in client.sampling.stream_sample("Hello", max_tokens=6):
            if chunk.event_type == "token":
                print(f"  token {chunk.index}: {chunk.token!r}")
            else:
                print(
                    f"  {chunk.event_type}: finish_reason={chunk.finish_reason} total_tokens={chunk.total_tokens}"
                )
        path = "tinker://demo-run/weights/demo"
        server.add_checkpoint(path, size=size, seed=1)
        server.script("/signed/", Fault(reset_after=size // 2))  # one connection reset mid-transfer
        print(
            f"Downloading {path} ({format_size(size)}); the server resets the connection halfway:", flush=True
        )
        target, total = _checkpoint_download(client, path, args.output, True, _diagnostics(args))
        resumed = [r for r in server.requests if r.path.startswith("/signed/") and "range" in r.headers]
        for request in resumed:
            print(f"Resumed after the reset with {request.headers['range']} (the extraction never noticed)")
        print(f"Checkpoint extracted to {target} ({format_size(total)}):")
        for file in sorted(p for p in Path(target).rglob("*") if p.is_file()):
            print(f"  {file.relative_to(target)}  {file.stat().st_size} bytes")
    return 0


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


def _add_connections(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connections",
        type=_connections_arg,
        default="auto",
        metavar="N",
        help="connections per file when the server takes byte ranges (default: auto: 1 below 32 MiB, "
        "one more per 16 MiB, up to 8)",
    )


def _add_max_retries(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-retries",
        type=_retries_arg,
        metavar="N",
        help="failures in a row without progress before giving up (default: TINKER_MAX_RETRIES, else 10)",
    )


def _version() -> str:
    """``tinker-sync 0.1.0 (SSE decoder: cython)``; a pure-Python install says so."""
    from ._version import __version__
    from .sse import IMPLEMENTATION

    note = ""
    if IMPLEMENTATION == "python":  # built without the extension, or told not to use it
        built_pure = Path(__file__).with_name("_pure_build").exists()
        note = (
            ", a pure-Python install"
            if built_pure
            else ", chosen by TINKER_SYNC_NO_EXTENSIONS or the interpreter"
        )
    return f"{PROG} {__version__} (SSE decoder: {IMPLEMENTATION}{note})"


def _sha256_arg(value: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits, got {value!r}")
    return text


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
    parser = options(
        argparse.ArgumentParser(prog=PROG, description="A synchronous, streaming-first Tinker API client."),
        "table",
        False,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(group: Any, name: str, func: Callable[[argparse.Namespace], int], **kw: Any) -> Any:
        sub = group.add_parser(name, parents=[common], **kw)
        sub.set_defaults(func=func)
        return sub

    download = command(
        commands,
        "download",
        _cmd_download,
        help="download a URL or API path to a file (atomic, verified, resumable)",
        description="Download to FILE via FILE.part; verified against the size and checksums on offer; "
        "an interrupted run resumes where it stopped.",
    )
    download.add_argument(
        "url_or_path", metavar="URL_OR_PATH", help="an absolute URL or a path under TINKER_BASE_URL"
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
    _add_connections(download)
    _add_max_retries(download)

    scope = {"choices": ("owned", "accessible"), "default": "owned", "help": "owned (default) or accessible"}
    limit = {"type": _count_arg, "default": 20, "metavar": "N", "help": "show at most N (default 20; 0: all)"}
    run = commands.add_parser("run", help="training runs (list, info)")
    run_commands = run.add_subparsers(dest="run_command", metavar="COMMAND")
    run_commands.required = True
    run_list = command(run_commands, "list", _cmd_run_list, help="list training runs")
    run_list.add_argument("--limit", **limit)
    run_list.add_argument("--access-scope", **scope)
    run_info = command(run_commands, "info", _cmd_run_info, help="show one training run")
    run_info.add_argument("run_id", metavar="RUN_ID")
    run_info.add_argument("--access-scope", **scope)

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
    ck_list.add_argument("--limit", **limit)
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
    _add_connections(ck_download)
    _add_max_retries(ck_download)
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
    _add_connections(ck_sync)
    _add_max_retries(ck_sync)

    demo = command(
        commands, "demo", _cmd_demo, help="run a local mock server: stream a sample, download a checkpoint"
    )
    demo.add_argument("--size", type=float, default=300, metavar="MIB", help="checkpoint size in MiB (300)")
    demo.add_argument(
        "-o", "--output", default="tinker-demo", metavar="DIR", help="where to put it (./tinker-demo)"
    )
    return parser


def _positive_arg(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


def _time_arg(value: str) -> datetime:
    from .resources._sync import parse_since

    try:
        when = parse_since(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time (2025-06-15T12:00:00Z, 2025-06-15), got {value!r}"
        ) from None
    assert when is not None  # a string is never None
    return when


def _count_arg(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {count}")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tinker-sync``; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    func: Callable[[argparse.Namespace], int] = args.func
    from ._exceptions import TinkerError

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
