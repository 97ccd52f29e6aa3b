"""``Receiver``: a body's bytes into ``dest.part``, written and hashed, then fsynced, verified and
renamed into place; ``ProgressThrottle``, the one pace of progress callbacks.

Rules:
1. Memory is constant: a ``Receiver`` reads into a reused buffer, no bigger
   than its share of the process's read budget (``_buffers``), and writes and
   hashes it on the reading thread; with checksums to compute and no more
   downloads running than CPUs, a few buffers go to a worker thread instead
   (``_workers.Worker``), so that hashing overlaps the network reads.
2. Nothing appears at ``dest`` until every byte arrived, the size and every
   checksum on offer matched, and the data was fsynced. Leaving the block
   without ``complete()`` removes the ``.part`` and its sidecar, unless it is
   kept for a later run to resume.
3. The caller decides what the bytes are (which response, which offset); this
   module only stores, hashes, verifies and renames them.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from . import _buffers
from ._checksums import Checksum, hash_prefix, new_hasher, verify
from ._exceptions import DownloadIntegrityError
from ._files import PartFile, check_disk_space, open_regular
from ._workers import Worker

__all__ = ["BUFFER_SIZE", "COMMIT_INTERVAL", "Progress", "ProgressThrottle", "Receiver"]

log = logging.getLogger("tinker_sync")

Progress = Callable[[int, "int | None"], None]

# Progress is reported at most this often (seconds), or every 1% of the total.
PROGRESS_INTERVAL = 0.1
# Bytes read from the network per buffer, and buffers in flight per download:
# the reader fills one while the worker writes and hashes the others, so a
# download holds at most BUFFERS * buffer_size (1 MiB by default).
BUFFER_SIZE = 256 * 1024
BUFFERS = 4
# A buffer goes to the disk when full, or when it has waited this long (seconds): a slow body
# still reaches the file, and the progress callback, as it arrives.
COMMIT_INTERVAL = 0.1
# A worker thread hashes while the reader reads only when there is hashing to do (measured: one
# 1 GiB download with MD5 takes 2.3 s with it, 2.6 s without; with no checksum 1.2 s with it and
# 1.0 s without) and no more bodies are being read than CPUs (beyond, they are the parallelism:
# 1,000 downloads with a thread and 4 buffers each held 969 MB, inline 117 MB, and finished sooner).
THREADED_MAX = os.cpu_count() or 1


class ProgressThrottle:
    """Calls ``progress(done, total)`` at most every PROGRESS_INTERVAL s or 1% of ``total``, and at the end."""

    def __init__(self, progress: Progress | None, total: int | None, done: int = 0) -> None:
        self.progress = progress
        self.total = total
        self.done = done
        self._next_bytes = 0
        self._next_time = 0.0
        self._step = max(1, total // 100) if total else 1 << 62
        self.report()

    def add(self, n: int) -> None:
        """Count ``n`` more bytes; report when due."""
        self.done += n
        if self.progress is not None and (
            self.done >= self._next_bytes or time.monotonic() >= self._next_time
        ):
            self.report()

    def report(self) -> None:
        """Report now."""
        if self.progress is not None:
            self._next_bytes = self.done + self._step
            self._next_time = time.monotonic() + PROGRESS_INTERVAL
            self.progress(self.done, self.total)


class Receiver:
    """Writes a body into ``dest.part`` from ``offset``: hashed, verified, renamed into place.

    Use as a context manager::

        with Receiver(part, checks=..., total=...) as receiver:
            while n := read_into(receiver.buffer()):
                receiver.commit(n)
            receiver.complete()

    ``buffer()`` lends a buffer to read into, ``commit(n)`` hands its first
    ``n`` bytes to the worker thread that writes and hashes them, and
    ``complete()`` drains, fsyncs, verifies and renames. Leaving the block
    without ``complete()`` stops the worker and removes the ``.part`` and its
    sidecar, unless ``keep`` is set and the sidecar exists (a later run resumes).

    Args:
        offset: bytes already in the ``.part`` (hashed first, to verify the whole).
        checks: the digests the whole file must have.
        total: the resource's size, when known; expected_size: the caller's.
        progress: ``progress(done, total)``, throttled, in bytes of the file.
        buffer_size: the most bytes per read (and per write); less when many bodies are read at
            once (its lease of the read budget, ``_buffers``).
        threaded: True writes and hashes on a worker thread with up to BUFFERS buffers; False on
            the caller's thread, with one buffer; None (the default) chooses (see THREADED_MAX).
        keep: keep the ``.part`` on failure when its sidecar exists.
    """

    def __init__(
        self,
        part: PartFile,
        *,
        offset: int = 0,
        checks: Sequence[Checksum] = (),
        total: int | None = None,
        expected_size: int | None = None,
        progress: Progress | None = None,
        buffer_size: int = BUFFER_SIZE,
        threaded: bool | None = None,
        keep: bool = False,
    ) -> None:
        self.part = part
        self.total = total
        self.expected_size = expected_size
        self.keep = keep
        self._progress = progress
        self._checks = list(checks)
        self._buffer_size = buffer_size
        self._check_sizes()
        needed = total if total is not None else expected_size
        if needed is not None:
            check_disk_space(part.dest, needed - offset)
        flags = os.O_RDWR | os.O_CREAT | (0 if offset else os.O_TRUNC)
        self._file: BinaryIO = os.fdopen(open_regular(part.part, flags), "r+b")
        self._hashers = {c.algorithm: new_hasher(c.algorithm) for c in self._checks}
        if offset:
            hash_prefix(self._file, offset, self._hashers.values())
            self._file.seek(offset)
            self._file.truncate()
        self._throttle = ProgressThrottle(progress, total, offset)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._allocated = 0
        self._lent: bytearray | None = None
        self._inline: bytearray | None = None
        self._worker: Worker[tuple[bytearray, int]] | None = None
        self._lease = _buffers.Lease()  # closed in _close
        if threaded is None:
            threaded = bool(self._checks) and _buffers.active() <= THREADED_MAX
        if threaded and self._lease.resize(BUFFERS * buffer_size) >= BUFFERS * buffer_size:
            self._worker = Worker(self._store, depth=BUFFERS, name="tinker-sync-write")
        self._done = False

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if self._done:
            return
        keep = self.keep and exc_type is not DownloadIntegrityError and self.part.sidecar.exists()
        try:
            self._close(abort=not keep)  # kept: write what was received, for the next run to resume
        except Exception as exc:  # noqa: BLE001 - the error being raised matters more
            log.warning("Could not write the last received bytes of %s: %s", self.part.part, exc)
        if not keep:
            self.part.discard()

    def _check_sizes(self) -> None:
        if self.expected_size is not None and self.total is not None and self.expected_size != self.total:
            raise DownloadIntegrityError(
                f"Size mismatch for {self.part.dest}: expected {self.expected_size} bytes (expected_size), "
                f"the server announces {self.total}"
            )

    @property
    def confirmable(self) -> bool:
        """Whether ``complete()`` can confirm the file is whole: a known size or a checksum to match."""
        return self.total is not None or self.expected_size is not None or bool(self._checks)

    def _store(self, item: tuple[bytearray, int]) -> None:
        buffer, n = item
        view = memoryview(buffer)[:n]
        try:
            self._file.write(view)
            for hasher in self._hashers.values():
                hasher.update(view)
        finally:
            view.release()
            if self._worker is not None:
                self._free.put(buffer)

    def buffer(self) -> memoryview:
        """A buffer to read the next bytes into (waits while every buffer is being written)."""
        if self._lent is None:
            if self._worker is None:  # one buffer, resized to the body's share of the read budget
                size = min(self._lease.resize(self._buffer_size), self._buffer_size)
                if self._inline is None or len(self._inline) != size:
                    self._inline = bytearray(size)
                self._lent = self._inline
            elif self._allocated < BUFFERS and self._free.empty():
                self._allocated += 1
                self._lent = bytearray(self._buffer_size)
            else:
                self._lent = self._free.get()
        return memoryview(self._lent)

    def commit(self, n: int) -> None:
        """Write and hash the first ``n`` bytes of the buffer lent by ``buffer()``."""
        buffer, self._lent = self._lent, None
        assert buffer is not None, "commit() without buffer()"
        if self._worker is not None:
            self._worker.put((buffer, n))
        else:
            self._store((buffer, n))
        self._throttle.add(n)

    def _drain(self) -> None:
        if self._worker is not None:
            self._worker.join()

    def restart(self, checks: Sequence[Checksum], total: int | None) -> None:
        """Start the file again from byte 0 (the resource came back whole, maybe changed)."""
        self._drain()
        self._file.seek(0)
        self._file.truncate()
        self.total = total
        self._check_sizes()
        self._checks = list(checks)
        self._hashers = {c.algorithm: new_hasher(c.algorithm) for c in self._checks}
        self._throttle = ProgressThrottle(self._progress, total)

    def _close(self, *, abort: bool) -> None:
        try:
            if self._worker is not None:
                self._worker.close(abort=abort)
        finally:
            self._file.close()
            self._lease.close()

    def complete(self, *, length: int | None = None) -> int:
        """Drain, fsync, verify (size against ``total``, ``expected_size`` and ``length``) and rename.

        Returns:
            The size of the final file.

        Raises:
            DownloadIntegrityError: a size or digest mismatch (the ``.part`` is removed).
        """
        try:
            self._drain()
            self._file.flush()
            os.fsync(self._file.fileno())
            size = self._file.tell()
        finally:
            self._close(abort=False)
        self._throttle.report()
        sizes = (
            (self.total, "the server's length"),
            (self.expected_size, "expected_size"),
            (length, "the length"),
        )
        verify(self.part.dest, size, sizes, self._checks, self._hashers)
        self._done = True
        self.part.finish()
        return size
