"""The mock's own read of a request head (``testing._head``) against the stdlib's, which it replaced
for speed: the same fields for any block, the same limits, and the same answers on the wire. And the
fake model's cheaper draws: decided by the seed alone, the same logprob floats."""

from __future__ import annotations

import email.utils
import http.client
import io
import random
import re
import socket
import time

import pytest

from tinker_sync.testing import MockTinkerServer
from tinker_sync.testing._head import MAX_FIELDS, MAX_LINE, _Parsed, read_fields
from tinker_sync.testing._sampling import draw, token_ids
from tinker_sync.testing._training import token_logprob, token_logprobs

# What the official SDK sends with every request (18 fields), the shape the fast path is for.
SDK_HEAD = (
    b"Host: 127.0.0.1:8000\r\nAccept-Encoding: identity\r\nContent-Type: application/json\r\n"
    b"Accept: application/json\r\nUser-Agent: Tinker/Python 0.38.0\r\nX-API-Key: tml-test-key\r\n"
    b"X-Stainless-Lang: python\r\nX-Stainless-Package-Version: 0.38.0\r\nX-Stainless-OS: Linux\r\n"
    b"X-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.11.7\r\n"
    b"x-stainless-retry-count: 0\r\nx-stainless-read-timeout: 60\r\nX-Tinker-Sampling-Backpressure: 1\r\n"
    b"X-Idempotency-Key: stainless-python-retry-3f1c\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
)


def stdlib(block: bytes) -> object:
    """What ``http.server`` would have made of the block: its fields in order and the bytes left
    to read (the body), or its error."""
    stream = io.BytesIO(block)
    try:
        return http.client.parse_headers(stream).items(), stream.read()
    except http.client.HTTPException as error:  # LineTooLong is one
        return type(error), str(error)


def ours(block: bytes, buffer_size: int) -> object:
    """``read_fields`` on a buffered stream: the block in the buffer whole (one read), or a buffer
    too small for it (line by line)."""
    stream = io.BufferedReader(io.BytesIO(block), buffer_size)  # type: ignore[arg-type]
    try:
        message, fields = read_fields(stream)
    except http.client.HTTPException as error:
        return type(error), str(error)
    assert message.items() == fields
    return fields, stream.read()


BLOCKS = {
    "sdk": SDK_HEAD,
    "sdk-then-body": SDK_HEAD + b"{}GET / HTTP/1.1\r\n\r\n",
    "empty": b"\r\n",
    "eof-at-once": b"",
    "eof-after-fields": b"A: 1\r\nB: 2\r\n",
    "eof-inside-a-line": b"A: 1\r\nB: 2",
    "lf-only": b"A: 1\nB:2\n\n",
    "mixed-ends": b"A: 1\r\nB: 2\n\r\n",
    "no-space": b"A:1\r\n\r\n",
    "blanks-around-value": b"A: \t 1 \t\r\n\r\n",
    "empty-value": b"A:\r\nB: \r\n\r\n",
    "duplicates": b"X-A: 1\r\nx-a: 2\r\nX-A: 3\r\n\r\n",
    "obs-fold": b"A: 1\r\n  folded\r\n\tagain\r\nB: 2\r\n\r\n",
    "fold-first": b" A: 1\r\nB: 2\r\n\r\n",
    "no-colon": b"A: 1\r\nnot a field\r\nB: 2\r\n\r\n",
    "space-before-colon": b"A : 1\r\nB: 2\r\n\r\n",
    "empty-name": b": 1\r\nB: 2\r\n\r\n",
    "unix-from": b"From someone\r\nA: 1\r\n\r\n",
    "lone-cr": b"A: 1\rB: 2\r\nC: 3\r\n\r\n",
    "latin-1": b"A: caf\xe9\r\nB: 2\r\n\r\n",
    "nel": b"A: 1\x852\r\nB: 2\r\n\r\n",
    "vt-ff": b"A: 1\x0b2\x0c3\r\nB: 2\r\n\r\n",
    "nul-del": b"A: 1\x002\x7f\r\n\r\n",
    "colon-in-value": b"Host: 127.0.0.1:80\r\nA: b: c\r\n\r\n",
    "multipart-type": b"Content-Type: multipart/form-data; boundary=x\r\nA: 1\r\n\r\n",
    "longest-line": b"A: " + b"v" * (MAX_LINE - 5) + b"\r\n\r\n",
    "too-long-line": b"A: " + b"v" * (MAX_LINE - 4) + b"\r\n\r\n",
    "most-fields": b"".join(b"H%d: v\r\n" % i for i in range(MAX_FIELDS - 1)) + b"\r\n",
    "too-many-fields": b"".join(b"H%d: v\r\n" % i for i in range(MAX_FIELDS)) + b"\r\n",
}


