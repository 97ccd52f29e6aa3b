"""Both SSE decoder twins against the WHATWG "Interpreting an event stream" rules.

Every spec case is a row of ``CASES`` and runs under every chunking (``run``):
whole, byte by byte, split after each CR, split in two at every position, and
seeded random splits. Then: the typed fast path, the size limit, linearity.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from tinker_sync._events import ServerSentEvent
from tinker_sync._exceptions import SSEDecodeError
from tinker_sync._sse_py import DEFAULT_MAX_SIZE

BOM = b"\xef\xbb\xbf"


def E(data: str, event: str = "message", id: str | None = None, retry: int | None = None) -> tuple:
    return (event, data, id, retry)


def u(raw: bytes) -> str:
    """What the spec's UTF-8 decode (with replacement) makes of ``raw``."""
    return raw.decode("utf-8", "replace")


# (name, stream bytes, expected events as (event, data, id, retry), final last_event_id, final retry)
CASES: list[tuple[str, bytes, list[tuple], str | None, int | None]] = [
    # --- the BOM: one, at the very start, stripped
    ("bom", BOM + b"data: a\n\n", [E("a")], None, None),
    ("bom-only", BOM, [], None, None),
    ("bom-then-blank-line", BOM + b"\r\ndata: x\n\n", [E("x")], None, None),
    ("bom-twice-second-kept", BOM + BOM + b"data: a\n\n", [], None, None),  # field "\ufeffdata"
    ("bom-twice-then-field", BOM + BOM + b"\ndata: b\n\n", [E("b")], None, None),
    ("bom-in-data-kept", BOM + b"data: " + BOM + b"a\n\n", [E("\ufeffa")], None, None),
    ("bom-not-at-start", b"data: a\n\n" + BOM + b"data: b\n\n", [E("a")], None, None),
    ("bom-prefix-not-bom", b"\xef\xbbdata: a\n\ndata: b\n\n", [E("b")], None, None),
    ("bom-one-byte-then-lf", b"\xef\ndata: b\n\n", [E("b")], None, None),
    ("bom-then-comment", BOM + b": hi\ndata: c\n\n", [E("c")], None, None),
    # --- line ends: LF, CR, CRLF, mixed
    ("lf", b"data: a\n\n", [E("a")], None, None),
    ("cr", b"data: a\r\r", [E("a")], None, None),
    ("crlf", b"data: a\r\n\r\n", [E("a")], None, None),
    ("mixed-in-one-event", b"data: a\rdata: b\ndata: c\r\n\n", [E("a\nb\nc")], None, None),
    ("cr-cr-lf", b"data: a\r\r\n", [E("a")], None, None),
    ("lf-cr", b"data: a\n\r", [E("a")], None, None),
    ("crlf-then-cr", b"data: a\r\n\r", [E("a")], None, None),
    ("cr-then-crlf-events", b"data: a\r\rdata: b\r\n\r\n", [E("a"), E("b")], None, None),
    ("many-blank-lines", b"data: a\n\n\n\n\r\r\ndata: b\n\n", [E("a"), E("b")], None, None),
    ("only-blank-lines", b"\n\n\r\n\r\r", [], None, None),
    ("trailing-cr-is-line-end", b"data: a\n\r", [E("a")], None, None),
    ("cr-crlf-no-blank", b"data: a\rdata: b\r\n", [], None, None),
    # --- comments
    ("comment", b": hello\ndata: a\n\n", [E("a")], None, None),
    ("comment-bare-colon", b":\n\n", [], None, None),
    ("comment-between-data", b"data: a\n: note\ndata: b\n\n", [E("a\nb")], None, None),
    ("comment-looks-like-field", b":data: a\n\n", [], None, None),
    ("comment-keeps-event-open", b"data: a\n:\n:x\r\n", [], None, None),
    # --- field parsing
    ("no-colon-data", b"data\n\n", [E("")], None, None),
    ("no-colon-data-twice", b"data\ndata\n\n", [E("\n")], None, None),
    ("empty-value", b"data:\n\n", [E("")], None, None),
    ("empty-value-after-space", b"data: \n\n", [E("")], None, None),
    ("no-space", b"data:a\n\n", [E("a")], None, None),
    ("one-space-stripped-only", b"data:  a\n\n", [E(" a")], None, None),
    ("tab-not-stripped", b"data:\ta\n\n", [E("\ta")], None, None),
    ("trailing-space-kept", b"data: a \n\n", [E("a ")], None, None),
    ("colons-in-value", b"data: a:b: c\n\n", [E("a:b: c")], None, None),
    ("multi-line", b"data: a\ndata: b\ndata: c\n\n", [E("a\nb\nc")], None, None),
    ("empty-middle-line", b"data: a\ndata:\ndata: b\n\n", [E("a\n\nb")], None, None),
    ("trailing-empty-data", b"data: a\ndata\n\n", [E("a\n")], None, None),
    ("name-case-matters", b"Data: a\n\nDATA: b\n\n", [], None, None),
    ("name-trailing-space", b"data : a\n\n", [], None, None),
    ("name-leading-space", b" data: a\n\n", [], None, None),
    ("unknown-field", b"foo: bar\ndata: a\n\n", [E("a")], None, None),
    ("unknown-field-no-colon", b"foo\n\n", [], None, None),
    ("datax-is-unknown", b"datax: a\ndat: b\n\n", [], None, None),
    ("nul-in-data", b"data: a\x00b\n\n", [E("a\x00b")], None, None),
    ("long-data", b"data: " + b"x" * 3000 + b"\n\n", [E("x" * 3000)], None, None),
    # --- UTF-8, with replacement exactly as bytes.decode("utf-8", "replace")
    ("utf8", b"data: caf\xc3\xa9 \xe2\x82\xac\n\n", [E("caf\xe9 \u20ac")], None, None),
    ("utf8-4-bytes", b"data: \xf0\x9f\x98\x80\n\n", [E("\U0001f600")], None, None),
    ("invalid-bytes", b"data: \xff\xfe\n\n", [E("\ufffd\ufffd")], None, None),
    ("truncated-sequence", b"data: \xe2\x82\n\n", [E("\ufffd")], None, None),
    ("truncated-before-colon", b"data: a\ndata\xe2\x82: b\n\n", [E("a")], None, None),
    ("invalid-mixed", b"data: a\xe2\x82\xacb\xc3\n\n", [E("a\u20acb\ufffd")], None, None),
    ("surrogate-bytes", b"data: \xed\xa0\x80x\n\n", [E(u(b"\xed\xa0\x80x"))], None, None),
    ("overlong", b"data: \xc0\xaf\xe0\x80\xaf\n\n", [E(u(b"\xc0\xaf\xe0\x80\xaf"))], None, None),
    ("invalid-across-data-lines", b"data: \xe2\x82\ndata: \xac\n\n", [E("\ufffd\n\ufffd")], None, None),
    ("invalid-event-name", b"event: \xff\ndata: x\n\n", [E("x", event="\ufffd")], None, None),
    ("invalid-id", b"id: \xff\ndata: x\n\n", [E("x", id="\ufffd")], "\ufffd", None),
    # --- event type
    ("event", b"event: add\ndata: a\n\n", [E("a", event="add")], None, None),
    ("event-reset-after-data", b"event: add\ndata: a\n\ndata: b\n\n", [E("a", "add"), E("b")], None, None),
    ("event-reset-without-data", b"event: add\n\ndata: b\n\n", [E("b")], None, None),
    ("event-last-wins", b"event: a\nevent: b\ndata: x\n\n", [E("x", event="b")], None, None),
    ("event-empty-is-message", b"event: a\nevent:\ndata: x\n\n", [E("x")], None, None),
    ("event-no-colon-is-message", b"event: a\nevent\ndata: x\n\n", [E("x")], None, None),
    ("event-error", b"event: error\ndata: x\n\n", [E("x", event="error")], None, None),
    ("event-two-spaces", b"event:  a\ndata: x\n\n", [E("x", event=" a")], None, None),
    ("event-without-data", b"event: a\n\n", [], None, None),
    ("event-repeated", b"event: t\ndata: 1\n\nevent: t\ndata: 2\n\n", [E("1", "t"), E("2", "t")], None, None),
    # --- id and the last event ID
    ("id", b"id: 1\ndata: a\n\n", [E("a", id="1")], "1", None),
    ("id-persists", b"id: 1\ndata: a\n\ndata: b\n\n", [E("a", id="1"), E("b", id="1")], "1", None),
    ("id-changes", b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n", [E("a", id="1"), E("b", id="2")], "2", None),
    ("id-after-data", b"data: a\nid: 7\n\n", [E("a", id="7")], "7", None),
    ("id-empty-value", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E("a", id="1"), E("b", id="")], "", None),
    ("id-colon-empty", b"id:\ndata: a\n\n", [E("a", id="")], "", None),
    ("id-nul-ignored", b"id: 1\n\nid: 2\x003\ndata: b\n\n", [E("b", id="1")], "1", None),
    ("id-nul-at-end-ignored", b"id: 1\nid: 2\x00\ndata: b\n\n", [E("b", id="1")], "1", None),
    ("id-nul-only", b"id: \x00\ndata: a\n\n", [E("a")], None, None),
    ("id-without-data-updates", b"id: 5\n\n", [], "5", None),
    ("id-without-data-then-event", b"id: 5\n\ndata: a\n\n", [E("a", id="5")], "5", None),
    ("id-unterminated-not-in-force", b"data: a\n\nid: 9\n", [E("a")], None, None),
    ("id-spaces", b"id:  x \ndata: a\n\n", [E("a", id=" x ")], " x ", None),
    ("id-unicode", b"id: \xc3\xa9\ndata: a\n\n", [E("a", id="\xe9")], "\xe9", None),
    ("id-last-wins", b"id: 1\nid: 2\ndata: a\n\n", [E("a", id="2")], "2", None),
    # --- retry
    ("retry", b"retry: 1000\ndata: a\n\n", [E("a", retry=1000)], None, 1000),
    ("retry-per-event", b"retry: 1000\ndata: a\n\ndata: b\n\n", [E("a", retry=1000), E("b")], None, 1000),
    ("retry-not-digits", b"retry: 10a\ndata: a\n\n", [E("a")], None, None),
    ("retry-negative", b"retry: -1\ndata: a\n\n", [E("a")], None, None),
    ("retry-plus", b"retry: +1\ndata: a\n\n", [E("a")], None, None),
    ("retry-float", b"retry: 1.5\ndata: a\n\n", [E("a")], None, None),
    ("retry-empty", b"retry:\ndata: a\n\n", [E("a")], None, None),
    ("retry-no-colon", b"retry\ndata: a\n\n", [E("a")], None, None),
    ("retry-two-spaces", b"retry:  10\ndata: a\n\n", [E("a")], None, None),
    ("retry-trailing-space", b"retry: 10 \ndata: a\n\n", [E("a")], None, None),
    ("retry-underscore", b"retry: 1_000\ndata: a\n\n", [E("a")], None, None),
    ("retry-arabic-indic-digit", b"retry: \xd9\xa1\ndata: a\n\n", [E("a")], None, None),
    ("retry-fullwidth-digit", b"retry: \xef\xbc\x91\ndata: a\n\n", [E("a")], None, None),
    ("retry-zero", b"retry: 0\ndata: a\n\n", [E("a", retry=0)], None, 0),
    ("retry-leading-zeros", b"retry: 007\ndata: a\n\n", [E("a", retry=7)], None, 7),
    ("retry-huge", b"retry: " + b"9" * 40 + b"\ndata: a\n\n", [E("a", retry=10**40 - 1)], None, 10**40 - 1),
    ("retry-18-19-digits", b"retry: 999999999999999999\nretry: 1000000000000000000\n", [], None, 10**18),
    ("retry-many-leading-zeros", b"retry: " + b"0" * 5000 + b"5\ndata: a\n\n", [E("a", retry=5)], None, 5),
    ("retry-too-many-digits", b"retry: 7\nretry: " + b"1" * 5000 + b"\n\n", [], None, 7),
    ("retry-without-data", b"retry: 5\n\n", [], None, 5),
    ("retry-set-before-dispatch", b"retry: 5\ndata: a\n", [], None, 5),
    ("retry-invalid-keeps-valid", b"retry: 5\nretry: x\ndata: a\n\n", [E("a", retry=5)], None, 5),
    ("retry-last-valid-wins", b"retry: 5\nretry: 6\ndata: a\n\n", [E("a", retry=6)], None, 6),
    ("retry-not-carried-over-blank", b"retry: 5\n\ndata: a\n\n", [E("a")], None, 5),
    # --- dispatch and end of stream
    ("empty-stream", b"", [], None, None),
    ("unterminated-event", b"data: a\n", [], None, None),
    ("unterminated-line", b"data: a", [], None, None),
    ("unterminated-after-event", b"data: a\n\ndata: b", [E("a")], None, None),
    ("unterminated-after-event-lf", b"data: a\n\ndata: b\n", [E("a")], None, None),
    ("cr-ends-data-line-only", b"data: a\r", [], None, None),
    ("all-fields", b"id: 1\nevent: e\nretry: 3\ndata: d\n\n", [E("d", "e", "1", 3)], "1", 3),
    ("all-fields-reverse", b"data: d\nretry: 3\nevent: e\nid: 1\r\n\r\n", [E("d", "e", "1", 3)], "1", 3),
    (
        "two-events-state",
        b"id: a\nretry: 10\nevent: x\ndata: 1\n\ndata: 2\n\n",
        [E("1", "x", "a", 10), E("2", id="a")],
        "a",
        10,
    ),
]


