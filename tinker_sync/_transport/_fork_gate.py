"""The fork gate: no thread of ours is inside OpenSSL when the process forks.

OpenSSL 3 keeps process-wide locks (the primary random generator's, taken by
every ``RAND_bytes``; the algorithm store's, taken when a cipher or KDF is
fetched; the ``ex_data`` lock, taken when an SSL, session or certificate object
is made or freed). A thread that holds one at ``os.fork()`` leaves it held for
ever in the child, whose first TLS context or handshake then blocks on it.

Rules:
1. Every entry of ours into OpenSSL holds the gate shared: building a context
   (``building_context``), making the SSL object, each handshake step, read and
   write on a TLS socket (``ForkSafeSSLSocket``) or memory object
   (``ForkSafeSSLObject``, TLS inside a proxy's TLS), shutdown and close.
2. The gate is never held while waiting on the network: a socket with a timeout
   is driven non-blocking inside the gate and waits for readiness outside it,
   so each hold lasts one short OpenSSL call.
3. ``os.fork`` closes the gate (an at-fork ``before`` handler): it waits for the
   threads inside to leave, at most ``FORK_WAIT`` seconds (then forks anyway,
   with a debug log line), and opens it again in the parent; the child starts
   with a fresh, open gate.
4. Only our own calls are gated: a thread of the application using OpenSSL by
   itself (its own ``ssl`` sockets, ``hashlib``) can still hold a lock at a fork.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from urllib3.util.wait import wait_for_read, wait_for_write

from .._observe import log

__all__ = ["FORK_WAIT", "ForkSafeSSLObject", "ForkSafeSSLSocket", "building_context", "fork_safe", "gate"]

# How long a fork waits for our threads to leave OpenSSL. Each hold is one short OpenSSL call (or
# a context build, loading a CA bundle: tens of milliseconds), so this is only ever reached when a
# thread is stopped inside (a debugger, SIGSTOP); the fork then goes ahead as it did without a gate.
FORK_WAIT = 5.0

_T = TypeVar("_T")


class _Gate:
    """A reader/writer gate: many threads inside at once (shared), or a fork (exclusive)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._inside = 0
        self._closed = False

    def __enter__(self) -> None:
        with self._lock:
            while self._closed:  # a fork is on its way: wait until it is done
                self._changed.wait()
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._closed and not self._inside:
                self._changed.notify_all()

    def close(self, timeout: float) -> int:
        """Let no thread in, and wait up to ``timeout`` for those inside to leave; how many remain."""
        with self._lock:
            self._closed = True
            self._changed.wait_for(lambda: not self._inside, timeout)
            return self._inside

    def open(self) -> None:
        with self._lock:
            self._closed = False
            self._changed.notify_all()


gate = _Gate()


def _before_fork() -> None:
    remaining = gate.close(FORK_WAIT)
    if remaining:
        log.debug("forking with %d thread(s) still inside OpenSSL after %.1f s", remaining, FORK_WAIT)


def _after_fork_in_parent() -> None:
    gate.open()


def _after_fork_in_child() -> None:
    global gate
    gate = _Gate()  # the parent's threads, and their places in the gate, are not in the child


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


@contextmanager
def building_context() -> Iterator[None]:
    """Hold the gate while a TLS context is built (``SSL_CTX_new``, loading CA files)."""
    with gate:
        yield


def _timed_out(what: str) -> TimeoutError:
    return TimeoutError(f"The {what} operation timed out")  # as the ssl module words it


