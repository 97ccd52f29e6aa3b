"""The one continuation rule over real sockets: what a resume answers, and what each reader does with
it. A body cut at byte 4,000 (still in the reader's buffer, not yet written) is resumed; the answer
either continues it exactly (the same bytes), or a download restarts from zero with the whole
resource as the server now serves it (never a spliced file), and a byte stream raises."""

from __future__ import annotations

import pytest
from _sockets import raw_server

from tinker_sync import APIConnectionError, Client

API_KEY = "tml-test-key"
OLD = bytes(range(256)) * 40  # 10,240 bytes, version "v1"
NEW = OLD[::-1]  # the resource as saved again, version "v2"
SIZE = len(OLD)
CUT = 4000


def _answer(status: int, body: bytes, **headers: str):
    def script(conn, request, stop):
        head = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
        conn.sendall(
            b"HTTP/1.1 %d X\r\n%sContent-Length: %d\r\n\r\n" % (status, head.encode(), len(body)) + body
        )

    return script


def _cut(conn, request, stop):
    """The first answer: v1, cut after CUT bytes."""
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: "v1"\r\n\r\n' % SIZE + OLD[:CUT])
    conn.shutdown(2)


def _range(first: int, last: int, total: object = SIZE, etag: str = '"v1"', body: bytes | None = None):
    data = OLD[first : last + 1] if body is None else body
    return _answer(206, data, ETag=etag, Content_Range=f"bytes {first}-{last}/{total}")


WHOLE_OLD = _answer(200, OLD, ETag='"v1"')
WHOLE_NEW = _answer(200, NEW, ETag='"v2"')

# The issue-18 rule (it replaces the older one, under which a 206 from earlier, one ending early and a
# 200 of the same version all restarted a download from zero): any answer of the same version that
# holds the byte at the cut serves (a 206 from earlier: the prefix is skipped; one ending early: the
# rest is asked for again; a 200: read past the cut); one of the same version that cannot serve is
# replaced by the whole, read on from the cut; only another version restarts from zero (a file) or
# raises (a byte stream, which cannot take back what it handed out).
# (name, the answers after the cut, whether v1 continues: no restart, the stream goes on)
SERVES = [
    ("206 from the cut", [_range(CUT, SIZE - 1)]),
    ("206 of unknown length", [_range(CUT, SIZE - 1, total="*")]),
    ("206 at an earlier offset", [_range(CUT - 1000, SIZE - 1)]),
    ("206 from byte 0", [_range(0, SIZE - 1)]),
    ("206 stopping short of the end", [_range(CUT, CUT + 999), _range(CUT + 1000, SIZE - 1)]),
    ("206 from earlier stopping short", [_range(CUT - 10, CUT + 9), _range(CUT + 10, SIZE - 1)]),
    (
        "206s stopping short twice, then the whole",
        [_range(CUT, CUT + 999), _range(CUT + 1000, CUT + 1999), WHOLE_OLD],
    ),
    ("200 of the same version", [WHOLE_OLD]),
]
# The same version answered so that the answer cannot serve: the whole is asked for next.
UNUSABLE = [
    ("206 at a later offset", _range(CUT + 1000, SIZE - 1)),
    ("206 whose body is shorter than its range", _range(CUT, SIZE - 1, body=OLD[CUT:9000])),
    ("206 without Content-Range", _answer(206, OLD[CUT:], ETag='"v1"')),
    (
        "206 with an unsatisfied Content-Range",
        _answer(206, OLD[CUT:], ETag='"v1"', Content_Range=f"bytes */{SIZE}"),
    ),
    (
        "206 multipart",
        _answer(206, b"--X\r\n" + OLD[CUT:], ETag='"v1"', Content_Type="multipart/byteranges; boundary=X"),
    ),
]
# Another version (or nothing to show it is the same): a file restarts with the whole as now served.
CHANGED = [
    ("206 of another length", [_range(CUT, SIZE, total=SIZE + 1, body=OLD[CUT:] + b"x"), WHOLE_NEW]),
    ("206 of another version", [_range(CUT, SIZE - 1, etag='"v2"', body=NEW[CUT:]), WHOLE_NEW]),
    ("416: the resource shrank", [_answer(416, b"", Content_Range=f"bytes */{CUT - 100}"), WHOLE_NEW]),
    ("200 of another version", [WHOLE_NEW]),
]
ANSWERS = (
    [(name, answers, True, OLD) for name, answers in SERVES]
    + [(f"{name}, then the whole again", [answer, WHOLE_OLD], True, OLD) for name, answer in UNUSABLE]
    + [(f"{name}, then another version", [answer, WHOLE_NEW], False, NEW) for name, answer in UNUSABLE]
    + [(name, answers, False, NEW) for name, answers in CHANGED]
    + [("200 of the same bytes without a validator", [_answer(200, OLD)], False, OLD)]
)


@pytest.mark.parametrize(("name", "answers", "continues", "result"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_a_download_continues_or_restarts_only_for_another_version(
    name, answers, continues, result, tmp_path, caplog
):
    dest = tmp_path / "f"
    with raw_server(_cut, *answers) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=3, sleep=lambda s: None) as client:
            client.download("/f", dest, connections=1)
    assert dest.read_bytes() == result, "a spliced file"
    restarts = [r for r in caplog.records if "from byte 0" in r.getMessage()]
    assert len(restarts) == (0 if continues else 1), [r.getMessage() for r in restarts]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize(("name", "answers", "continues", "result"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_a_byte_stream_continues_exactly_or_raises(name, answers, continues, result):
    with raw_server(_cut, *answers) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=3, sleep=lambda s: None) as client:
            got = bytearray()
            if continues:
                with client.stream("GET", "/f") as response:
                    for chunk in response.iter_bytes():
                        got += chunk
                assert got == OLD
            else:
                with pytest.raises(APIConnectionError, match="Cannot resume"):
                    with client.stream("GET", "/f") as response:
                        for chunk in response.iter_bytes():
                            got += chunk
                assert got == OLD[:CUT]  # what it handed out before the cut, and nothing else


def test_short_answers_without_end_spend_the_budget_then_raise():
    """A server whose every resume answer ends early, and whose whole breaks too: bounded, then raises."""
    short = [_range(CUT, CUT + 99), _range(CUT + 100, CUT + 199), _cut] * 4
    with raw_server(_cut, *short) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=2, sleep=lambda s: None) as client:
            got = bytearray()
            with pytest.raises(APIConnectionError):
                with client.stream("GET", "/f") as response:
                    for chunk in response.iter_bytes():
                        got += chunk
    assert got == OLD[: len(got)] and len(got) >= CUT + 200  # never a wrong byte, progress kept