def chunkings(raw: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Every way the suite splits a stream: each yields (label, chunks)."""
    yield "whole", [raw]
    yield "bytes", [raw[i : i + 1] for i in range(len(raw))]
    pieces, start = [], 0
    for i, byte in enumerate(raw):
        if byte == 13:
            pieces.append(raw[start : i + 1])
            start = i + 1
    yield "after-cr", pieces + [raw[start:]]
    for i in range(1, len(raw)):
        yield f"two@{i}", [raw[:i], raw[i:]]
    for seed in range(8):
        rng = random.Random(seed)
        count = min(len(raw) - 1, rng.randint(1, 6))
        cuts = sorted(rng.sample(range(1, len(raw)), count)) if count > 0 else []
        bounds = [0, *cuts, len(raw)]
        # an empty chunk now and then: it must change nothing
        yield f"random{seed}", [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] + [b""]


def decode_all(cls: type, chunks: list[bytes], **kwargs: Any) -> tuple[list[Any], Any]:
    """Feed chunks then close; return (results, decoder)."""
    decoder = cls(**kwargs)
    results: list[Any] = []
    for chunk in chunks:
        results += decoder.feed(chunk)
    results += decoder.close()
    return results, decoder


def as_tuples(events: list[ServerSentEvent]) -> list[tuple]:
    assert all(type(e) is ServerSentEvent for e in events)
    return [(e.event, e.data, e.id, e.retry) for e in events]


def run(cls: type, raw: bytes, expected: list[tuple], last_id: str | None, retry: int | None) -> None:
    """Check one stream under every chunking."""
    for label, chunks in chunkings(raw):
        events, decoder = decode_all(cls, chunks)
        assert as_tuples(events) == expected, label
        assert (decoder.last_event_id, decoder.retry) == (last_id, retry), label


@pytest.mark.parametrize(
    ("raw", "expected", "last_id", "retry"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_spec_case(
    decoder_class: type, raw: bytes, expected: list[tuple], last_id: str | None, retry: int | None
) -> None:
    run(decoder_class, raw, expected, last_id, retry)


def test_case_names_unique() -> None:
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)) >= 60


def test_events_returned_as_soon_as_blank_line_arrives(decoder_class: type) -> None:
    decoder = decoder_class()
    assert decoder.feed(b"data: a\r") == []
    assert as_tuples(decoder.feed(b"\r")) == [E("a")]  # not held back for a possible LF
    assert decoder.feed(b"\n") == []  # the LF of that CRLF: nothing more
    assert as_tuples(decoder.feed(b"data: b\n\n")) == [E("b")]


def test_cr_lf_skip_happens_only_once(decoder_class: type) -> None:
    decoder = decoder_class()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []  # an empty chunk keeps the pending CR
    assert decoder.feed(b"\n") == []
    assert as_tuples(decoder.feed(b"\n")) == [E("a")]  # this LF is a blank line


def test_initial_state(decoder_class: type) -> None:
    decoder = decoder_class()
    assert decoder.last_event_id is None
    assert decoder.retry is None
    assert decoder.close() == []


def test_feed_accepts_bytes_like(decoder_class: type) -> None:
    decoder = decoder_class()
    out = decoder.feed(bytearray(b"data: a\n"))
    out += decoder.feed(memoryview(b"xx\n\nyy")[2:4])
    assert as_tuples(out) == [E("a")]
    assert decoder.feed(memoryview(bytearray(b"data: b\n\n"))) == [ServerSentEvent(data="b")]


def test_feed_rejects_text(decoder_class: type) -> None:
    with pytest.raises(TypeError, match="bytes, bytearray or memoryview, not str"):
        decoder_class().feed("data: a\n\n")


@pytest.mark.parametrize("bad", [0, -1])
def test_max_size_must_be_positive(decoder_class: type, bad: int) -> None:
    with pytest.raises(ValueError, match="max_size must be at least 1"):
        decoder_class(max_size=bad)


@pytest.mark.parametrize("bad", [1.5, "10", True, None])
def test_max_size_must_be_int(decoder_class: type, bad: object) -> None:
    with pytest.raises(TypeError, match="max_size must be an int"):
        decoder_class(max_size=bad)


def test_default_max_size(decoder_class: type) -> None:
    assert DEFAULT_MAX_SIZE == 16 * 2**20
    big = b"x" * (DEFAULT_MAX_SIZE - 6)
    assert decoder_class().feed(b"data: " + big + b"\n\n") == [ServerSentEvent(data=big.decode())]
    with pytest.raises(SSEDecodeError, match=f"max_size \\({DEFAULT_MAX_SIZE} bytes\\)"):
        decoder_class().feed(b"data: " + big + b"x\n\n")


def test_huge_max_size_is_accepted(decoder_class: type) -> None:
    assert decoder_class(max_size=2**100).feed(b"data: a\n\n") == [ServerSentEvent(data="a")]


# --- close(): end of stream, then a new stream


def test_close_discards_unterminated_event_and_its_id(decoder_class: type) -> None:
    decoder = decoder_class()
    first = decoder.feed(b"id: 1\ndata: a\n\nid: 2\nretry: 9\ndata: b\n")
    assert first == [ServerSentEvent("message", "a", "1")]
    assert decoder.close() == []
    assert (decoder.last_event_id, decoder.retry) == ("1", 9)
    # a new stream: a BOM is stripped again, the last event ID carries on
    assert as_tuples(decoder.feed(BOM + b"data: c\n\n")) == [E("c", id="1")]


def test_close_discards_pending_cr_and_partial_line(decoder_class: type) -> None:
    decoder = decoder_class()
    decoder.feed(b"data: a\ndata: b\r")
    decoder.close()
    # the LF is not skipped as the second half of a CRLF: it is a blank line, with nothing to dispatch
    assert decoder.feed(b"\ndata: z\n\n") == [ServerSentEvent(data="z")]
    decoder.feed(b"data: partial")
    decoder.close()
    assert decoder.feed(b"\n\n") == []


# --- the typed fast path


class Item(msgspec.Struct):
    a: int
    b: str = ""


TYPED_STREAM = (
    b'data: {"a": 1}\n\n'
    b'event: error\nid: 7\ndata: {"message": "boom"}\n\n'
    b'event: update\nretry: 5\ndata: {"a": 2,\ndata: "b": "x\\u00e9\xc3\xa9"}\r\n\r\n'
    b'event: Error\ndata: {"a": 3}\n\n'
    b'event: error \ndata: {"a": 4}\n\n'
    b"id: 8\n\n"
    b'data: {"a": 5}\n\n'
)


def test_typed_decode(decoder_class: type) -> None:
    decode = msgspec.json.Decoder(Item).decode
    expected = [
        Item(1),
        ServerSentEvent("error", '{"message": "boom"}', "7", None),
        Item(2, "x\xe9\xe9"),
        Item(3),
        Item(4),
        Item(5),
    ]
    for label, chunks in chunkings(TYPED_STREAM):
        decoder = decoder_class()
        results = []
        for chunk in chunks:
            results += decoder.feed(chunk, decode)
        results += decoder.close(decode)
        assert results == expected, label
        assert all(type(r) in (Item, ServerSentEvent) for r in results)
        assert (decoder.last_event_id, decoder.retry) == ("8", 5), label


def test_typed_decode_gets_utf8_data_bytes(decoder_class: type) -> None:
    seen: list[bytes] = []

    def decode(data: Any) -> int:
        assert isinstance(data, (bytes, memoryview))
        seen.append(bytes(data))
        return len(seen)

    stream = b"data: a\ndata: b\n\ndata\ndata\n\ndata: \xff\xe2\x82x\n\ndata: \xc3\xa9\xf0\x9f\x98\x80\n\n"
    for label, chunks in chunkings(stream):
        seen.clear()
        decoder = decoder_class()
        results = [r for chunk in chunks for r in decoder.feed(chunk, decode)]
        assert results == [1, 2, 3, 4], label
        assert seen == [b"a\nb", b"\n", "\ufffd\ufffdx".encode(), "\xe9\U0001f600".encode()], label


def test_typed_decode_error_propagates_unchanged(decoder_class: type) -> None:
    class Boom(Exception):
        pass

    boom = Boom("no")

    def decode(data: Any) -> Any:
        raise boom

    with pytest.raises(Boom) as info:
        decoder_class().feed(b"data: 1\n\n", decode)
    assert info.value is boom
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int`, got `str` - at `\$.a`"):
        decoder_class().feed(b'data: {"a": "x"}\n\n', msgspec.json.Decoder(Item).decode)


def test_decoder_is_broken_after_decode_raises(decoder_class: type) -> None:
    def decode(data: Any) -> Any:
        if data == b"2":
            raise KeyError(data)
        return data

    decoder = decoder_class()
    assert decoder.feed(b"data: 1\n\n", decode) == [b"1"]
    with pytest.raises(KeyError):
        decoder.feed(b"data: 2\n\ndata: 3\n\ndata: 4", decode)
    for call in (lambda: decoder.feed(b"\n\n"), decoder.close):
        with pytest.raises(SSEDecodeError, match=r"^SSE decoder unusable: an exception escaped an earlier"):
            call()


# Typed mode skips an event whose data is empty (a keep-alive): no decode(b""), nothing returned, while
# its id and retry act as for any dispatched event. "error" events and the raw layer are unchanged.
# (name, stream, expected typed results, final last_event_id, final retry); decode(d) gives ("d", d).
TYPED_EMPTY_CASES: list[tuple[str, bytes, list[Any], str | None, int | None]] = [
    ("data-colon", b"data:\n\n", [], None, None),
    ("data-bare", b"data\n\n", [], None, None),
    ("data-colon-space", b"data: \n\n", [], None, None),
    ("data-crlf", b"data:\r\n\r\n", [], None, None),
    ("data-cr", b"data\r\r", [], None, None),
    ("with-id", b"id: 7\ndata:\n\n", [], "7", None),
    ("with-id-after-data", b"data\nid: 7\n\n", [], "7", None),
    ("with-retry", b"retry: 250\ndata:\n\n", [], None, 250),
    ("with-event-name", b"event: ping\ndata:\n\n", [], None, None),
    ("with-all-fields", b"id: x\nevent: ping\nretry: 9\ndata\n\n", [], "x", 9),
    ("between-two-events", b"data: 1\n\ndata:\n\ndata: 2\n\n", [("d", b"1"), ("d", b"2")], None, None),
    (
        "id-of-skipped-event-carries-on",
        b"id: 1\ndata: a\n\nid: 2\ndata:\n\ndata: b\n\n",
        [("d", b"a"), ("d", b"b")],
        "2",
        None,
    ),
    ("id-of-last-skipped-event", b"id: 1\ndata: a\n\nid: 2\ndata\n\n", [("d", b"a")], "2", None),
    ("retry-of-skipped-event", b"retry: 5\ndata:\n\ndata: z\n\n", [("d", b"z")], None, 5),
    ("keep-alives", b":\n\ndata:\n\n" * 3 + b"data: {}\n\n" + b"data\n\n" * 2, [("d", b"{}")], None, None),
    ("two-empty-lines-not-empty", b"data\ndata\n\n", [("d", b"\n")], None, None),
    ("empty-then-real-line", b"data:\ndata: a\n\n", [("d", b"\na")], None, None),
    ("error-empty-kept", b"event: error\ndata:\n\n", [ServerSentEvent("error", "")], None, None),
    (
        "error-empty-with-id-kept",
        b"event: error\nid: 3\nretry: 4\ndata\n\n",
        [ServerSentEvent("error", "", "3", 4)],
        "3",
        4,
    ),
    ("unterminated-after-empty", b"data:\n\ndata: x\n", [], None, None),
]


@pytest.mark.parametrize(
    ("raw", "expected", "last_id", "retry"),
    [c[1:] for c in TYPED_EMPTY_CASES],
    ids=[c[0] for c in TYPED_EMPTY_CASES],
)
def test_typed_mode_skips_empty_data(
    decoder_class: type, raw: bytes, expected: list[Any], last_id: str | None, retry: int | None
) -> None:
    calls: list[bytes] = []

    def decode(data: Any) -> tuple[str, bytes]:
        calls.append(bytes(data))
        return ("d", bytes(data))

    for label, chunks in chunkings(raw):
        calls.clear()
        decoder = decoder_class()
        results = [r for chunk in chunks for r in decoder.feed(chunk, decode)] + decoder.close(decode)
        assert results == expected, label
        assert b"" not in calls, label
        assert len(calls) == sum(type(r) is tuple for r in expected), label
        assert (decoder.last_event_id, decoder.retry) == (last_id, retry), label
        # the raw layer still returns every event, empty data included, with the same state
        plain, plain_decoder = decode_all(decoder_class, chunks)
        kept = [
            ("d", e.data.encode()) if e.event != "error" else e for e in plain if e.data or e.event == "error"
        ]
        assert kept == expected, label
        assert (plain_decoder.last_event_id, plain_decoder.retry) == (last_id, retry), label


def test_typed_mode_skipped_event_updates_last_event_id_at_once(decoder_class: type) -> None:
    decoder = decoder_class()
    decode = msgspec.json.Decoder(Item).decode
    assert decoder.feed(b'id: 1\ndata: {"a": 1}\n\n', decode) == [Item(1)]
    assert decoder.feed(b"id: 2\nretry: 30\ndata:\n", decode) == []
    assert (decoder.last_event_id, decoder.retry) == ("1", 30)  # the id is in force at dispatch only
    assert decoder.feed(b"\n", decode) == []  # a JSON decoder would fail on b""; it is never called
    assert (decoder.last_event_id, decoder.retry) == ("2", 30)
    assert decoder.feed(b"data\n\n", decode) == []
    assert decoder.feed(b'data: {"a": 2}\n\n') == [ServerSentEvent(data='{"a": 2}', id="2")]


def test_typed_mode_can_switch_per_feed(decoder_class: type) -> None:
    decoder = decoder_class()
    assert decoder.feed(b'data: {"a": 1}\n\n', msgspec.json.decode) == [{"a": 1}]
    assert decoder.feed(b'data: {"a": 1}\n\n') == [ServerSentEvent(data='{"a": 1}')]


# --- the size limit


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"data: 0123456789\n\n", "SSE line longer than max_size (10 bytes)"),
        (b": 345678901\n\n", "SSE line longer than max_size (10 bytes)"),
        (b"data: 1234\r\ndata: 56789\n\n\n", "SSE line longer than max_size (10 bytes)"),
        (b"data: 0123456789", "SSE line longer than max_size (10 bytes)"),  # unterminated too
        (b"data: 1234\ndata: 5678\ndata\n\n", "SSE event data longer than max_size (10 bytes)"),
        (b"data\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\n\n", "SSE event data longer"),
    ],
)
def test_oversize_raises(decoder_class: type, raw: bytes, message: str) -> None:
    for label, chunks in chunkings(raw):
        decoder = decoder_class(max_size=10)
        with pytest.raises(SSEDecodeError) as info:
            for chunk in chunks:
                assert decoder.feed(chunk) == []
            decoder.close()
        assert str(info.value).startswith(message), label


def test_limits_at_exactly_max_size(decoder_class: type) -> None:
    # a 10-byte line; data of 10 bytes counting one LF per line ("1234\n5678\n")
    assert decoder_class(max_size=10).feed(b"data: 1234\ndata:5678\n\n") == [
        ServerSentEvent(data="1234\n5678")
    ]
    assert decoder_class(max_size=10).feed(b"data:01234\r\r") == [ServerSentEvent(data="01234")]
    assert decoder_class(max_size=10).feed(b"data\n" * 10 + b"\n") == [ServerSentEvent(data="\n" * 9)]


def test_oversize_after_events_returns_them_first(decoder_class: type) -> None:
    raw = b"id: 1\ndata: a\n\nretry: 4\ndata: " + b"x" * 50 + b"\n\ndata: b\n\n"
    for label, chunks in chunkings(raw):
        decoder = decoder_class(max_size=20)
        results: list[Any] = []
        with pytest.raises(SSEDecodeError, match=r"^SSE line longer than max_size \(20 bytes\)$"):
            for chunk in chunks:
                results += decoder.feed(chunk)
            decoder.close()
        assert as_tuples(results) == [E("a", id="1")], label
        assert (decoder.last_event_id, decoder.retry) == ("1", 4), label
        # the decoder stays broken
        with pytest.raises(SSEDecodeError, match="max_size"):
            decoder.feed(b"data: c\n\n")
        with pytest.raises(SSEDecodeError, match="max_size"):
            decoder.close()


@pytest.mark.limit_memory("8 MB")
def test_no_line_end_raises_early_with_bounded_memory(decoder_class: type) -> None:
    decoder = decoder_class(max_size=2**20)
    chunk = b"x" * 2**16
    fed = 0
    with pytest.raises(SSEDecodeError, match=r"max_size \(1048576 bytes\)"):
        while fed < 100 * 2**20:  # 100 MB without a line end
            decoder.feed(chunk)
            fed += len(chunk)
    assert fed <= 2**20


@pytest.mark.limit_memory("8 MB")
def test_endless_event_raises_early_with_bounded_memory(decoder_class: type) -> None:
    decoder = decoder_class(max_size=2**20)
    chunk = (b"data: " + b"y" * 1000 + b"\n") * 64
    fed = 0
    with pytest.raises(SSEDecodeError, match=r"^SSE event data longer than max_size \(1048576 bytes\)$"):
        while fed < 100 * 2**20:
            decoder.feed(chunk)
            fed += len(chunk)
    assert fed <= 2**20 + len(chunk)


# --- linear under any chunking


@pytest.mark.slow
def test_byte_by_byte_is_linear(decoder_class: type) -> None:
    """2 MB fed one byte at a time: a long pending line, then many short lines.

    A decoder that searched its whole pending buffer on every feed would do
    ~10**12 byte comparisons here and never finish; this one must.
    """
    long_line = b"data: " + b"z" * (2**20) + b"\r\n"
    short = b"data: 0123456789\ndata: abc\r\n\r\n" * (2**20 // 30)
    stream = long_line + short
    decoder = decoder_class()
    feed = decoder.feed
    results: list[Any] = []
    view = memoryview(stream)
    for i in range(len(stream)):
        results += feed(view[i : i + 1])
    n = 2**20 // 30
    assert len(results) == n
    assert results[0].data == "z" * 2**20 + "\n0123456789\nabc"
    assert results[1] == ServerSentEvent(data="0123456789\nabc")


def test_decode_error_comes_after_the_events_before_it(decoder_class):
    """A ``decode`` that raises on the third event of a chunk: the first two are returned,
    the next call raises that same exception, and the decoder stays broken after it."""
    boom = ValueError("bad data")

    def decode(data: bytes) -> bytes:
        if data == b"3":
            raise boom
        return data

    decoder = decoder_class()
    assert decoder.feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n", decode) == [b"1", b"2"]
    with pytest.raises(ValueError) as raised:
        decoder.feed(b"data: 5\n\n", decode)
    assert raised.value is boom
    with pytest.raises(SSEDecodeError, match="unusable"):
        decoder.close(decode)


def test_decode_error_on_the_first_event_raises_at_once(decoder_class):
    def decode(data: bytes) -> bytes:
        raise KeyError(data)

    decoder = decoder_class()
    with pytest.raises(KeyError):
        decoder.feed(b"data: 1\n\ndata: 2\n\n", decode)
    with pytest.raises(SSEDecodeError, match="unusable"):
        decoder.feed(b"data: 3\n\n")


# (stream, decode?, error_events after it): only dispatched "error" events count, typed or not.
ERROR_EVENT_COUNTS = [
    (b"data: 1\n\n", False, 0),
    (b"event: error\ndata: x\n\n", False, 1),
    (b"event: error\ndata: x\n\n", True, 1),
    (b"event: error\n\n", True, 0),  # no data: no event dispatched
    (b"event: errors\ndata: x\n\nevent: Error\ndata: x\n\n", False, 0),
    (b"event: error\ndata: x\n\ndata: 2\n\nevent: error\ndata: {}\n\n", True, 2),
    (b"event: error\ndata: x\n", False, 0),  # not dispatched yet
]


@pytest.mark.parametrize(("raw", "typed", "expected"), ERROR_EVENT_COUNTS)
def test_error_events_counts_the_error_events_returned(
    decoder_class: type, raw: bytes, typed: bool, expected: int
) -> None:
    decoder = decoder_class()
    decode = (lambda data: data) if typed else None
    returned = []
    for i in range(len(raw)):  # one byte at a time: the count moves with the event that completes
        returned += decoder.feed(raw[i : i + 1], decode)
    errors = [e for e in returned if getattr(e, "event", None) == "error"]
    assert decoder.error_events == expected == len(errors)
