"""StreamedResponse through ``client.stream()``: bytes, text, lines, events, whole bodies, truncation, pooling."""

from __future__ import annotations

import hashlib

import pytest

from tinker_sync import (
    APIConnectionError,
    APIStatusError,
    NotFoundError,
    ServerSentEvent,
    StreamAlreadyConsumed,
    Timeout,
)
from tinker_sync.testing import Fault, _data

# Tests that reach the SSE decoder run once per twin (py, cython): they ask for ``sse_implementation``.


def body_of(size: int, seed: int = 0) -> bytes:
    return b"".join(_data.generate(seed, size))


# -- basics --------------------------------------------------------------------------------------


def test_status_headers_url(client, tinker_server):
    with client.stream("GET", "/test/bytes", params={"size": 100}) as response:
        assert response.status_code == 200
        assert response.is_success
        assert response.headers["Content-Length"] == "100"
        assert response.headers["content-length"] == "100"  # case-insensitive
        assert response.url == tinker_server.url + "/test/bytes?size=100"
        assert not response.is_closed and not response.is_stream_consumed
        assert response.read() == body_of(100)
        assert response.num_bytes_downloaded == 100
    assert response.is_closed


def test_iter_bytes_hands_out_data_as_it_arrives(client):
    # The server sends one event, then sends nothing more until the client goes away. A reader that
    # waits to fill a buffer would block here until the read timeout; read1 hands the event out at once.
    with client.stream("GET", "/test/sse?count=1&hang=1", timeout=Timeout(connect=5, read=30)) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first.startswith(b'data: {"index":0')
        assert first.endswith(b"\n\n")
    assert response.is_closed


def test_iter_bytes_trickle_arrives_in_pieces(client):
    with client.stream("GET", "/test/sse?count=5&size=50&delay=0.02") as response:
        chunks = list(response.iter_bytes())
    assert len(chunks) >= 2  # not one buffered block
    assert b"".join(chunks).count(b"\n\n") == 5


