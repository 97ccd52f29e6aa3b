# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""SSEDecoder: the Cython twin of ``tinker_sync._sse_py.PySSEDecoder``.

Same constructor, methods, properties, events, errors and messages: the rules
and the decisions are written atop ``tinker_sync/_sse_py.py``; this module only
makes them fast, and the shared test suite runs both.

How it is fast:

- A chunk is read in place: ``bytes`` directly, any other C-contiguous buffer
  (``bytearray``, a slice of a ``memoryview``) through the buffer protocol,
  released before ``feed`` returns. Nothing points into it after that: a data
  value still in place at the end of the chunk is copied (``_materialize``),
  and every error path drops it (``_fail``).
- Lines are found with ``memchr`` for LF and for CR, each remembering the next
  hit in the chunk, so a chunk is scanned once whatever its CR/LF mix; the
  partial line left at the end of a chunk is copied to a C buffer and never
  scanned again.
- Lines are parsed as bytes in C; a Python object is made only for what an
  event needs (its data, a new event type, an id, a retry value).
- A single ``data`` line lying in the current chunk (the usual event) is used
  in place: decoded straight to ``str``, or copied once into the ``bytes``
  handed to ``decode``. Other data (several lines, or a line split over chunks)
  is appended to a C buffer, which is decoded to ``str`` in place, or copied
  into ``bytes`` for ``decode``: ``bytes`` rather than a view of the buffer,
  since ``decode`` may keep what it is given (``msgspec.Raw`` does).
- With ``decode``, it is called straight from the scan loop, and no
  ``ServerSentEvent`` and no ``str`` is made for a non-error event; its data is
  checked to be valid UTF-8 in C (8 bytes at a time while ASCII) and only
  re-encoded, with U+FFFD, when it is not.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
from libc.string cimport memchr, memcmp, memcpy

import sys

from tinker_sync._events import ServerSentEvent
from tinker_sync._exceptions import SSEDecodeError
from tinker_sync._sse_py import (
    DECODE_FAILED,
    DEFAULT_MAX_SIZE,
    EVENT_TOO_LONG,
    LINE_TOO_LONG,
    _check_data,
    check_max_size,
    retry_value,
)

__all__ = ["SSEDecoder"]

cdef const unsigned char* BOM = b"\xef\xbb\xbf"
cdef str MESSAGE = "message"

# Results of the line handlers.
cdef enum:
    OK = 0
    EVENT_OVERFLOW = 1
    LINE_OVERFLOW = 2


