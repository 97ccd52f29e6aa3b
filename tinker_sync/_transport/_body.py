"""The body reader: ``Body`` reads one response's body into the caller's buffers, straight from the socket.

Rules:
1. No read allocates: bytes go from the socket's file into the caller's
   buffer (plain, chunked and close-delimited framing alike, TLS or not), so a
   16 KiB TLS record costs a copy, not a 256 KiB allocation.
2. A body cut short (fewer bytes than Content-Length, a broken chunked
   encoding, a reset) raises APIConnectionError, never a quiet end.
3. A connection whose body was not read to its end is closed before its pool
   slot is given back: a half-read connection is never reused.
"""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
import time
from typing import Any

from urllib3.exceptions import HTTPError

from .._exceptions import APIConnectionError, APITimeoutError
from ._errors import mapped
from ._pools import watchdog
from ._request import RawResponse, Request

__all__ = ["Body"]

# While the socket file's own buffer may hold bytes (after the head, or after a read smaller than
# it), reads ask for at most its size, so that they never wait for more after copying what is
# already there.
_SMALL_READ = io.DEFAULT_BUFFER_SIZE
_MAX_LINE = 65536
# Where a chunked body's framing is: at a chunk's size line, past a chunk's data (its CRLF), in the
# trailer (after the last chunk); inside a chunk's data, ``_left`` bytes of it are still to come.
_SIZE, _DATA_END, _TRAILER = 0, 1, 2
_INSIDE_CHUNK = "Connection broken while reading the body: it ended inside a chunk"
_CUT = {
    _SIZE: "Connection broken while reading the body: it ended before its last chunk",
    _DATA_END: "Connection broken: a chunk is not followed by CRLF",
}


