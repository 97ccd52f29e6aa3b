"""Differential test: both SSE decoder twins, any chunking, against each other and a text-level oracle.

Random streams are built from every field kind, CR/LF/CRLF mixes, BOMs, invalid
UTF-8, NULs in ids, long lines and an unterminated tail; each is fed whole and
under a random chunking, plain and typed, with a small or a roomy ``max_size``,
to each twin (the ``decoder_class`` fixture: a missing extension fails the
cython param), also from one reused ``bytearray``, and to the pure twin. All
runs must agree on the events, ``last_event_id``, ``retry`` and the error (type
and message). Without an error, they must also agree with ``oracle``, which
decodes the whole stream to text first and splits it with a regex. Typed runs
must be the plain run with empty-data events skipped, never calling ``decode``
with empty data.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinker_sync._events import ServerSentEvent
from tinker_sync._sse_py import PySSEDecoder

pytestmark = pytest.mark.slow  # seconds each: started first under xdist (conftest)

BOM = b"\xef\xbb\xbf"
ATOMS = [
    b"a",
    b"0",
    b"7",
    b" ",
    b":",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x82",
    b"\xac",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98\x80",
    BOM,
    b"error",
    b"9" * 25,
    b"x" * 40,
    b"\t",
    b"{}",
]
NAMES = [
    b"data",
    b"event",
    b"id",
    b"retry",
    b"Data",
    b"data ",
    b" data",
    b"",
    b"foo",
    BOM + b"data",
    b"\xffid",
]

values = st.lists(st.sampled_from(ATOMS), max_size=6).map(b"".join)
digits = st.text("0123456789", min_size=1, max_size=30).map(str.encode)
fields = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.sampled_from([b":", b": ", b":  ", b""]), values).map(b"".join),
    st.tuples(st.just(b"retry: "), digits).map(b"".join),
    st.tuples(st.sampled_from([b"data: ", b"id: "]), values).map(b"".join),
)
data_lines = st.tuples(st.sampled_from([b"data: ", b"data:", b"data"]), values).map(b"".join)
lines = st.one_of(
    fields, data_lines, data_lines, st.just(b""), values.map(lambda v: b":" + v), st.binary(max_size=12)
)
endings = st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\r", b"\r\n\r\n", b"\n\r"])
# a whole event: a few fields, each line ended the same way, then a blank line
blocks = st.tuples(st.lists(st.one_of(fields, data_lines), min_size=1, max_size=4), endings).map(
    lambda b: b[1].join(b[0]) + b[1] + b[1]
)
streams = st.tuples(
    st.sampled_from([b"", b"", BOM, BOM + BOM, BOM[:2], BOM[:1]]),
    st.lists(st.one_of(blocks, st.tuples(lines, endings).map(b"".join)), max_size=25).map(b"".join),
    st.one_of(st.just(b""), lines),  # an unterminated tail
).map(b"".join)


CALLS: list[bytes] = []  # every argument ``typed`` was called with


def typed(data: Any) -> tuple[str, bytes]:
    """A ``decode`` that accepts anything, empty input included, and records its calls."""
    assert isinstance(data, (bytes, memoryview))
    CALLS.append(bytes(data))
    return ("typed", bytes(data))


def outcome(cls: type, chunks: list[bytes], max_size: int, decode: Any, reuse: bool = False) -> tuple:
    """(results, last_event_id, retry, error) of one run; results as plain tuples.

    With ``reuse``, each chunk is fed as a slice of one ``bytearray``, overwritten after each ``feed``.
    """
    decoder = cls(max_size=max_size)
    results: list[Any] = []
    error = None
    buf = bytearray(max(map(len, chunks), default=0))
    try:
        for chunk in chunks:
            if reuse:
                buf[: len(chunk)] = chunk
                results += decoder.feed(memoryview(buf)[: len(chunk)], decode)
                buf[:] = b"\n\r:data: \xff" * (len(buf) // 10) + b"\r" * (len(buf) % 10)
            else:
                results += decoder.feed(chunk, decode)
        results += decoder.close(decode)
    except Exception as exc:  # noqa: BLE001 - the twins must raise the same thing
        error = (type(exc), str(exc))
    plain = [(r.event, r.data, r.id, r.retry) if type(r) is ServerSentEvent else r for r in results]
    return plain, decoder.last_event_id, decoder.retry, error


def as_typed(run: tuple) -> tuple:
    """What typed mode must make of a plain run: decode(data) per event, but "error" events and empty data."""
    events, last_id, retry, error = run
    kept = [e if e[0] == "error" else ("typed", e[1].encode()) for e in events if e[1] or e[0] == "error"]
    return kept, last_id, retry, error


def oracle(raw: bytes) -> tuple:
    """The WHATWG rules applied to the whole stream, decoded to text first."""
    text = raw.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    data: list[str] = []
    etype, id_buf, last_id, retry, event_retry = "", None, None, None, None
    events = []
    for line in re.split("\r\n|\r|\n", text)[:-1]:
        if not line:
            last_id = id_buf
            if data:
                events.append((etype or "message", "\n".join(data), last_id, event_retry))
            data, etype, event_retry = [], "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            etype = value
        elif name == "id" and "\0" not in value:
            id_buf = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            try:
                retry = event_retry = int(value.lstrip("0") or "0")
            except ValueError:
                pass
    return events, last_id, retry, None


# decoder_class only names a class: sharing it between examples is safe
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    raw=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    max_size=st.sampled_from([6, 24, 80, 2**20, 2**20, 2**20]),
)
def test_twins_agree_under_any_chunking(
    decoder_class: type, raw: bytes, cuts: list[int], max_size: int
) -> None:
    """``decoder_class`` (each twin in turn), whole and chunked, against the pure twin fed whole."""
    bounds = sorted({0, len(raw), *(c for c in cuts if c < len(raw))})
    chunked = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    plain = None
    for decode in (None, typed):
        CALLS.clear()
        first = outcome(PySSEDecoder, [raw], max_size, decode)
        runs = {
            "whole": outcome(decoder_class, [raw], max_size, decode),
            "chunked": outcome(decoder_class, chunked, max_size, decode),
            "chunked-reused-buffer": outcome(decoder_class, chunked, max_size, decode, reuse=True),
            "chunked-py": outcome(PySSEDecoder, chunked, max_size, decode),
        }
        for key, run in runs.items():
            assert run == first, key
        if decode is None:
            plain = first
            if first[3] is None:
                assert first == oracle(raw)
        else:
            assert b"" not in CALLS  # typed mode skips empty data: decode never sees it
            assert first == as_typed(plain)
