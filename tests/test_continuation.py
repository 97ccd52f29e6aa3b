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


# (name, the answer to the resume, whether it continues v1)
ANSWERS = [
    ("206 from the cut", _range(CUT, SIZE - 1), True),
    ("206 of unknown length", _range(CUT, SIZE - 1, total="*"), True),
    ("206 at an earlier offset", _range(CUT - 1000, SIZE - 1), False),
    ("206 at a later offset", _range(CUT + 1000, SIZE - 1), False),
    ("206 of another length", _range(CUT, SIZE, total=SIZE + 1, body=OLD[CUT:] + b"x"), False),
    ("206 stopping short of the end", _range(CUT, CUT + 999), False),
    ("206 whose body is shorter than its range", _range(CUT, SIZE - 1, body=OLD[CUT:9000]), False),
    ("206 without Content-Range", _answer(206, OLD[CUT:], ETag='"v1"'), False),
    (
        "206 with an unsatisfied Content-Range",
        _answer(206, OLD[CUT:], ETag='"v1"', Content_Range=f"bytes */{SIZE}"),
        False,
    ),
    (
        "206 multipart",
        _answer(206, b"--X\r\n" + OLD[CUT:], ETag='"v1"', Content_Type="multipart/byteranges; boundary=X"),
        False,
    ),
    ("206 of another version", _range(CUT, SIZE - 1, etag='"v2"', body=NEW[CUT:]), False),
    ("200 of the same version", _answer(200, OLD, ETag='"v1"'), False),
    ("416: the resource shrank", _answer(416, b"", Content_Range=f"bytes */{CUT - 100}"), False),
    ("200 of another version", _answer(200, NEW, ETag='"v2"'), False),
]
WHOLE_NEW = _answer(200, NEW, ETag='"v2"')


@pytest.mark.parametrize(("name", "answer", "continues"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_a_download_continues_exactly_or_restarts_from_zero(name, answer, continues, tmp_path):
    dest = tmp_path / "f"
    with raw_server(_cut, answer, WHOLE_NEW) as url:
        with Client(api_key=API_KEY, base_url=url, max_retries=3, sleep=lambda s: None) as client:
            client.download("/f", dest, connections=1)
    data = dest.read_bytes()
    if continues:
        assert data == OLD
    else:  # the whole resource as served after the cut: v1 again (a 200 of v1) or v2
        assert data == (OLD if name == "200 of the same version" else NEW), "a spliced file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize(("name", "answer", "continues"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_a_byte_stream_continues_exactly_or_raises(name, answer, continues):
    with raw_server(_cut, answer) as url:
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