class ForkSafeSSLSocket(ssl.SSLSocket):
    """An ``ssl.SSLSocket`` whose every OpenSSL call holds the fork gate, and only that call."""

    _sslobj: Any  # ssl.SSLSocket's own attributes, which typeshed does not declare
    suppress_ragged_eofs: bool

    @classmethod
    def _create(cls, *args: Any, do_handshake_on_connect: bool = True, **kwargs: Any) -> ForkSafeSSLSocket:
        # ssl.SSLContext.wrap_socket's factory: makes the SSL object (gated), then shakes hands.
        with gate:
            self = super()._create(*args, do_handshake_on_connect=False, **kwargs)  # type: ignore[misc]
        self.do_handshake_on_connect = do_handshake_on_connect
        if do_handshake_on_connect and getattr(self, "_connected", True):
            try:
                self.do_handshake()
            except (OSError, ValueError):
                self.close()
                raise
        return self  # type: ignore[no-any-return]

    def _io(self, call: Callable[..., _T], what: str, *args: Any) -> _T:
        """``call(*args)`` inside the gate, waiting for the socket outside it."""
        timeout = self.gettimeout()
        if timeout == 0.0:  # non-blocking already: the caller waits, outside
            with gate:
                return call(*args)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with gate:
                self.settimeout(0.0)
                try:
                    return call(*args)
                except ssl.SSLWantReadError:
                    wait = wait_for_read
                except ssl.SSLWantWriteError:
                    wait = wait_for_write
                finally:
                    self.settimeout(timeout)
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not wait(self, left):
                raise _timed_out(what)

    def do_handshake(self, block: bool = False) -> None:
        """The handshake, one gated step at a time."""
        self._check_connected()  # type: ignore[attr-defined]
        if block and self.gettimeout() == 0.0:
            self.settimeout(None)
            try:
                self._io(super().do_handshake, "handshake")
            finally:
                self.settimeout(0.0)
            return
        self._io(super().do_handshake, "handshake")

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 - ssl.SSLSocket's names
        """Decrypted bytes, as ``ssl.SSLSocket.read``."""
        self._checkClosed()  # type: ignore[attr-defined]
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:  # on the SSL object held here: a socket shut down meanwhile reads its end, as before
            if buffer is not None:
                return self._io(_read_on, "read", sslobj, len, buffer)
            return self._io(sslobj.read, "read", len)
        except ssl.SSLError as exc:
            if exc.args[0] == ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise

    def write(self, data: Any) -> int:
        """Encrypt and send ``data``, as ``ssl.SSLSocket.write``."""
        self._checkClosed()  # type: ignore[attr-defined]
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        written: int = self._io(sslobj.write, "write", data)
        return written

    def send(self, data: Any, flags: int = 0) -> int:
        """As ``ssl.SSLSocket.send``, gated (``sendall`` sends through it)."""
        if self._sslobj is None or flags:
            return super().send(data, flags)
        return self.write(data)

    def unwrap(self) -> Any:
        """As ``ssl.SSLSocket.unwrap``, gated."""
        with gate:
            return super().unwrap()

    def shutdown(self, how: int) -> None:
        """As ``ssl.SSLSocket.shutdown``: it lets go of the SSL object (freed here, gated)."""
        with gate:
            super().shutdown(how)

    def _real_close(self) -> None:
        with gate:  # the SSL object is freed here
            super()._real_close()  # type: ignore[misc]


def _read_on(sslobj: Any, size: int, buffer: Any) -> int:
    """Read into ``buffer`` what has arrived, record after record (one ``SSL_read`` gives one TLS
    record, 16 KiB at most), in one hold of the gate and one switch to non-blocking: per record
    they cost more than the read. Stops at the first record not yet here; an error after some
    bytes is left for the next read to meet."""
    done: int = sslobj.read(size, buffer)
    if done and done < size:
        view = memoryview(buffer)
        while done < size:
            try:
                more: int = sslobj.read(size - done, view[done:])
            except ssl.SSLError:  # not here yet (want read), or the end: the next read says so
                break
            if not more:
                break
            done += more
    return done


class ForkSafeSSLObject(ssl.SSLObject):
    """An ``ssl.SSLObject`` (TLS over memory buffers) whose every OpenSSL call holds the fork gate."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> ForkSafeSSLObject:
        with gate:
            return super()._create(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 - ssl.SSLObject's names
        """As ``ssl.SSLObject.read``, gated."""
        with gate:
            return super().read(len, buffer)

    def write(self, data: Any) -> int:
        """As ``ssl.SSLObject.write``, gated."""
        with gate:
            return super().write(data)

    def do_handshake(self) -> None:
        """As ``ssl.SSLObject.do_handshake``, gated."""
        with gate:
            super().do_handshake()

    def unwrap(self) -> Any:
        """As ``ssl.SSLObject.unwrap``, gated."""
        with gate:
            return super().unwrap()


def fork_safe(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context``, its sockets and memory objects gated (unless it has socket classes of its own,
    as ``truststore``'s has: those are left as they are)."""
    if context.sslsocket_class is ssl.SSLSocket:
        context.sslsocket_class = ForkSafeSSLSocket
    if context.sslobject_class is ssl.SSLObject:
        context.sslobject_class = ForkSafeSSLObject
    return context
