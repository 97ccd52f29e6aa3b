"""An incomplete sample is an error: a token stream that ends without its ``done`` event raises
(after every chunk that came was handed to the loop), whatever way it ends, in a loop, in
``text()`` and through the streaming view. Real sockets (tests/_sockets.py): each server script
sends the tokens, then ends the stream its own way.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
from _sockets import raw_server

from tinker_sync import APIConnectionError, Client, TinkerError

API_KEY = "tml-test-key"


def token(i: int) -> bytes:
    data = {"event_type": "token", "token": f"t{i} ", "token_id": i, "index": i}
    return b"id: %d\ndata: %s\n\n" % (i, json.dumps(data).encode())


DONE = b'data: {"event_type": "done", "finish_reason": "length", "total_tokens": 3}\n\n'


def chunked(*parts: bytes, end: bool = True) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return body + (b"0\r\n\r\n" if end else b"")


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


def _rst(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def answer(kind: str, n: int):
    """A script sending ``n`` tokens, then ending as ``kind`` says."""
    tokens = [token(i) for i in range(n)]

    def script(conn, head, stop):
        if kind == "chunked_clean_end":
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens))
        elif kind == "content_length_end":
            body = b"".join(tokens)
            conn.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif kind == "close_delimited":
            conn.sendall(HEAD + b"Connection: close\r\n\r\n" + b"".join(tokens))
            conn.shutdown(socket.SHUT_WR)
        elif kind == "fin_mid_chunk":
            conn.sendall(
                HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens, end=False) + b"40\r\nda"
            )
            conn.shutdown(socket.SHUT_WR)
        elif kind == "rst_after_tokens":
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens, end=False))
            _rst(conn)
        elif kind == "partial_last_event":  # a done event whose blank line never comes
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens, DONE[:-2]))
        elif kind == "comments_and_pings_only":
            extra = b': keep-alive\n\nevent: ping\ndata: {"event_type": "ping"}\n\n'
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens, extra))
        elif kind == "done_in_a_comment":  # a comment is no event
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens, b": " + DONE))
        elif kind == "done":  # the control: a complete sample
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens, DONE))
        elif kind == "done_then_more":
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*tokens, DONE, token(99)))
        else:
            raise AssertionError(kind)

    return script


ENDINGS = [
    "chunked_clean_end",
    "content_length_end",
    "close_delimited",
    "fin_mid_chunk",
    "rst_after_tokens",
    "partial_last_event",
    "comments_and_pings_only",
    "done_in_a_comment",
]
COUNTS = [0, 1, 5]


def _client(url: str) -> Client:
    return Client(api_key=API_KEY, base_url=url, max_retries=0, handshake=False)


@pytest.mark.parametrize("n", COUNTS)
@pytest.mark.parametrize("kind", ENDINGS)
def test_a_loop_gets_every_token_then_the_error(sse_implementation, kind, n):
    got: list[str] = []
    with raw_server(answer(kind, n)) as url, _client(url) as client:
        with pytest.raises(APIConnectionError) as caught:
            for chunk in client.sampling.stream_sample("hi"):
                if chunk.event_type == "token":
                    got.append(chunk.token or "")
    assert got == [f"t{i} " for i in range(n)]  # every token that came, before the error
    assert isinstance(caught.value, TinkerError)
    if kind in ("chunked_clean_end", "content_length_end", "close_delimited", "comments_and_pings_only"):
        assert "without its done event" in str(caught.value) and f"after {n} token" in str(caught.value)


@pytest.mark.parametrize("n", COUNTS)
@pytest.mark.parametrize("kind", ENDINGS)
def test_text_never_returns_a_truncated_sample(sse_implementation, kind, n):
    with raw_server(answer(kind, n)) as url, _client(url) as client:
        stream = client.sampling.stream_sample("hi")
        with pytest.raises(APIConnectionError):
            stream.text()


@pytest.mark.parametrize("kind", ENDINGS)
def test_the_streaming_view_raises_too(sse_implementation, kind):
    with raw_server(answer(kind, 3)) as url, _client(url) as client:
        with client.with_streaming_response.sampling.stream_sample("hi") as response:
            stream = response.parse()
            with pytest.raises(APIConnectionError):
                list(stream)


@pytest.mark.parametrize("kind", ["done", "done_then_more"])
@pytest.mark.parametrize("n", COUNTS)
def test_a_complete_sample_is_returned_whole(sse_implementation, kind, n):
    with raw_server(answer(kind, n)) as url, _client(url) as client:
        assert client.sampling.stream_sample("hi").text() == "".join(f"t{i} " for i in range(n))


def test_breaking_out_of_the_loop_early_is_no_error(tinker_server, client):
    with client.sampling.stream_sample("hi", max_tokens=8) as stream:
        for chunk in stream:
            assert chunk.event_type == "token"
            break
