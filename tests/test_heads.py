"""Request and response heads (``_transport/_heads.py``): the same bytes and messages as http.client's.

Response heads: every head, plain or odd, parses to the message http.client's own
``parse_headers`` gives (items, defects, payload), consumes the same bytes, and raises
the same errors; plain heads take the fast path. Over a real socket, the client sees the
headers a stock urllib3 sees. Request heads: the server receives every header and the
body exactly once, a small body in the head's segment, a chunked upload still framed.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import threading

import pytest
import urllib3
from _sockets import raw_server, read_head
from hypothesis import given, settings
from hypothesis import strategies as st

from tinker_sync import Client
from tinker_sync._transport import _heads
from tinker_sync._transport._pools import PoolManager

API_KEY = "tml-test-key"
AFTER = b"the body, which no head parser may read"

PLAIN = {
    "one header": [b"Content-Length: 2\r\n"],
    "the mock's kind": [
        b"Server: BaseHTTP/0.6 Python/3.11.7\r\n",
        b"Date: Mon, 07 Dec 2026 23:59:00 GMT\r\n",
        b"Content-Type: application/json\r\n",
        b"Content-Length: 80\r\n",
    ],
    "no headers": [],
    "duplicates": [b"Set-Cookie: a=1\r\n", b"set-cookie: b=2\r\n", b"Set-Cookie: a=3\r\n"],
    "spaces and tabs around values": [b"X-A:   padded  \r\n", b"X-B:\t\ttabbed\t\r\n", b"X-C:none\r\n"],
    "empty values": [b"X-Empty:\r\n", b"X-Blank:   \r\n"],
    "LF line ends": [b"Content-Type: text/plain\n", b"X-A: 1\r\n"],
    "latin-1 and UTF-8 bytes": [b"X-Name: caf\xe9\r\n", b"X-Utf8: \xc3\xa9t\xc3\xa9\r\n"],
    "control bytes inside a value": [b"X-Nul: a\x00b\x0bc\x0cd\x1ce\r\n"],
    "punctuation in names": [b"X-!#$%&'*+-.^_`|~: token chars\r\n", b'X"(),/;<=>?@[\\]{}: others\r\n'],
    "a From: header": [b"From: someone\r\n"],
    "colons in a value": [b"Location: http://h:1/a:b\r\n"],
    "a JSON content type": [b"Content-Type: application/json; charset=utf-8\r\n"],
    "100 headers": [b"X-%d: v\r\n" % i for i in range(99)],
}
ODD = {
    "a folded line": [b"X-Folded: first\r\n", b" second\r\n"],
    "a tab-folded line": [b"X-Folded: first\r\n", b"\tsecond\r\n"],
    "a first line folded": [b" leading: x\r\n", b"X-A: 1\r\n"],
    "a bare CR in a value": [b"X-CR: a\rb\r\n"],
    "CR CR LF": [b"X-CR: a\r\r\n"],
    "a line without a colon": [b"X-A: 1\r\n", b"no colon here\r\n", b"X-B: 2\r\n"],
    "a space before the colon": [b"X-A : 1\r\n"],
    "an empty name": [b": orphan\r\n"],
    "a unix From line": [b"From someone Mon Dec  7\r\n", b"X-A: 1\r\n"],
    "a name with a non-ASCII byte": [b"X-\xe9: v\r\n"],
    "multipart": [b"Content-Type: multipart/mixed; boundary=zz\r\n", b"Content-Length: 10\r\n"],
    "multipart without boundary": [b"content-type: Multipart/form-data\r\n"],
    "a message type": [b"Content-Type: message/rfc822\r\n"],
    "delivery status": [b"CONTENT-TYPE: message/delivery-status\r\n"],
}


def _payload(payload: object) -> object:
    """A payload in a comparable form (the parts of a message type are messages)."""
    return [part.as_string() for part in payload] if isinstance(payload, list) else payload


def _both(head: bytes) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """What the fast parser and http.client's parser make of ``head`` followed by a body."""

    def parse(parser: object) -> tuple[object, ...]:
        fp = io.BytesIO(head + AFTER)
        try:
            message = parser(fp)  # type: ignore[operator]
        except http.client.HTTPException as error:
            return ("raised", type(error), str(error))
        return (
            message.items(),
            [type(defect) for defect in message.defects],
            _payload(message.get_payload()),
            message.is_multipart(),
            message.get_content_type(),
            type(message),
            fp.read(),  # the same bytes left for the body
        )

    return parse(_heads.parse_headers), parse(http.client.parse_headers)


@pytest.mark.parametrize("lines", PLAIN.values(), ids=PLAIN.keys())
def test_a_plain_head_is_parsed_fast_into_the_same_message(lines: list[bytes]) -> None:
    assert _heads.plain_headers([*lines, b"\r\n"], http.client.HTTPMessage) is not None
    ours, theirs = _both(b"".join(lines) + b"\r\n")
    assert ours == theirs


@pytest.mark.parametrize("lines", ODD.values(), ids=ODD.keys())
def test_an_odd_head_goes_to_the_email_parser_and_is_the_same_message(lines: list[bytes]) -> None:
    assert _heads.plain_headers([*lines, b"\r\n"], http.client.HTTPMessage) is None
    ours, theirs = _both(b"".join(lines) + b"\r\n")
    assert ours == theirs


