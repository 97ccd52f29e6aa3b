"""Progress on stderr for every command that transfers bytes: ``ProgressReporter`` decides, once,
between a tqdm bar (a terminal with tqdm installed) and plain occasional lines (anything else, so
cron logs stay readable: at most one per ~10 s or per 10%, never a ``\\r``). tqdm is imported only
when a bar is drawn."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressReporter", "SyncProgress", "format_size"]


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


class SyncProgress:
    """``progress(tinker_path, done, total)`` for a sync: one ``ProgressReporter`` per checkpoint."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.path: str | None = None
        self.reporter: ProgressReporter | None = None

    def __enter__(self) -> SyncProgress:
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