@pytest.mark.parametrize("size,chunk_size", [(10_000, 3000), (9000, 3000), (1, 7), (300_000, 65_536), (5, 1)])
def test_iter_bytes_rechunks_exactly(client, size, chunk_size):
    with client.stream("GET", f"/test/bytes?size={size}&trickle=999") as response:
        chunks = list(response.iter_bytes(chunk_size=chunk_size))
    assert b"".join(chunks) == body_of(size)
    assert all(len(c) == chunk_size for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk_size
    assert len(chunks) == -(-size // chunk_size)


def test_iter_bytes_rejects_bad_chunk_size(client):
    with client.stream("GET", "/test/bytes?size=10") as response:
        with pytest.raises(ValueError):
            next(response.iter_bytes(chunk_size=0))


def test_iter_text_multibyte_split(client):
    text = "héllo wörld ✓ 🎉" * 10
    # one byte per chunk, each sent after a pause: reads that end inside a character
    with client.stream(
        "POST", "/test/sse-raw?chunk=1&delay=0.001&content_type=text/plain", content=text.encode()
    ) as response:
        parts = list(response.iter_text())
    assert "".join(parts) == text
    assert len(parts) > 1


def test_iter_text_uses_charset(client):
    text = "café"
    with client.stream(
        "POST", "/test/sse-raw?content_type=text/plain;%20charset=latin-1", content=text.encode("latin-1")
    ) as response:
        assert "".join(response.iter_text()) == text


LINE_CASES = [
    (b"a\nb\nc", ["a", "b", "c"]),
    (b"a\r\nb\r\nc\r\n", ["a", "b", "c"]),
    (b"a\rb\rc\r", ["a", "b", "c"]),
    (b"a\r\n\r\nb", ["a", "", "b"]),
    (b"a\n\rb\r\r\n", ["a", "", "b", ""]),
    (b"\n\n", ["", ""]),
    (b"mixed\rcr\nlf\r\ncrlf", ["mixed", "cr", "lf", "crlf"]),
]


@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
@pytest.mark.parametrize("body,expected", LINE_CASES)
def test_iter_lines(client, body, expected, chunk):
    query = "?content_type=text/plain" + (f"&chunk={chunk}&delay=0.001" if chunk else "")
    with client.stream("POST", "/test/sse-raw" + query, content=body) as response:
        assert list(response.iter_lines()) == expected
    assert expected == body.decode().splitlines()


def test_iter_lines_crlf_split_across_chunks(client):
    # chunk=2 puts the CR of "ab\r\ncd" at the end of a chunk and the LF at the start of the next
    with client.stream("POST", "/test/sse-raw?chunk=3&delay=0.001", content=b"ab\r\ncd\r\nef") as response:
        assert list(response.iter_lines()) == ["ab", "cd", "ef"]


def test_iter_events(client, sse_implementation):
    with client.stream("GET", "/test/sse?count=3&ids=1&event=tick&chunk=7") as response:
        events = list(response.iter_events())
    assert [e.id for e in events] == ["0", "1", "2"]
    assert all(type(e) is ServerSentEvent and e.event == "tick" for e in events)
    assert [e.json()["index"] for e in events] == [0, 1, 2]


def test_read_text_json(client):
    with client.stream("GET", "/api/v1/healthz") as response:
        assert response.read() == b'{"status":"ok"}'
        assert response.read() == b'{"status":"ok"}'  # cached
        assert response.text() == '{"status":"ok"}'
        assert response.json() == {"status": "ok"}
        assert response.is_closed
        # iter_bytes after read() replays the cached body
        assert b"".join(response.iter_bytes()) == b'{"status":"ok"}'


def test_reading_twice_raises(client):
    with client.stream("GET", "/test/bytes?size=10") as response:
        assert len(b"".join(response.iter_bytes())) == 10
        with pytest.raises(StreamAlreadyConsumed):
            list(response.iter_bytes())
        with pytest.raises(StreamAlreadyConsumed):
            response.read()
        with pytest.raises(StreamAlreadyConsumed):
            list(response.iter_lines())


def test_read_after_close_raises(client):
    with client.stream("GET", "/test/bytes?size=10") as response:
        response.close()
        assert response.is_closed
        with pytest.raises(StreamAlreadyConsumed):
            response.read()


def test_status_error_raises_on_entry(client, tinker_server):
    with pytest.raises(NotFoundError) as info:
        with client.stream("GET", "/test/status/404"):
            pytest.fail("the block must not run")
    assert info.value.status_code == 404
    assert info.value.body == {"error": {"message": "status 404"}}
    assert info.value.response.status_code == 404


# -- connections ---------------------------------------------------------------------------------


def test_streams_read_to_end_reuse_one_connection(client, tinker_server, sse_implementation):
    for _ in range(5):
        with client.stream("GET", "/test/bytes?size=100000") as response:
            assert len(b"".join(response.iter_bytes())) == 100_000
        with client.stream("GET", "/test/sse?count=3") as response:
            assert len(list(response.iter_events())) == 3
    assert tinker_server.connections == 1
    stats = client._transport.pool_stats(tinker_server.url)
    assert stats["idle"] == 1


def test_early_break_discards_connection(client, tinker_server):
    with client.stream("GET", "/test/bytes?size=10000000") as response:
        for _chunk in response.iter_bytes():
            break
    assert response.is_closed
    assert response._body.raw.closed
    with client.stream("GET", "/test/bytes?size=100") as response:
        assert response.read() == body_of(100)
    assert tinker_server.connections == 2
    assert len(tinker_server.requests) == 2


def test_unread_body_is_not_drained(client, tinker_server):
    # an endless stream is closed, never drained: leaving the block returns at once
    with client.stream("GET", "/test/sse?count=1&hang=1") as response:
        assert response.status_code == 200
    assert response.is_closed
    assert client.get("/api/v1/healthz") == {"status": "ok"}


# -- truncation ----------------------------------------------------------------------------------


def test_reset_mid_body_raises(client, tinker_server):
    with pytest.raises(APIConnectionError):
        with client.stream("GET", "/test/bytes?size=200000&reset_after=50000", max_retries=0) as response:
            for _chunk in response.iter_bytes():
                pass
    assert response.num_bytes_downloaded <= 50000


def test_truncated_chunked_sse_raises(client, sse_implementation):
    with client.stream("GET", "/test/sse?count=10&cut_after=3") as response:
        seen = []
        with pytest.raises(APIConnectionError):
            for event in response.iter_events():
                seen.append(event)
    assert len(seen) == 3


def test_short_content_length_raises_get(client, tinker_server):
    with pytest.raises(APIConnectionError):
        with client.stream("GET", "/test/bytes?size=1000&wrong_length=2000", max_retries=0) as response:
            response.read()


def test_short_content_length_raises_post(client):
    with client.stream(
        "POST", "/test/sse-raw?framing=length&wrong_length=500", content=b"x" * 100
    ) as response:
        with pytest.raises(APIConnectionError):
            for _chunk in response.iter_bytes():
                pass


def test_short_content_length_plain_call_raises(client, tinker_server):
    with pytest.raises(APIConnectionError):
        client.request(
            "POST", "/test/sse-raw?framing=length&wrong_length=500", content=b"x" * 100, max_retries=0
        )
    assert len(tinker_server.requests) == 1


def test_short_content_length_scripted(client, tinker_server):
    tinker_server.script("/test/bytes", Fault(wrong_length=5000))
    with pytest.raises(APIConnectionError):
        with client.stream("GET", "/test/bytes?size=1000", max_retries=0) as response:
            b"".join(response.iter_bytes())


@pytest.mark.parametrize("path", ["/api/v1/healthz", "/test/bytes?size=10"])
def test_error_body_cut_short_still_raises_its_status(client, tinker_server, path):
    """An error response whose body ends short of its Content-Length raises the status error (with
    what arrived of the body), for plain and streaming calls alike: never a BufferError."""
    tinker_server.script(path.split("?")[0], Fault(status=400, wrong_length=5000))
    with pytest.raises(APIStatusError) as info:
        if path.startswith("/api"):
            client.get(path, max_retries=0)
        else:
            with client.stream("GET", path, max_retries=0):
                pass
    assert info.value.status_code == 400
    assert b"injected status 400" in info.value.response.read()


def test_connection_refused_is_connection_error(tinker_server):
    from tinker_sync import Client

    with Client(api_key="tml-x", base_url="http://127.0.0.1:1", max_retries=0) as c:
        with pytest.raises(APIConnectionError):
            c.get("/api/v1/healthz")


def test_large_body_sha(client):
    size = 5 << 20
    digest = hashlib.sha256()
    with client.stream("GET", f"/test/bytes?size={size}&seed=3") as response:
        for chunk in response.iter_bytes(chunk_size=1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == _data.sha256_of(3, size)


def test_status_error_class_from_stream(client):
    with pytest.raises(APIStatusError) as info:
        with client.stream("POST", "/test/status/418"):
            pass
    assert type(info.value) is APIStatusError
    assert info.value.status_code == 418