@pytest.mark.parametrize(
    "head",
    [
        b"X-A: 1\r\nX-B: 2\r\n",  # cut before the blank line
        b"",  # nothing at all
        b"X-A: 1\r\n" * 101 + b"\r\n",  # over http.client's 100 lines
        b"X-Long: " + b"v" * 70_000 + b"\r\n\r\n",  # a line over 64 KiB
    ],
    ids=["cut short", "empty", "101 headers", "a 70 KB line"],
)
def test_a_cut_or_oversized_head_ends_as_http_client_ends_it(head: bytes) -> None:
    ours, theirs = _both(head)
    assert ours == theirs


_NAMES = st.binary(min_size=0, max_size=12).map(lambda b: bytes(x for x in b if x not in b"\r\n"))
_LINES = st.lists(
    st.one_of(
        st.tuples(_NAMES, st.binary(max_size=20)).map(
            lambda t: t[0] + b":" + t[1].replace(b"\n", b"") + b"\r\n"
        ),
        st.sampled_from([b"Content-Type: text/plain\r\n", b" folded\r\n", b"X: a\rb\r\n", b"X: 1\n"]),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(lines=_LINES)
def test_any_head_parses_as_http_client_parses_it(lines: list[bytes]) -> None:
    ours, theirs = _both(b"".join(lines) + b"\r\n")
    assert ours == theirs


def _answer(head: bytes) -> object:
    def script(conn: socket.socket, _: bytes, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\nok")

    return script


@pytest.mark.parametrize(
    "head",
    [b"".join(PLAIN["duplicates"]), b"".join(ODD["a folded line"]), b"".join(ODD["a line without a colon"])],
    ids=["plain", "folded", "no colon"],
)
def test_over_a_socket_the_headers_are_the_ones_stock_urllib3_reads(head: bytes) -> None:
    seen = []
    for manager in (PoolManager(None, ssl.create_default_context), urllib3.PoolManager()):
        with raw_server(_answer(head)) as url:
            response = manager.request("GET", url + "/x")
            seen.append((response.status, list(response.headers.items()), response.data))
        manager.clear()
    assert seen[0] == seen[1]


def _recording(received: list[bytes]) -> object:
    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        first = head  # what the first reads brought: the head, and what came in its segment
        data = head
        end = data.index(b"\r\n\r\n") + 4
        length = int(
            next(
                line.split(b":")[1]
                for line in data[:end].split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            or 0
        )
        while len(data) < end + length:
            data += conn.recv(65536)
        received.extend([first, data])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    return script


@pytest.mark.parametrize("size", [1, 300, 16 * 1024])
def test_a_small_body_goes_out_once_with_its_head(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"b" * (size % 256)
    received: list[bytes] = []
    with (
        raw_server(_recording(received)) as url,
        Client(base_url=url, api_key=API_KEY, handshake=False) as client,
    ):
        client.post("/upload", content=body, max_retries=0)
    first, whole = received
    head, _, sent = whole.partition(b"\r\n\r\n")
    assert sent == body  # once, whole
    assert b"content-length: %d\r\n" % size in head.lower() + b"\r\n"
    assert first == whole  # in the head's segment: the server read it all in its first read


def test_a_larger_body_is_sent_whole_after_its_head() -> None:
    body = b"x" * (16 * 1024 + 1)
    received: list[bytes] = []
    with (
        raw_server(_recording(received)) as url,
        Client(base_url=url, api_key=API_KEY, handshake=False) as client,
    ):
        client.post("/upload", content=body, max_retries=0)
    assert received[1].partition(b"\r\n\r\n")[2] == body


def test_a_chunked_upload_of_bytes_stays_framed() -> None:
    served = []

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        data = head
        while not data.endswith(b"0\r\n\r\n"):
            data += conn.recv(65536)
        served.append(data)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    with raw_server(script) as url:
        pool = PoolManager(None, ssl.create_default_context)
        response = pool.request("POST", url + "/c", body=b"hello", headers={"Transfer-Encoding": "chunked"})
        assert response.status == 200
    assert served[0].endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_header_lines_are_reused_only_for_their_own_name_and_value() -> None:
    """More distinct values than the reuse table holds: every request carries its own value;
    a value http.client refuses is refused every time, never kept; credentials are never kept."""
    heads: list[bytes] = []

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        while head:
            heads.append(head)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            head = read_head(conn)

    count = _heads._LINES_MAX + 50
    with raw_server(script) as url:
        pool = PoolManager(None, ssl.create_default_context)
        for i in range(count):
            headers = {
                "X-Same": "same",
                "X-Value": str(i % 700),
                "X-API-Key": "tml-secret",
                "authorization": "Bearer t",
            }
            pool.request("GET", url + "/h", headers=headers)
        for _ in range(2):
            with pytest.raises(ValueError, match="Invalid header value"):
                pool.request("GET", url + "/h", headers={"X-Bad": "a\r\nInjected: 1"})
        pool.clear()
    assert len(heads) == count
    credentials = [key for key in _heads._lines if key[1] in ("tml-secret", "Bearer t")]
    assert credentials == []  # sent on every request, never kept
    for i, head in enumerate(heads):
        assert b"\r\nX-Value: %d\r\n" % (i % 700) in head
        assert b"\r\nX-Same: same\r\n" in head
        assert b"\r\nX-API-Key: tml-secret\r\n" in head
        assert b"Injected" not in head