cdef inline bint is_utf8(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """True if s[:n] is valid UTF-8 (what Python's codec accepts: no surrogates, <= U+10FFFF)."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef unsigned char c, c1
    while i < n:
        if i + 8 <= n:
            memcpy(&word, s + i, 8)
            if (word & 0x8080808080808080ULL) == 0:
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:
            return False
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xE0:
                if c1 < 0xA0 or c1 > 0xBF:
                    return False
            elif c == 0xED:
                if c1 < 0x80 or c1 > 0x9F:
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80:
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xF0:
                if c1 < 0x90 or c1 > 0xBF:
                    return False
            elif c == 0xF4:
                if c1 < 0x80 or c1 > 0x8F:
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            i += 4
        else:
            return False
    return True


cdef object parse_retry(const unsigned char* v, Py_ssize_t n):
    """The retry field's value as an int, or None unless it is ASCII digits only."""
    cdef Py_ssize_t i
    cdef long long value = 0
    if n == 0:
        return None
    for i in range(n):
        if v[i] < 48 or v[i] > 57:
            return None
    i = 0
    while i < n - 1 and v[i] == 48:
        i += 1
    if n - i > 18:
        return retry_value(PyBytes_FromStringAndSize(<const char*>v, n))
    while i < n:
        value = value * 10 + (v[i] - 48)
        i += 1
    return value


cdef class SSEDecoder:
    """Decode a ``text/event-stream`` body, chunk by chunk, into events.

    Args:
        max_size: the longest line, and the most data one event may
            accumulate, in bytes (UTF-8, line ends not counted).

    ``feed(chunk)`` returns the events the chunk completed, as
    ``ServerSentEvent(event, data, id, retry)``. With ``decode`` (for example
    ``msgspec.json.Decoder(T).decode``), each event whose type is not
    ``"error"`` is returned as ``decode(data)`` instead, ``data`` being the
    event's data as UTF-8 bytes; ``"error"`` events stay ``ServerSentEvent``,
    and an event with empty data is skipped (see the decisions in _sse_py.py).
    """

    cdef Py_ssize_t _max_size
    # the partial line after the last line end (never holds CR or LF)
    cdef unsigned char* _pbuf
    cdef Py_ssize_t _plen, _pcap
    # the current event's data, once copied: values each followed by LF
    cdef unsigned char* _dbuf
    cdef Py_ssize_t _dlen, _dcap
    # or its one data value, still in place in the chunk being fed
    cdef const unsigned char* _dptr
    cdef Py_ssize_t _dptr_len
    cdef Py_ssize_t _ndata       # data lines in the current event
    cdef Py_ssize_t _data_total  # length of the spec's data buffer (values + LFs)
    cdef bint _skip_lf           # the last chunk ended with CR: skip an LF starting the next
    cdef int _bom_n              # BOM bytes held at stream start; -1 once decided
    cdef object _type            # the event type (str) or None for "message"
    cdef bint _type_is_error
    cdef bytes _type_cache_b
    cdef str _type_cache_s
    cdef object _id_buf
    cdef object _last_id
    cdef object _event_retry
    cdef object _retry
    cdef object _error
    cdef object _held            # an exception from ``decode``, raised by the next call
    cdef Py_ssize_t _error_events  # "error" events returned so far

    def __cinit__(self):
        self._pbuf = NULL
        self._dbuf = NULL

    def __init__(self, max_size=DEFAULT_MAX_SIZE):
        self._max_size = min(check_max_size(max_size), sys.maxsize)
        self._last_id = None
        self._retry = None
        self._error = None
        self._held = None
        self._error_events = 0
        self._type_cache_b = None
        self._type_cache_s = None
        self._start_stream()

    def __dealloc__(self):
        PyMem_Free(self._pbuf)
        PyMem_Free(self._dbuf)

    cdef void _start_stream(self) noexcept:
        self._plen = 0
        self._dlen = 0
        self._dptr = NULL
        self._dptr_len = 0
        self._ndata = 0
        self._data_total = 0
        self._skip_lf = False
        self._bom_n = 0
        self._type = None
        self._type_is_error = False
        self._id_buf = self._last_id
        self._event_retry = None

    @property
    def last_event_id(self):
        """The last event ID in force: None until an event is dispatched after an accepted ``id``."""
        return self._last_id

    @property
    def retry(self):
        """The reconnection time in milliseconds from the last valid ``retry`` field, else None."""
        return self._retry

    @property
    def error_events(self):
        """How many ``"error"`` events were returned so far: a caller handing events out in
        batches checks a batch for them once (did this count move?), not event by event."""
        return self._error_events

    cdef int _reserve(self, unsigned char** buf, Py_ssize_t* cap, Py_ssize_t need) except -1:
        """Grow a buffer to hold ``need`` bytes (never beyond what max_size allows, + 1)."""
        cdef Py_ssize_t new_cap
        cdef unsigned char* new_buf
        if need <= cap[0]:
            return 0
        new_cap = cap[0] * 2 if cap[0] < PY_SSIZE_T_MAX // 2 else PY_SSIZE_T_MAX
        if new_cap < 256:
            new_cap = 256
        if new_cap - 1 > self._max_size:
            new_cap = self._max_size + 1
        if new_cap < need:
            new_cap = need
        new_buf = <unsigned char*>PyMem_Realloc(buf[0], new_cap)
        if new_buf == NULL:
            raise MemoryError()
        buf[0] = new_buf
        cap[0] = new_cap
        return 0

    cdef int _materialize(self) except -1:
        """Copy a data value still in place in the chunk into the data buffer."""
        if self._dptr != NULL:
            self._reserve(&self._dbuf, &self._dcap, self._dptr_len + 1)
            memcpy(self._dbuf, self._dptr, self._dptr_len)
            self._dbuf[self._dptr_len] = 10
            self._dlen = self._dptr_len + 1
            self._dptr = NULL
        return 0

    cdef int _dispatch(self, list events, object decode) except -1:
        cdef const unsigned char* ptr
        cdef Py_ssize_t n
        cdef object raw
        self._last_id = self._id_buf
        if self._ndata:
            if self._dptr != NULL:
                ptr = self._dptr
                n = self._dptr_len
            else:
                ptr = self._dbuf
                n = self._dlen - 1
            # reset first: the buffers are in a clean state whatever decode does
            self._ndata = 0
            self._data_total = 0
            self._dptr = NULL
            self._dlen = 0
            if decode is not None and not self._type_is_error:
                if n:  # typed mode skips an event with empty data (a keep-alive): decode never sees b""
                    if is_utf8(ptr, n):
                        raw = PyBytes_FromStringAndSize(<const char*>ptr, n)
                    else:
                        raw = PyUnicode_DecodeUTF8(<const char*>ptr, n, "replace").encode("utf-8")
                    PyList_Append(events, decode(raw))
            else:
                if self._type_is_error:
                    self._error_events += 1
                PyList_Append(
                    events,
                    ServerSentEvent(
                        MESSAGE if self._type is None else self._type,
                        PyUnicode_DecodeUTF8(<const char*>ptr, n, "replace"),
                        self._last_id,
                        self._event_retry,
                    ),
                )
        self._type = None
        self._type_is_error = False
        self._event_retry = None
        return OK

    cdef int _line(
        self, const unsigned char* s, Py_ssize_t n, bint in_chunk, list events, object decode
    ) except -1:
        """Interpret one complete line (without its line end)."""
        cdef const unsigned char* v
        cdef const unsigned char* colon
        cdef Py_ssize_t vn, name_len, total
        if n == 0:
            return self._dispatch(events, decode)
        if s[0] == 58:  # ":" comment
            return OK
        if n >= 5 and memcmp(s, b"data:", 5) == 0:
            name_len = 4
            v = s + 5
            vn = n - 5
        else:
            colon = <const unsigned char*>memchr(s, 58, n)
            if colon == NULL:
                name_len = n
                v = s + n
                vn = 0
            else:
                name_len = colon - s
                v = colon + 1
                vn = n - name_len - 1
        if vn and v[0] == 32:
            v += 1
            vn -= 1
        if name_len == 4:
            if memcmp(s, b"data", 4) != 0:
                return OK
            total = self._data_total + vn + 1
            if total > self._max_size:
                return EVENT_OVERFLOW
            self._data_total = total
            if self._ndata == 0 and in_chunk:
                self._dptr = v
                self._dptr_len = vn
            else:
                self._materialize()
                self._reserve(&self._dbuf, &self._dcap, self._dlen + vn + 1)
                memcpy(self._dbuf + self._dlen, v, vn)
                self._dbuf[self._dlen + vn] = 10
                self._dlen += vn + 1
            self._ndata += 1
        elif name_len == 5:
            if memcmp(s, b"event", 5) == 0:
                if vn == 0:
                    self._type = None
                    self._type_is_error = False
                    return OK
                self._type_is_error = vn == 5 and memcmp(v, b"error", 5) == 0
                if (
                    self._type_cache_b is None
                    or PyBytes_GET_SIZE(self._type_cache_b) != vn
                    or memcmp(PyBytes_AS_STRING(self._type_cache_b), v, vn) != 0
                ):
                    self._type_cache_b = PyBytes_FromStringAndSize(<const char*>v, vn)
                    self._type_cache_s = PyUnicode_DecodeUTF8(<const char*>v, vn, "replace")
                self._type = self._type_cache_s
            elif memcmp(s, b"retry", 5) == 0:
                retry = parse_retry(v, vn)
                if retry is not None:
                    self._retry = self._event_retry = retry
        elif name_len == 2:
            if s[0] == 105 and s[1] == 100 and memchr(v, 0, vn) == NULL:  # "id", no NUL
                self._id_buf = PyUnicode_DecodeUTF8(<const char*>v, vn, "replace")
        return OK

    def feed(self, data, decode=None):
        """Consume one chunk; return the events it completed, in order.

        ``data`` is read in place through the buffer protocol and released
        before ``feed`` returns; nothing keeps a pointer into it afterwards, so
        the caller may refill the same ``bytearray`` for the next chunk. It must
        not change while ``feed`` runs (from ``decode``, say).

        Raises:
            SSEDecodeError: a line or an event's data is longer than ``max_size``
                (or was earlier: the decoder is broken).
        """
        cdef Py_buffer view
        if self._error is not None:
            self._raise_error()
        if type(data) is bytes:
            return self._feed(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), decode)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            _check_data(data)  # raises the TypeError the pure twin raises
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError:  # a non-contiguous memoryview: one copy, as the pure twin does
            data = _check_data(data)
            return self._feed(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), decode)
        try:
            return self._feed(<const unsigned char*>view.buf, view.len, decode)
        finally:
            PyBuffer_Release(&view)

    cdef list _feed(self, const unsigned char* p, Py_ssize_t n, object decode):
        """Consume p[:n], which is only valid until this returns: see ``_scan`` and ``_fail``."""
        cdef bytes joined  # the held BOM prefix and the chunk, when that prefix was no BOM
        cdef Py_ssize_t pos = 0, i, k, held
        cdef list events
        cdef int status
        if self._bom_n >= 0:
            held = self._bom_n
            k = held
            i = 0
            while k < 3 and i < n and p[i] == BOM[k]:
                k += 1
                i += 1
            if k == 3:
                pos = i
                self._bom_n = -1
            elif i == n:
                self._bom_n = k
                return []
            else:
                self._bom_n = -1
                if held:
                    joined = PyBytes_FromStringAndSize(NULL, held + n)
                    memcpy(PyBytes_AS_STRING(joined), BOM, held)
                    memcpy(PyBytes_AS_STRING(joined) + held, p, n)
                    p = <const unsigned char*>PyBytes_AS_STRING(joined)
                    n += held
        if self._skip_lf and pos < n:
            self._skip_lf = False
            if p[pos] == 10:
                pos += 1
        events = []
        try:
            status = self._scan(p, n, pos, events, decode)
        except Exception as exc:
            self._fail(None, DECODE_FAILED)
            if not events:
                raise
            self._held = exc  # raised by the next call, after the events before it
            return events
        except BaseException:
            self._fail(None, DECODE_FAILED)
            raise
        if status != OK:
            return self._fail(events, LINE_TOO_LONG if status == LINE_OVERFLOW else EVENT_TOO_LONG)
        return events

    cdef int _scan(
        self, const unsigned char* p, Py_ssize_t n, Py_ssize_t pos, list events, object decode
    ) except -1:
        """Interpret p[pos:n]: complete lines now, the partial last line into the pending buffer."""
        cdef Py_ssize_t lf = -1, cr = -1, eol, length
        cdef const void* hit
        cdef int status
        while True:
            if lf < pos:
                hit = memchr(p + pos, 10, n - pos)
                lf = n if hit == NULL else <const unsigned char*>hit - p
            if cr < pos:
                hit = memchr(p + pos, 13, n - pos)
                cr = n if hit == NULL else <const unsigned char*>hit - p
            eol = lf if lf < cr else cr
            if eol == n:
                break
            length = eol - pos
            if self._plen:
                if self._plen + length > self._max_size:
                    return LINE_OVERFLOW
                self._reserve(&self._pbuf, &self._pcap, self._plen + length)
                memcpy(self._pbuf + self._plen, p + pos, length)
                length += self._plen
                self._plen = 0
                status = self._line(self._pbuf, length, False, events, decode)
            else:
                if length > self._max_size:
                    return LINE_OVERFLOW
                status = self._line(p + pos, length, True, events, decode)
            if status != OK:
                return status
            pos = eol + 1
            if p[eol] == 13:
                if pos == n:
                    self._skip_lf = True
                elif p[pos] == 10:
                    pos += 1
        self._materialize()
        length = n - pos
        if length:
            if self._plen + length > self._max_size:
                return LINE_OVERFLOW
            self._reserve(&self._pbuf, &self._pcap, self._plen + length)
            memcpy(self._pbuf + self._plen, p + pos, length)
            self._plen += length
        return OK

    def _raise_error(self):
        """Raise what broke the decoder: a held-back ``decode`` exception once, then SSEDecodeError."""
        held, self._held = self._held, None
        if held is not None:
            raise held
        raise SSEDecodeError(self._error)

    cdef list _fail(self, list events, str template):
        """Break the decoder; raise now, or after returning the events this chunk completed.

        With ``events`` None: break it and return, the caller re-raising what broke it.
        """
        self._error = template.format(self._max_size)
        self._dptr = NULL  # it may point into a chunk about to be released
        self._ndata = 0
        self._plen = 0
        self._dlen = 0
        if events is None or events:
            return events
        raise SSEDecodeError(self._error)

    def close(self, decode=None):
        """End of stream: discard an unterminated line or event; return events not yet returned.

        Every event is returned by the ``feed`` that completed it, so this
        returns ``[]``, or raises the ``SSEDecodeError`` held back by ``feed``.
        ``last_event_id`` and ``retry`` are kept; a later ``feed`` starts a new stream.
        """
        if self._error is not None:
            self._raise_error()
        self._start_stream()
        return []