@pytest.mark.parametrize("block", BLOCKS.values(), ids=BLOCKS.keys())
@pytest.mark.parametrize("buffer_size", [8192, 16])
def test_fields_are_the_stdlibs(block: bytes, buffer_size: int) -> None:
    assert ours(block, buffer_size) == stdlib(block)


def test_fields_are_the_stdlibs_for_random_blocks() -> None:
    """Blocks built from the pieces parsers trip on: every one parses as the stdlib parses it."""
    pieces = [b"X-A", b"x-a", b"Host", b"From ", b" ", b"\t", b":", b": ", b"a", b"b c", b"\r", b"\n",
              b"\r\n", b"\xe9", b"\x85", b"\x0b", b"\x00", b"\x7f", b"=", b";", b"keep-alive"]  # fmt: skip
    rng = random.Random(21)
    fast = 0
    for _ in range(3000):
        lines = []
        for _ in range(rng.randrange(0, 6)):
            if rng.random() < 0.7:  # a field, its value from the pieces
                name = rng.choice([b"X-A", b"Host", b"Connection", b"a-b"])
                value = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 4)))
                lines.append(
                    name + b":" + rng.choice([b"", b" ", b"\t"]) + value + rng.choice([b"\r\n", b"\n"])
                )
            else:  # anything
                junk = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 6)))
                lines.append(junk + rng.choice([b"\r\n", b"\n", b""]))
        block = b"".join(lines) + rng.choice([b"\r\n", b"\n", b"", b"\r\nbody"])
        assert ours(block, rng.choice([8, 64, 8192])) == stdlib(block), block
        fast += isinstance(read_fields(io.BufferedReader(io.BytesIO(block)))[0], _Parsed)  # type: ignore[arg-type]
    assert 500 < fast < 2500  # both ways were taken many times


@pytest.mark.parametrize(
    "block, fast",
    [(SDK_HEAD, True), (BLOCKS["duplicates"], True), (BLOCKS["obs-fold"], False), (BLOCKS["latin-1"], False)],
    ids=["sdk", "duplicates", "obs-fold", "latin-1"],
)
def test_the_usual_block_skips_the_email_parser(block: bytes, fast: bool) -> None:
    message, _ = read_fields(io.BufferedReader(io.BytesIO(block)))  # type: ignore[arg-type]
    assert isinstance(message, _Parsed) is fast
    assert message.get("x-a") == http.client.parse_headers(io.BytesIO(block)).get("x-a")


# -- on the wire ----------------------------------------------------------------------------------


