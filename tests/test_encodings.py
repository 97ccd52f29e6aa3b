"""Content encodings, close-delimited bodies and object stores' XML errors, over raw sockets.

JSON calls ask for compressed bodies and decode them; files keep the bytes as served (an object a
store keeps gzip-compressed is saved compressed, verified against the store's checksums of those
bytes); a body that ends with its connection is complete only when a length or a checksum says so.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import socket
import threading
import zlib
from collections.abc import Callable

import brotli
import msgspec
import pytest
from _sockets import raw_server
from backports import zstd

from tinker_sync import (
    APIConnectionError,
    BadRequestError,
    Client,
    DownloadIntegrityError,
    NotFoundError,
    PermissionDeniedError,
)

API_KEY = "tml-test-key"
DOC = [
    {"id": f"run-{i:04d}", "base_model": "Qwen/Qwen3-8B", "lora_rank": 32, "public": False}
    for i in range(3000)
]
JSON = msgspec.json.encode(DOC)
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def answer(status: str, headers: dict[str, str], body: bytes, *, chunked: bool = False, close: bool = False):
    """A script sending one response: Content-Length framing, chunked, or ended by closing (``close``)."""

    def script(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif close:
            lines.append("Connection: close")
        else:
            lines.append(f"Content-Length: {len(body)}")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if chunked:
            for start in range(0, len(body), 7000):
                piece = body[start : start + 7000]
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.sendall(body)
        script.heads.append(head)  # type: ignore[attr-defined]
        if close:
            conn.shutdown(socket.SHUT_WR)

    script.heads = []  # type: ignore[attr-defined]
    return script


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# -- JSON calls ----------------------------------------------------------------------------------


def test_json_calls_ask_for_every_encoding_installed_downloads_and_streams_for_identity(client, tmp_path):
    echoed = client.get("/test/echo")
    accepted = {value.strip() for value in echoed["headers"]["accept-encoding"].split(",")}
    assert {"gzip", "br", "zstd"} <= accepted
    with client.stream("GET", "/test/echo") as response:
        assert response.json()["headers"]["accept-encoding"] == "identity"
    client.download("/test/echo", tmp_path / "echo.json")
    assert (
        msgspec.json.decode((tmp_path / "echo.json").read_bytes())["headers"]["accept-encoding"] == "identity"
    )


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_compressed_json_response_is_decoded(encoding, framing):
    body = ENCODERS[encoding](JSON)
    assert len(body) < len(JSON) / 5  # it travels compressed
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    script = answer("200 OK", headers, body, chunked=framing == "chunked")
    with raw_server(script) as url, Client(api_key=API_KEY, base_url=url, handshake=False) as c:
        assert c.get("/api/v1/training_runs") == DOC
    assert b"accept-encoding: gzip,deflate,br,zstd" in script.heads[0].lower()  # type: ignore[attr-defined]


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_compressed_body_cut_short_raises(encoding):
    body = ENCODERS[encoding](JSON)

    def cut(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
            % (encoding.encode(), len(body))
        )
        conn.sendall(body[: len(body) // 2])

    with raw_server(cut) as url, Client(api_key=API_KEY, base_url=url, max_retries=0, handshake=False) as c:
        with pytest.raises(APIConnectionError) as info:
            c.get("/api/v1/training_runs")
    assert info.value.cause == "broken"


# -- objects a store keeps compressed --------------------------------------------------------------

CONTENT = b"".join(b"weights line %06d\n" % i for i in range(40000))  # ~800 KB, compresses well
STORED = gzip.compress(CONTENT)  # the object as the store keeps it (Content-Encoding: gzip)


@pytest.mark.parametrize(
    "checksum",
    ["etag-md5", "x-goog-hash", "content-length-only"],
)
def test_a_gzip_stored_object_is_saved_as_stored_and_verified(checksum, tmp_path):
    headers = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
    if checksum == "etag-md5":
        headers["ETag"] = f'"{hashlib.md5(STORED).hexdigest()}"'  # S3: the MD5 of the stored bytes
    elif checksum == "x-goog-hash":
        headers["x-goog-hash"] = f"md5={md5_b64(STORED)}"
    script = answer("200 OK", headers, STORED)
    with raw_server(script) as url, Client(api_key=API_KEY, base_url=url) as c:
        path = c.download(f"{url}/bucket/model.bin", tmp_path / "model.bin", credentials=False)
    assert path.read_bytes() == STORED  # byte for byte the stored object: decompress it yourself
    assert gzip.decompress(path.read_bytes()) == CONTENT
    assert b"accept-encoding: identity" in script.heads[0].lower()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "wrong",
    ["etag-of-the-content", "x-goog-hash-of-the-content", "fewer-bytes-than-the-object"],
)
def test_a_gzip_stored_object_whose_checksum_does_not_match_is_refused(wrong, tmp_path):
    headers = {"Content-Encoding": "gzip"}
    if wrong == "etag-of-the-content":
        headers["ETag"] = f'"{hashlib.md5(CONTENT).hexdigest()}"'
    elif wrong == "x-goog-hash-of-the-content":
        headers["x-goog-hash"] = f"md5={md5_b64(CONTENT)}"
    body = STORED
    if wrong == "fewer-bytes-than-the-object":  # a well-framed body, short of the object its ETag names
        body = STORED[:-100]
        headers["ETag"] = f'"{hashlib.md5(STORED).hexdigest()}"'

    with raw_server(answer("200 OK", headers, body)) as url, Client(api_key=API_KEY, base_url=url) as c:
        with pytest.raises(DownloadIntegrityError, match="mismatch"):
            c.download(f"{url}/bucket/model.bin", tmp_path / "model.bin", credentials=False)
    assert list(tmp_path.iterdir()) == []


def test_a_gzip_stored_object_resumes_over_its_stored_bytes(tmp_path, waits):
    etag = f'"{hashlib.md5(STORED).hexdigest()}"'
    cut_at = 100_000

    def first(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nETag: %s\r\nContent-Length: %d\r\n\r\n"
            % (etag.encode(), len(STORED))
        )
        conn.sendall(STORED[:cut_at])

    rest = answer(
        "206 Partial Content",
        {
            "Content-Encoding": "gzip",
            "ETag": etag,
            "Content-Range": f"bytes {cut_at}-{len(STORED) - 1}/{len(STORED)}",
        },
        STORED[cut_at:],
    )
    with raw_server(first, rest) as url, Client(api_key=API_KEY, base_url=url, sleep=waits.append) as c:
        path = c.download(f"{url}/bucket/model.bin", tmp_path / "model.bin", credentials=False)
    assert path.read_bytes() == STORED
    assert f"range: bytes={cut_at}-".encode() in rest.heads[0].lower()  # type: ignore[attr-defined]


def test_a_raw_stream_decodes_but_a_file_keeps_the_stored_bytes(tmp_path):
    headers = {"Content-Encoding": "gzip"}
    with (
        raw_server(answer("200 OK", headers, STORED), answer("200 OK", headers, STORED)) as url,
        Client(api_key=API_KEY, base_url=url) as c,
    ):
        with c.stream("GET", "/obj", credentials=False) as response:
            assert b"".join(response.iter_bytes()) == CONTENT
        with c.stream("GET", "/obj", credentials=False) as response:
            assert response.stream_to_file(tmp_path / "obj") == len(STORED)
    assert (tmp_path / "obj").read_bytes() == STORED


# GCS decompresses a gzip-stored object for a client that does not accept gzip, and keeps sending the
# stored bytes' x-goog-hash: checksums of bytes it did not send.
TRANSCODED = {"X-Goog-Stored-Content-Encoding": "gzip", "x-goog-hash": f"md5={md5_b64(STORED)}"}


def test_a_transcoded_object_is_saved_decoded_and_its_stale_checksum_skipped(tmp_path, caplog):
    script = answer("200 OK", TRANSCODED, CONTENT, chunked=True)
    with caplog.at_level(logging.WARNING, logger="tinker_sync"):
        with raw_server(script) as url, Client(api_key=API_KEY, base_url=url) as c:
            path = c.download(f"{url}/bucket/model.bin", tmp_path / "model.bin", credentials=False)
    assert path.read_bytes() == CONTENT
    warned = [r.getMessage() for r in caplog.records]
    assert any("checksums do not apply" in m and "X-Goog-Stored-Content-Encoding: gzip" in m for m in warned)


@pytest.mark.parametrize("right", [True, False])
def test_a_transcoded_object_is_verified_by_expected_sha256(right, tmp_path):
    sha = hashlib.sha256(CONTENT if right else STORED).hexdigest()
    with (
        raw_server(answer("200 OK", TRANSCODED, CONTENT, chunked=True)) as url,
        Client(api_key=API_KEY, base_url=url) as c,
    ):
        if right:
            assert (
                c.download(f"{url}/m", tmp_path / "m", credentials=False, expected_sha256=sha).read_bytes()
                == CONTENT
            )
        else:
            with pytest.raises(DownloadIntegrityError, match="SHA-256 mismatch"):
                c.download(f"{url}/m", tmp_path / "m", credentials=False, expected_sha256=sha)
            assert list(tmp_path.iterdir()) == []


# -- bodies that end with their connection -------------------------------------------------------

BODY = bytes(range(256)) * 400


@pytest.mark.parametrize(
    "headers, options, saved",
    [
        ({}, {}, False),  # nothing confirms the end: a cut looks the same
        ({"ETag": f'"{hashlib.md5(BODY).hexdigest()}"'}, {}, True),
        ({"x-goog-hash": f"md5={md5_b64(BODY)}"}, {}, True),
        ({}, {"expected_size": len(BODY)}, True),
        ({}, {"expected_sha256": hashlib.sha256(BODY).hexdigest()}, True),
        ({"ETag": '"not-an-md5"'}, {}, False),
    ],
    ids=["nothing", "etag-md5", "x-goog-hash", "expected-size", "expected-sha256", "opaque-etag"],
)
def test_a_close_delimited_download_needs_a_length_or_checksum(headers, options, saved, tmp_path):
    with (
        raw_server(answer("200 OK", headers, BODY, close=True)) as url,
        Client(api_key=API_KEY, base_url=url) as c,
    ):
        if saved:
            assert c.download(f"{url}/f", tmp_path / "f", credentials=False, **options).read_bytes() == BODY
        else:
            with pytest.raises(DownloadIntegrityError, match="ended its body by closing the connection"):
                c.download(f"{url}/f", tmp_path / "f", credentials=False, **options)
            assert not (tmp_path / "f").exists()


def test_a_close_delimited_download_cut_short_fails_its_checksum(tmp_path):
    headers = {"ETag": f'"{hashlib.md5(BODY).hexdigest()}"'}
    cut = answer("200 OK", headers, BODY[:-1000], close=True)
    with raw_server(cut) as url, Client(api_key=API_KEY, base_url=url) as c:
        with pytest.raises(DownloadIntegrityError, match="MD5 mismatch"):
            c.download(f"{url}/f", tmp_path / "f", credentials=False)
    assert not (tmp_path / "f").exists()


def test_an_http_1_0_body_streams_to_its_end(tmp_path):
    def old(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + BODY)
        conn.shutdown(socket.SHUT_WR)

    with raw_server(old, old) as url, Client(api_key=API_KEY, base_url=url) as c:
        with c.stream("GET", "/f") as response:
            assert response.read() == BODY  # a raw stream: the close is its end, as HTTP says
        with c.stream("GET", "/f") as response, pytest.raises(DownloadIntegrityError, match="Cannot confirm"):
            response.stream_to_file(tmp_path / "f")


# -- object stores' XML errors ---------------------------------------------------------------------

S3_EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired'
    b"</Message><X-Amz-Expires>900</X-Amz-Expires><Expires>2026-01-01T00:00:00Z</Expires>"
    b"<ServerTime>2026-01-01T01:00:00Z</ServerTime><RequestId>4442587FB7D0A2F9</RequestId>"
    b"<HostId>abc=</HostId></Error>"
)
GCS_EXPIRED = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code><Message>Invalid argument."
    b"</Message><Details>The provided token has expired. Request signature expired at: "
    b"2026-01-01T00:00:00+00:00</Details></Error>"
)
S3_DENIED = (
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>1</RequestId></Error>"
)
S3_MISSING = b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a&amp;b</Key></Error>"


@pytest.mark.parametrize(
    "status, body, error, message, code",
    [
        (
            "403 Forbidden",
            S3_EXPIRED,
            PermissionDeniedError,
            "signed URL expired: AccessDenied: Request has expired",
            "AccessDenied",
        ),
        (
            "400 Bad Request",
            GCS_EXPIRED,
            BadRequestError,
            "signed URL expired: ExpiredToken: Invalid argument. (The provided token has expired. Request "
            "signature expired at: 2026-01-01T00:00:00+00:00)",
            "ExpiredToken",
        ),
        ("403 Forbidden", S3_DENIED, PermissionDeniedError, "AccessDenied: Access Denied", "AccessDenied"),
        (
            "404 Not Found",
            S3_MISSING,
            NotFoundError,
            "NoSuchKey: The specified key does not exist.",
            "NoSuchKey",
        ),
    ],
    ids=["s3-expired", "gcs-expired", "s3-denied", "s3-missing"],
)
def test_object_store_errors_show_their_message_not_xml(status, body, error, message, code, tmp_path):
    headers = {"Content-Type": "application/xml"}
    with (
        raw_server(answer(status, headers, body)) as url,
        Client(api_key=API_KEY, base_url=url, max_retries=0) as c,
    ):
        with pytest.raises(error) as info:
            c.download(f"{url}/bucket/model.bin?X-Amz-Signature=secret", tmp_path / "m", credentials=False)
    text = str(info.value)
    assert text == f"Error code: {status.split()[0]} - {message}"
    assert "<" not in text and info.value.body["Code"] == code  # type: ignore[attr-defined]
    assert ("expired" in text) is ("expired" in message)


def test_xml_that_is_not_an_error_document_stays_text():
    body = b"<?xml version='1.0'?><html><p>Bad gateway</p></html>"
    with (
        raw_server(answer("404 Not Found", {"Content-Type": "text/xml"}, body)) as url,
        Client(api_key=API_KEY, base_url=url, max_retries=0) as c,
    ):
        with pytest.raises(NotFoundError) as info:
            c.get("/x")
    assert info.value.body == body.decode() and str(info.value).endswith(body.decode())