class Body:
    """One response's body, read into the caller's buffers as bytes arrive.

    ``readinto(view)`` returns as soon as any bytes are there (never waiting
    to fill ``view``: a trickle is handed on as it comes) and 0 at the end. A
    body cut short (fewer bytes than Content-Length, a broken chunked
    encoding, a reset) raises APIConnectionError, never a quiet 0.

    Bytes are read straight from the socket's file into ``view`` (plain,
    chunked and close-delimited framing alike), TLS or not. A body with a
    Content-Encoding is decoded (through urllib3's decoders: gzip, deflate,
    and br / zstd when their packages are installed) unless ``raw_bytes()``
    asks for the bytes as served (a download stores them so).

    Attributes:
        encoding: the Content-Encoding ("identity" when none).
        decode: whether reads hand out decoded bytes.
        close_delimited: the body has neither a Content-Length nor chunked
            framing: it ends when the server closes the connection, so its
            end cannot be told from a cut (downloads confirm it otherwise).
    """

    def __init__(self, raw: RawResponse, request: Request, deadline: float | None = None) -> None:
        self.raw = raw
        self.request = request
        self.deadline = deadline
        self.complete = False
        self.closed = False
        self.close_delimited = False
        response = getattr(raw, "_fp", None)
        self._response: http.client.HTTPResponse | None = None
        self._file: Any = None
        self._left: int | None = None  # bytes left of a Content-Length body or of the current chunk
        self._chunked = False
        self._phase = _SIZE  # chunked framing: see _unchunk
        self._line = bytearray()  # a framing line cut by the end of a read
        self._surplus = False  # bytes came after the body's end
        self._small = True
        self._started = False
        self.encoding = raw.headers.get("content-encoding", "").strip().lower() or "identity"
        self.decode = self.encoding != "identity"
        self._tls: ssl.SSLSocket | None = None
        self._poll: Any = None
        if isinstance(response, http.client.HTTPResponse) and response.fp:
            self._response, self._file = response, response.fp
            self._chunked = bool(response.chunked)
            self._left = 0 if self._chunked else response.length
            self.close_delimited = not self._chunked and self._left is None
            if self._left == 0 and not self._chunked:
                self._finish()
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if isinstance(sock, ssl.SSLSocket):
                self._tls = sock

    def raw_bytes(self) -> None:
        """Hand out the body as served, without decoding its Content-Encoding.

        Only before the first read (after it, nothing changes: a second reader
        of the body is refused by its response anyway).
        """
        if not self._started and (self._file is not None or self.complete):
            self.decode = False

    def readinto(self, view: memoryview) -> int:
        """Read the next bytes into ``view``; the count, 0 at the end of the body."""
        if self.complete:
            return 0
        self._started = True
        try:
            if self._file is None or self.decode:
                return self._readinto_decoded(view)
            if self._chunked:
                return self._readinto_chunked(view)
            return self._readinto_plain(view)
        except (HTTPError, OSError, http.client.HTTPException, APIConnectionError) as exc:
            error = self._error(exc)
            try:
                if error is exc:
                    raise
                raise error from exc
            finally:
                del error  # no frame <-> traceback cycle keeping the caller's buffer alive

    def _error(self, exc: BaseException) -> APIConnectionError:
        """The error to raise for ``exc``: the deadline's once it passed (the watchdog cut the socket)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return APITimeoutError(
                "Request timed out while reading the body: the total deadline passed",
                self.request,
                cause="deadline",
            )
        if isinstance(exc, APIConnectionError):
            return exc
        return mapped(exc, self.request, " while reading the body")

    def _read(self, view: memoryview, limit: int | None) -> int:
        size = len(view) if limit is None else min(len(view), limit)
        small = self._small
        if small:
            size = min(size, _SMALL_READ)
        n = self._readinto1(view[:size])
        if self._tls is not None and not small and not self._small and 0 < n < size:
            n += self._more_records(view[n:size])
        return n

    def _readinto1(self, view: memoryview) -> int:
        """One read from the socket's file, noting whether its own buffer may hold bytes after it.

        It may only after a read smaller than that buffer which it filled: a
        short read emptied it, a read of its size copies all it can hold, and a
        bigger one goes straight to the socket. A TLS read returns one record
        (16 KiB), so reads of exactly _SMALL_READ end the small phase too.
        """
        n: int = self._file.readinto1(view)
        self._small = n == len(view) < _SMALL_READ
        return n

    def _more_records(self, view: memoryview) -> int:
        """TLS records already here, read into ``view`` without waiting for any that are not.

        A TLS read returns one record (16 KiB); when the body is fast, the
        next records are already in the socket: reading them now hands out
        up to ``len(view)`` at once, for one pass of the caller's loop instead
        of sixteen. A slow body still gets each record as it arrives.
        """
        assert self._tls is not None
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._tls, select.POLLIN)
        got = 0
        while got < len(view) and (self._tls.pending() or self._poll.poll(0)):
            n = self._readinto1(view[got:])
            if not n:
                break
            got += n
        return got

    def _readinto_plain(self, view: memoryview) -> int:
        n = self._read(view, self._left)
        if self._left is None:  # ends with the connection
            if not n:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    # the watchdog closed it, not the server: a cut, not the end
                    raise APIConnectionError(
                        "the body was cut at the deadline", self.request, cause="deadline"
                    )
                self._finish()
            return n
        if not n:
            raise APIConnectionError(
                f"Connection broken while reading the body: it ended {self._left} bytes short of its Content-Length",
                self.request,
                cause="broken",
            )
        self._left -= n
        if not self._left:
            self._finish()
        return n

    def _readinto_chunked(self, view: memoryview) -> int:
        """Read as much as arrived (many chunks at once) and strip the framing in place."""
        while True:
            n = self._read(view, None)
            if not n:
                if self._phase == _TRAILER:  # a trailer cut short still ended the body
                    self._finish()
                    return 0
                message = _INSIDE_CHUNK if self._left else _CUT[self._phase]
                raise APIConnectionError(message, self.request, cause="broken")
            n = self._unchunk(view, n)
            if n or self.complete:
                return n
            # only framing arrived (a chunk's size line, its CRLF): wait for its data

    def _unchunk(self, view: memoryview, n: int) -> int:
        """Strip the chunk framing from ``view[:n]`` in place; the count of body bytes moved to its start.

        Framing lines (a chunk's size, the CRLF after its data, the trailer)
        cut by the end of a read are kept in ``_line`` until the next read.
        """
        pos = out = 0
        while pos < n:
            left = self._left
            if left:  # inside a chunk's data
                k = n - pos if n - pos < left else left
                if out != pos:
                    view[out : out + k] = view[pos : pos + k]
                out += k
                pos += k
                self._left = left - k
                continue
            window = bytes(view[pos : min(n, pos + 64)])
            end = window.find(b"\n")
            if end < 0 and n - pos > 64:
                window = bytes(view[pos : min(n, pos + _MAX_LINE)])
                end = window.find(b"\n")
            if end < 0:
                self._line += window
                pos += len(window)
                if len(self._line) > _MAX_LINE:
                    raise self._bad_size(bytes(self._line))
                continue
            pos += end + 1
            line = window[:end]
            if self._line:
                line = bytes(self._line) + line
                self._line.clear()
            if len(line) > _MAX_LINE:
                raise self._bad_size(line)
            self._framing_line(line)
            if self.complete:
                if pos < n:  # bytes after the body's end: the connection is not fit for another request
                    self._surplus = True
                return out
        return out

    def _bad_size(self, line: bytes) -> APIConnectionError:
        return APIConnectionError(
            f"Connection broken: invalid chunk size line {line[:40]!r}", self.request, cause="broken"
        )

    def _framing_line(self, line: bytes) -> None:
        """One line of chunk framing (without its LF): a size, the end of a chunk's data, a trailer."""
        phase = self._phase
        if phase == _SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise self._bad_size(line) from None
            if size:
                self._left, self._phase = size, _DATA_END
            else:
                self._phase = _TRAILER
        elif phase == _DATA_END:
            if line not in (b"", b"\r"):
                raise APIConnectionError(
                    "Connection broken: a chunk is not followed by CRLF", self.request, cause="broken"
                )
            self._phase = _SIZE
        elif line in (b"", b"\r"):  # the empty line that ends the trailer
            self._finish()

    def _readinto_decoded(self, view: memoryview) -> int:
        data = self.raw.read1(len(view), decode_content=True)
        if not data:
            self.complete = True
            return 0
        n = len(data)
        view[:n] = data
        return n

    def _finish(self) -> None:
        self.complete = True
        if self._response is not None:
            self._response.close()  # the socket's file only: the connection stays open for reuse

    def abort(self) -> None:
        """Shut the socket of an open body down, from any thread: a read blocked on it in another
        thread fails at once (the body is then incomplete, so its connection is never reused).
        The caller keeps ``close`` from running at the same time (a body read to its end goes
        back to the pool: another request may be using its socket once it is closed)."""
        sock = getattr(getattr(self.raw, "connection", None), "sock", None)
        if sock is None or self.closed or self.complete:  # complete: no read to break, a socket to keep
            return
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's: a read may be in its TLS
        except OSError:
            pass

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read to its end, else closed."""
        if self.closed:
            return
        self.closed = True
        watchdog.disarm(self.raw.connection)
        if self.complete and not self._surplus:
            self.raw.release_conn()
        else:
            self.raw.close()
            self.raw.release_conn()