def exchange(server: MockTinkerServer, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection, then read until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        parts = []
        while chunk := sock.recv(65536):
            parts.append(chunk)
        return b"".join(parts)


def statuses(answer: bytes) -> list[str]:
    """The status lines of the answers on one connection (a body ends without a line end)."""
    return [m.decode() for m in re.findall(rb"HTTP/1\.1 \d{3} [^\r\n]*(?=\r\n)", answer)]


ECHO = b"GET /test/echo HTTP/1.1\r\nHost: x\r\n"
CLOSE = b"GET /test/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

# Each request leaves nothing unread when the server closes (unread bytes would make it reset).
WIRE = {
    "close": (ECHO + b"Connection: close\r\n\r\n", ["HTTP/1.1 200 OK"]),
    "keep-alive-1.1": (ECHO + b"\r\n" + CLOSE, ["HTTP/1.1 200 OK"] * 2),
    "close-1.0": (b"GET /test/echo HTTP/1.0\r\nHost: x\r\n\r\n", ["HTTP/1.1 200 OK"]),
    "keep-alive-1.0": (
        b"GET /test/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + CLOSE,
        ["HTTP/1.1 200 OK"] * 2,
    ),
    "first-connection-wins": (
        ECHO + b"Connection: Close\r\nConnection: keep-alive\r\n\r\n",
        ["HTTP/1.1 200 OK"],
    ),
    "expect-100": (
        b"POST /test/echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}",
        ["HTTP/1.1 100 Continue", "HTTP/1.1 200 OK"],
    ),
    "no-100-for-1.0": (
        b"POST /test/echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        ["HTTP/1.1 200 OK"],
    ),
    "431-fields": (ECHO + BLOCKS["too-many-fields"], ["HTTP/1.1 431 Too many headers"]),
    "431-line": (ECHO + BLOCKS["too-long-line"][:-2], ["HTTP/1.1 431 Line too long"]),
    "400-syntax": (b"GET /a b HTTP/1.1\r\n", ["HTTP/1.1 400 Bad request syntax ('GET /a b HTTP/1.1')"]),
    "double-slash": (b"GET //test/echo HTTP/1.1\r\nConnection: close\r\n\r\n", ["HTTP/1.1 200 OK"]),
}


@pytest.mark.parametrize("data, want", WIRE.values(), ids=WIRE.keys())
def test_the_wire_answers_as_http_server_does(data: bytes, want: list[str]) -> None:
    with MockTinkerServer() as server:
        answer = exchange(server, data)
    assert statuses(answer) == want
    finals = len([s for s in want if " 100 " not in s])
    assert answer.count(b"\r\nServer: MockTinker/1.0 Python/") == finals


RECORDED = {
    **{name: (BLOCKS[name], b"") for name in ["duplicates", "obs-fold", "latin-1", "lf-only", "no-colon"]},
    "sdk": (SDK_HEAD, b"{}"),
    "first-length-frames": (b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n", b"{}"),
}


@pytest.mark.parametrize("block, body", RECORDED.values(), ids=RECORDED.keys())
def test_the_recorded_fields_are_the_stdlibs(block: bytes, body: bytes) -> None:
    """A request's recorded headers: lower-cased names, the last value of each, as the stdlib parsed
    them; the body's framing reads the first Content-Length, as http.server's own reads do."""
    block = b"Connection: close\r\n" + block.replace(b"Connection: keep-alive\r\n", b"")
    with MockTinkerServer() as server:
        answer = exchange(server, b"POST /test/echo HTTP/1.1\r\n" + block + body)
        assert statuses(answer) == ["HTTP/1.1 200 OK"]
        (recorded,) = server.requests
    fields = http.client.parse_headers(io.BytesIO(block)).items()
    assert recorded.headers == {name.lower(): value for name, value in fields}
    assert recorded.body == body


def test_every_answer_carries_the_current_date() -> None:
    with MockTinkerServer() as server:
        before = int(time.time())
        answer = exchange(server, ECHO + b"Connection: close\r\n\r\n")
        after = time.time()
    (date,) = [line for line in answer.split(b"\r\n") if line.startswith(b"Date: ")]
    assert date.endswith(b" GMT")
    assert before <= email.utils.parsedate_to_datetime(date[6:].decode()).timestamp() <= after


# -- the fake model's draws -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, -5, 2**40, 7 * 1_000_003 + 1])
def test_token_draws_are_decided_by_the_seed_alone(seed: int) -> None:
    tokens = token_ids(draw(seed, 64))
    assert tokens == token_ids(draw(seed, 64)) and len(tokens) == 64
    assert all(100 <= t < 32_000 for t in tokens) and len(set(tokens)) > 48
    assert tokens[:10] == token_ids(draw(seed, 10))  # a longer answer starts as the shorter one
    assert tokens != token_ids(draw(seed + 1, 64))
    assert draw(seed, 0) == () and draw(seed, -3) == ()


@pytest.mark.parametrize("steps", [0, 1, 2, 7, 30])
def test_token_logprobs_are_token_logprobs_floats(steps: int) -> None:
    """The list form (the decay computed once) gives the very floats of the one-token form."""
    tokens = [*range(-3, 200), *token_ids(draw(steps, 500))]
    assert token_logprobs(tokens, steps) == [token_logprob(t, steps) for t in tokens]
