"""Both SSE decoder twins fed from one reused buffer, as the client reads a socket.

Each chunk is copied into one ``bytearray`` (at a varying offset), fed as a
``memoryview`` slice of it, and the whole ``bytearray`` is then overwritten with
garbage before the next chunk. Under every chunking of ``test_sse.chunkings``,
the results must equal feeding ``bytes``: the same events (and ``decode``
results), ``last_event_id``, ``retry`` and error. A decoder that kept a pointer
into a chunk after ``feed`` returned would see the garbage.
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from test_sse import BOM, CASES, TYPED_EMPTY_CASES, TYPED_STREAM, Item, chunkings

from tinker_sync._events import ServerSentEvent

# Line ends, field names, a BOM, invalid UTF-8: anything a stale pointer would misread
GARBAGE = b"\r\n:data: \xff\x00id: 9\nevent: error\r\rretry: 1\n\n" + BOM + b"\xe2\x82"

Feeder = Callable[[Any, bytes, Any], list[Any]]


def feed_bytes(decoder: Any, chunk: bytes, decode: Any) -> Any:
    return decoder.feed(chunk, decode)


def buffer_feeder() -> Feeder:
    """A feeder owning one reused bytearray: copy in, feed a slice, overwrite with garbage."""
    buf = bytearray()
    count = 0

    def feed(decoder: Any, chunk: bytes, decode: Any) -> Any:
        nonlocal count
        offset = count % 3  # 0, then non-zero starts too
        count += 1
        end = offset + len(chunk)
        if len(buf) < end + 8:
            buf.extend(bytes(end + 8 - len(buf)))  # only grows: no slice of it is alive here
        buf[offset:end] = chunk
        with memoryview(buf) as view, view[offset:end] as part:
            events = decoder.feed(part, decode)
        buf[:] = (GARBAGE * (len(buf) // len(GARBAGE) + 1))[: len(buf)]
        return events

    return feed


def outcome(
    cls: type, chunks: list[bytes], feed: Feeder, decode: Any = None, **kwargs: Any
) -> tuple[Any, ...]:
    """(results, last_event_id, retry, error) of one run."""
    decoder = cls(**kwargs)
    results: list[Any] = []
    error = None
    try:
        for chunk in chunks:
            results += feed(decoder, chunk, decode)
        results += decoder.close(decode)
    except Exception as exc:  # noqa: BLE001 - both ways of feeding must raise the same thing
        error = (type(exc), str(exc))
    return results, decoder.last_event_id, decoder.retry, error


def keep(data: Any) -> Any:
    """A ``decode`` returning what it was given: a view into the caller's buffer would go stale."""
    return ("d", data)


def same_under_every_chunking(cls: type, raw: bytes, decode: Any = None, **kwargs: Any) -> tuple[Any, ...]:
    """Feed ``raw`` as bytes and through the reused buffer, under every chunking; return the bytes run."""
    expected = outcome(cls, [raw], feed_bytes, decode, **kwargs)
    for label, chunks in chunkings(raw):
        assert outcome(cls, chunks, feed_bytes, decode, **kwargs) == expected, label
        assert outcome(cls, chunks, buffer_feeder(), decode, **kwargs) == expected, label
    return expected


@pytest.mark.parametrize("raw", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_spec_cases_through_reused_buffer(decoder_class: type, raw: bytes) -> None:
    expected = next(c[2:] for c in CASES if c[1] == raw)
    events, last_id, retry, error = same_under_every_chunking(decoder_class, raw)
    assert error is None
    assert [(e.event, e.data, e.id, e.retry) for e in events] == expected[0]
    assert (last_id, retry) == tuple(expected[1:])
    typed = same_under_every_chunking(decoder_class, raw, keep)
    assert all(type(r) is ServerSentEvent or type(r[1]) is bytes for r in typed[0])


# Named streams for what a reused buffer could get wrong, each also run under every chunking
STREAMS = {
    "multi-line": b"data: first\ndata: second\r\ndata:\rdata: fourth\n\nid: 2\ndata: x\n\n",
    "events-split": b'id: a\nevent: up\ndata: {"a": 1}\n\nretry: 30\ndata: {"a": 2}\n\n' * 3,
    "data-value-pending": b"data: " + b"v" * 300 + b"\ndata: w\n" + b"\n",
    "long-line-pending": b": " + b"c" * 500 + b"\ndata: " + b"z" * 500 + b"\n\n",
    "bom": BOM + b"data: a\n\ndata: b\n\n",
    "bom-prefix-then-no-bom": b"\xef\xbbdata: a\n\ndata: b\r\n\r\n",
    "bom-one-byte-then-data-line": b"\xef\ndata: held\n\n",
    "bom-then-cr": BOM + b"\rdata: c\r\r",
    "cr-lf-mix": b"data: a\r\n\r\ndata: b\r\rdata: c\n\r\ndata: d\r\n\n",
    "utf8": b"event: \xc3\xa9\ndata: caf\xc3\xa9\ndata: \xf0\x9f\x98\x80 \xe2\x82\n\n",
    "unterminated-tail": b"data: a\n\ndata: tail",
}


@pytest.mark.parametrize("raw", list(STREAMS.values()), ids=list(STREAMS))
def test_streams_through_reused_buffer(decoder_class: type, raw: bytes) -> None:
    plain = same_under_every_chunking(decoder_class, raw)
    assert plain[0] and plain[3] is None
    typed = same_under_every_chunking(decoder_class, raw, keep)
    assert [("d", e.data.encode()) for e in plain[0] if e.data] == typed[0]


@pytest.mark.parametrize(
    "raw",
    [
        b"data: 0123456789\n\n",
        b"data: ok\n\n: 345678901\n\n",
        b"data: 1234\r\ndata: 56789\n\n\n",
        b"id: 1\ndata: a\n\ndata: 0123456789",  # unterminated
        b"data: 1234\ndata: 5678\ndata\n\n",  # the event's data
        b"\xef\xbb" + b"data: 1234\ndata: 5678\ndata\n\n",  # after a BOM prefix that was none
        b"data: a\n\ndata: b\n\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\n\n",
    ],
)
@pytest.mark.parametrize("decode", [None, keep], ids=["raw", "typed"])
def test_oversize_through_reused_buffer(decoder_class: type, raw: bytes, decode: Any) -> None:
    results, _, _, error = same_under_every_chunking(decoder_class, raw, decode, max_size=10)
    assert error is not None and error[0].__name__ == "SSEDecodeError"
    assert "longer than max_size (10 bytes)" in error[1]


def test_typed_stream_through_reused_buffer(decoder_class: type) -> None:
    decode = msgspec.json.Decoder(Item).decode
    results, last_id, retry, error = same_under_every_chunking(decoder_class, TYPED_STREAM, decode)
    assert error is None and (last_id, retry) == ("8", 5)
    assert results == [
        Item(1),
        ServerSentEvent("error", '{"message": "boom"}', "7", None),
        Item(2, "x\xe9\xe9"),
        Item(3),
        Item(4),
        Item(5),
    ]


@pytest.mark.parametrize("raw", [c[1] for c in TYPED_EMPTY_CASES], ids=[c[0] for c in TYPED_EMPTY_CASES])
def test_typed_empty_data_through_reused_buffer(decoder_class: type, raw: bytes) -> None:
    calls: list[bytes] = []

    def decode(data: Any) -> Any:
        calls.append(bytes(data))
        return ("d", data)

    same_under_every_chunking(decoder_class, raw, decode)
    assert b"" not in calls


def test_decode_error_through_reused_buffer(decoder_class: type) -> None:
    """The held-back exception path: events before it, then that exception, then a broken decoder."""

    def decode(data: Any) -> Any:
        if bytes(data) == b"3":
            raise ValueError("three")
        return ("d", data)

    raw = b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5"
    results, _, _, error = same_under_every_chunking(decoder_class, raw, decode)
    assert results == [("d", b"1"), ("d", b"2")]
    assert error == (ValueError, "three")


def test_memoryview_with_offset_and_bytearray(decoder_class: type) -> None:
    decoder = decoder_class()
    buf = bytearray(b"garbage data: a\nid: 1\n\ndata: b")
    assert decoder.feed(memoryview(buf)[8:]) == [ServerSentEvent(data="a", id="1")]
    buf[:] = b"x" * len(buf)
    assert decoder.feed(bytearray(b"\n\n")) == [ServerSentEvent(data="b", id="1")]
    assert decoder.feed(memoryview(b"...data: c\n\n...")[3:-3]) == [ServerSentEvent(data="c", id="1")]
    # a contiguous view of another format or shape is read as its bytes
    wide = memoryview(bytearray(b"data: dd\n\n\n\n")).cast("H")
    assert decoder.feed(wide) == [ServerSentEvent(data="dd", id="1")]
    assert decoder.feed(memoryview(bytearray(b"data: e\n\n\n\n\n")).cast("B", (2, 6))) == [
        ServerSentEvent(data="e", id="1")
    ]
    assert decoder.feed(memoryview(b"")) == []


def test_feed_keeps_no_export_of_the_chunk(decoder_class: type) -> None:
    buf = bytearray(b"data: a\n\ndata: partial")
    decoder = decoder_class()
    assert decoder.feed(buf) == [ServerSentEvent(data="a")]
    assert decoder.feed(memoryview(buf)[9:]) == []
    buf += b"!"  # resizing raises BufferError while any export of buf is alive
    with memoryview(buf) as view:
        decoder.feed(view)
    del buf[:]


def test_non_contiguous_memoryview_is_copied_as_before(decoder_class: type) -> None:
    # not C-contiguous: read through one copy, as before this decoder read buffers in place
    strided = memoryview(b"ddaattaa::  xx\n\n\n\n")[::2]
    assert decoder_class().feed(strided) == [ServerSentEvent(data="x")]


@pytest.mark.parametrize("bad", ["data: a\n\n", array.array("b", b"data: a\n\n"), None, 7])
def test_other_types_still_rejected(decoder_class: type, bad: object) -> None:
    with pytest.raises(
        TypeError, match=rf"^feed\(\) takes bytes, bytearray or memoryview, not {type(bad).__name__}$"
    ):
        decoder_class().feed(bad)
