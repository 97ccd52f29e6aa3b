"""The mock Tinker server, checked with urllib3 and http.client (never the client under test)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import urllib3
from _helpers import demo_server_process

from tinker_sync.testing import Fault, MockTinkerServer, RecordedRequest, _data, serve

API_KEY = "tml-test-key"
AUTH = {"X-API-Key": API_KEY}
JSON = {**AUTH, "Content-Type": "application/json"}  # what a request with a JSON body sends


@pytest.fixture
def server():
    with MockTinkerServer(api_key=API_KEY) as s:
        yield s


@pytest.fixture
def pool():
    manager = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=5))
    yield manager
    manager.clear()


def get(pool, server, path, headers=None, method="GET", **kw):
    return pool.request(method, server.url + path, headers=headers or {}, redirect=False, **kw)


def raw_exchange(server, request: bytes, timeout: float = 5) -> bytes:
    """Send exact request bytes on a fresh socket and read until the server closes or resets."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        parts = []
        try:
            while data := sock.recv(65536):
                parts.append(data)
        except ConnectionResetError:
            parts.append(b"<RST>")
        return b"".join(parts)


# -- basics ---------------------------------------------------------------------------------------


def test_healthz_requires_the_api_key(server, pool):
    ok = get(pool, server, "/api/v1/healthz", AUTH)
    assert (ok.status, ok.json()) == (200, {"status": "ok"})
    denied = get(pool, server, "/api/v1/healthz")
    assert denied.status == 401
    assert denied.json()["error"]["type"] == "authentication_error"
    wrong = get(pool, server, "/api/v1/healthz", {"X-API-Key": "tml-other"})
    assert wrong.status == 401


def test_requests_are_recorded_and_cleared(server, pool):
    get(pool, server, "/test/echo?a=1&a=2&b=x", {"X-Custom": "Yes"}, method="POST", body=b"\x00\xffhi")
    (req,) = server.requests
    assert isinstance(req, RecordedRequest)
    assert (req.method, req.path, req.query, req.body) == (
        "POST",
        "/test/echo",
        {"a": "2", "b": "x"},
        b"\x00\xffhi",
    )
    assert req.headers["x-custom"] == "Yes"
    server.clear()
    assert server.requests == [] and server.connections == 0


def test_keep_alive_requests_share_one_connection(server, pool):
    for _ in range(3):
        assert get(pool, server, "/api/v1/healthz", AUTH).status == 200
    assert server.connections == 1
    other = urllib3.PoolManager(retries=False)
    try:
        other.request("GET", server.url + "/test/echo")
    finally:
        other.clear()
    assert server.connections == 2


def test_capabilities_and_serve_helper(pool):
    with serve(api_key="tml-k2") as s:
        r = pool.request("GET", s.url + "/api/v1/get_server_capabilities", headers={"X-API-Key": "tml-k2"})
        assert r.status == 200
        assert all("model_name" in m for m in r.json()["supported_models"])
        assert s.url == f"http://127.0.0.1:{s.port}"


def test_echo_and_status_routes(server, pool):
    r = get(pool, server, "/test/echo?x=1", {"X-Thing": "v"}, method="PUT", body=b"caf\xe9")
    body = r.json()
    assert (body["method"], body["path"], body["query"], body["body"]) == (
        "PUT",
        "/test/echo",
        {"x": "1"},
        "caf\xe9",
    )
    assert body["headers"]["x-thing"] == "v"
    r = get(pool, server, "/test/status/429?retry_after=3&retry_after_ms=1500&should_retry=false")
    assert r.status == 429
    assert r.json() == {"error": {"message": "status 429"}}
    assert (r.headers["retry-after"], r.headers["retry-after-ms"], r.headers["x-should-retry"]) == (
        "3",
        "1500",
        "false",
    )


def test_unknown_route_is_a_json_404(server, pool):
    r = get(pool, server, "/nope")
    assert r.status == 404 and "error" in r.json()


# -- SSE ------------------------------------------------------------------------------------------


def sse_data(body: bytes, eol: bytes = b"\n") -> list[dict]:
    return [json.loads(line[6:]) for line in body.split(eol) if line.startswith(b"data: ")]


@pytest.mark.parametrize("eol,sep", [("lf", b"\n"), ("cr", b"\r"), ("crlf", b"\r\n")])
def test_sse_count_size_and_eol(server, pool, eol, sep):
    r = get(pool, server, f"/test/sse?count=5&size=60&eol={eol}")
    assert r.headers["Content-Type"] == "text/event-stream"
    assert r.data.endswith(sep + sep)
    events = sse_data(r.data, sep)
    assert [e["index"] for e in events] == [0, 1, 2, 3, 4]
    lines = [line for line in r.data.split(sep) if line.startswith(b"data: ")]
    assert all(len(line) - 6 == 60 for line in lines)


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_sse_framings(server, pool, framing):
    r = get(pool, server, f"/test/sse?count=4&framing={framing}&chunk=7")
    assert len(sse_data(r.data)) == 4
    if framing == "chunked":
        assert r.headers["Transfer-Encoding"] == "chunked"
    elif framing == "length":
        assert int(r.headers["Content-Length"]) == len(r.data)
    else:
        assert r.headers["Connection"] == "close" and "Content-Length" not in r.headers


def test_sse_chunk_splits_the_wire_body(server):
    raw = raw_exchange(
        server, b"GET /test/sse?count=1&size=20&chunk=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b'5\r\ndata:\r\n5\r\n {"in')
    assert body.endswith(b"0\r\n\r\n")


def test_sse_ids_retry_ping_event_and_resume(server, pool):
    r = get(pool, server, "/test/sse?count=3&ids=1&retry=250&ping=1&event=tick&size=10")
    text = r.data.decode()
    assert text.count(": ping\n") == 3 and text.count("event: tick\n") == 3
    assert text.count("retry: 250\n") == 1
    assert [line for line in text.split("\n") if line.startswith("id:")] == ["id: 0", "id: 1", "id: 2"]
    resumed = get(pool, server, "/test/sse?count=5&ids=1", {"Last-Event-ID": "2"})
    assert [e["index"] for e in sse_data(resumed.data)] == [3, 4]
    # Without ids=1 the header is ignored.
    plain = get(pool, server, "/test/sse?count=2", {"Last-Event-ID": "0"})
    assert [e["index"] for e in sse_data(plain.data)] == [0, 1]


def test_sse_error_status_and_content_type(server, pool):
    r = get(pool, server, "/test/sse?count=5&error_at=2")
    assert r.data.endswith(b'event: error\ndata: {"message":"boom"}\n\n')
    assert [e.get("index") for e in sse_data(r.data)] == [0, 1, None]
    r = get(
        pool,
        server,
        "/test/sse?count=1&status=500&content_type=text/plain",
        method="DELETE",
        body=b'{"ignored": true}',
    )
    assert r.status == 500 and r.headers["Content-Type"] == "text/plain"


def test_sse_cut_after_aborts_without_the_last_chunk(server):
    raw = raw_exchange(server, b"GET /test/sse?count=10&cut_after=2&size=20 HTTP/1.1\r\nHost: x\r\n\r\n")
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert body.count(b"data: ") == 2
    assert not body.endswith(b"0\r\n\r\n")


def test_sse_hang_holds_the_connection_until_the_client_leaves(server, pool):
    r = pool.request(
        "GET",
        server.url + "/test/sse?count=2&hang=1",
        preload_content=False,
        timeout=urllib3.Timeout(read=0.3),
    )
    try:
        assert r.read(10) == b'data: {"in'
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            r.read()
    finally:
        r.release_conn()
        r.close()


def test_sse_delay_is_interrupted_by_stop(pool):
    s = MockTinkerServer().start()
    r = pool.request("GET", s.url + "/test/sse?count=3&delay=30", preload_content=False)
    started = time.monotonic()
    s.stop()
    with pytest.raises(urllib3.exceptions.HTTPError):
        r.read()
    r.close()
    assert time.monotonic() - started < 5


def test_sse_raw_echoes_the_body(server, pool):
    payload = b"data: a\r\n\r\nid: 7\rdata: b\n\n: c\n"
    for query in ("", "?chunk=1", "?framing=length&chunk=4", "?framing=close&delay=0.01&chunk=10"):
        r = get(pool, server, "/test/sse-raw" + query, method="POST", body=payload)
        assert (r.status, r.data) == (200, payload)
        assert r.headers["Content-Type"] == "text/event-stream"


def test_stream_sample(server, pool):
    body = json.dumps({"prompt": "hi", "max_tokens": 3}).encode()
    r = get(pool, server, "/api/v1/stream_sample", {**JSON, "Accept": "text/event-stream"}, "POST", body=body)
    events = sse_data(r.data)
    assert [e["event_type"] for e in events] == ["token", "token", "token", "done"]
    assert events[1] == {"event_type": "token", "token": "tok1", "token_id": 1, "index": 1, "logprob": -0.5}
    assert events[-1] == {"event_type": "done", "finish_reason": "length", "total_tokens": 3}
    assert b"id: 2\n" in r.data
    assert server.requests[-1].json() == {"prompt": "hi", "max_tokens": 3}
    r = get(
        pool,
        server,
        "/api/v1/stream_sample",
        JSON,
        "POST",
        body=json.dumps({"prompt": "hi", "max_tokens": 5, "error_at": 1}).encode(),
    )
    assert r.data.endswith(b'event: error\ndata: {"event_type":"error","message":"boom"}\n\n')
    assert len(sse_data(r.data)) == 2


# -- bytes ----------------------------------------------------------------------------------------


def test_bytes_body_and_headers(server, pool):
    r = get(pool, server, "/test/bytes?size=2500000&seed=7")
    assert r.status == 200
    assert hashlib.sha256(r.data).hexdigest() == _data.sha256_of(7, 2_500_000)
    assert r.headers["Content-Length"] == "2500000"
    assert r.headers["ETag"] == '"7-2500000-1"'
    assert r.headers["Accept-Ranges"] == "bytes" and "Last-Modified" in r.headers
    head = get(pool, server, "/test/bytes?size=10&seed=7", method="HEAD")
    assert head.status == 200 and head.data == b"" and head.headers["Content-Length"] == "10"
    chunked = get(pool, server, "/test/bytes?size=1000&seed=7&chunked=1")
    assert chunked.headers["Transfer-Encoding"] == "chunked"
    assert chunked.data == b"".join(_data.generate(7, 1000))


@pytest.mark.parametrize(
    "header,start,end",
    [
        ("bytes=10-19", 10, 20),
        ("bytes=990-", 990, 1000),
        ("bytes=990-5000", 990, 1000),
        ("bytes=-5", 995, 1000),
    ],
)
def test_bytes_ranges(server, pool, header, start, end):
    full = b"".join(_data.generate(3, 1000))
    r = get(pool, server, "/test/bytes?size=1000&seed=3", {"Range": header})
    assert r.status == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/1000"
    assert r.data == full[start:end]


def test_bytes_unsatisfiable_range_and_if_range(server, pool):
    r = get(pool, server, "/test/bytes?size=100", {"Range": "bytes=100-"})
    assert r.status == 416 and r.headers["Content-Range"] == "bytes */100"
    etag = get(pool, server, "/test/bytes?size=100", method="HEAD").headers["ETag"]
    same = get(pool, server, "/test/bytes?size=100", {"Range": "bytes=50-", "If-Range": etag})
    assert (same.status, len(same.data)) == (206, 50)
    other = get(pool, server, "/test/bytes?size=100", {"Range": "bytes=50-", "If-Range": '"stale"'})
    assert (other.status, len(other.data)) == (200, 100)


def crc32c_reference(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def test_bytes_checksum_headers(server, pool):
    data = b"".join(_data.generate(5, 3000))
    r = get(pool, server, "/test/bytes?size=3000&seed=5&checksum=md5,crc32c,sha256")
    goog = dict(part.split("=", 1) for part in r.headers["x-goog-hash"].split(","))
    assert base64.b64decode(goog["md5"]) == hashlib.md5(data).digest()
    assert base64.b64decode(goog["crc32c"]) == crc32c_reference(data).to_bytes(4, "big")
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert r.headers["Content-Digest"] == f"sha-256=:{sha}:"
    etag = get(pool, server, "/test/bytes?size=3000&seed=5&checksum=etag-md5").headers["ETag"]
    assert etag == f'"{hashlib.md5(data).hexdigest()}"'
    bad = get(pool, server, "/test/bytes?size=3000&seed=5&checksum=md5&bad_checksum=1")
    assert bad.data == data
    assert base64.b64decode(bad.headers["x-goog-hash"][4:]) != hashlib.md5(data).digest()


def test_crc32c_check_value():
    from tinker_sync.testing._files import crc32c

    assert crc32c(b"123456789") == 0xE3069283


# -- faults ---------------------------------------------------------------------------------------


def test_scripted_faults_are_consumed_in_order(server, pool):
    server.script("/test/bytes", Fault(reset_after=1000), Fault(status=503, retry_after=2))
    server.script("/api/v1/healthz", Fault(status=429))
    raw = raw_exchange(server, b"GET /test/bytes?size=100000 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 100000" in head
    assert body == b"".join(_data.generate(0, 1000))  # a FIN after 1000 body bytes
    r = get(pool, server, "/test/bytes?size=100")
    assert (r.status, r.headers["Retry-After"]) == (503, "2")
    assert "error" in r.json()
    assert get(pool, server, "/api/v1/healthz", AUTH).status == 429
    assert len(get(pool, server, "/test/bytes?size=100").data) == 100
    assert get(pool, server, "/api/v1/healthz", AUTH).status == 200


def test_query_faults(server, pool):
    full = b"".join(_data.generate(0, 5000))
    raw = raw_exchange(server, b"GET /test/bytes?size=5000&wrong_length=6000 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 6000" in head and body == full
    r = get(pool, server, "/test/bytes?size=5000&ignore_range=1", {"Range": "bytes=10-"})
    assert (r.status, r.data) == (200, full)
    r = get(pool, server, "/test/bytes?size=5000&trickle=1000&trickle_delay=0.01&stall_after=2500&stall=0.05")
    assert r.data == full
    r = pool.request("GET", server.url + "/test/bytes?size=5000&reset_after=10&rst=1", preload_content=False)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        r.read()
    r.close()


def test_change_etag(server, pool):
    before = get(pool, server, "/test/bytes?size=10", method="HEAD").headers["ETag"]
    server.script("/test/bytes", Fault(change_etag=True))
    after = get(pool, server, "/test/bytes?size=10", method="HEAD").headers["ETag"]
    assert before != after
    assert get(pool, server, "/test/bytes?size=10", method="HEAD").headers["ETag"] == after


def test_stall_wakes_on_stop(pool):
    s = MockTinkerServer().start()
    s.script("/test/bytes", Fault(stall_after=10, stall=60))
    r = pool.request("GET", s.url + "/test/bytes?size=100", preload_content=False)
    threading.Timer(0.2, s.stop).start()
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        r.read()
    r.close()
    assert time.monotonic() - started < 5


# -- checkpoints ----------------------------------------------------------------------------------


def test_training_runs_and_checkpoint_listing(server, pool):
    server.add_checkpoint("tinker://run-a/weights/w1", size=1000)
    server.add_checkpoint("tinker://run-a/sampler_weights/s1", size=500)
    server.add_checkpoint("tinker://run-b/external_weights/e1", size=2000, public=True)
    runs = get(pool, server, "/api/v1/training_runs?limit=1", AUTH).json()
    assert runs["cursor"] == {"offset": 0, "limit": 1, "total_count": 2}
    assert runs["training_runs"][0]["training_run_id"] == "run-a"
    run = get(pool, server, "/api/v1/training_runs/run-a", AUTH).json()
    assert run["last_checkpoint"]["checkpoint_id"] == "weights/w1"
    cks = get(pool, server, "/api/v1/training_runs/run-a/checkpoints", AUTH).json()["checkpoints"]
    assert {c["checkpoint_id"]: c["checkpoint_type"] for c in cks} == {
        "weights/w1": "training",
        "sampler_weights/s1": "sampler",
    }
    first = cks[0]
    assert (first["tinker_path"], first["size_bytes"], first["public"]) == (
        "tinker://run-a/weights/w1",
        1000,
        False,
    )
    everything = get(pool, server, "/api/v1/checkpoints", AUTH).json()
    assert everything["cursor"]["total_count"] == 3
    assert get(pool, server, "/api/v1/training_runs/nope", AUTH).status == 404


def test_publish_ttl_and_delete(server, pool):
    server.add_checkpoint("tinker://run-a/weights/w1", size=10)
    base = "/api/v1/training_runs/run-a/checkpoints/weights/w1"
    assert get(pool, server, base + "/publish", AUTH, "POST").status == 204
    assert get(pool, server, base + "/publish", AUTH, "POST").status == 409
    assert get(pool, server, base + "/publish", AUTH, "DELETE").status == 204
    assert get(pool, server, base + "/publish", AUTH, "DELETE").status == 409
    assert get(pool, server, base + "/ttl", JSON, "PUT", body=b'{"ttl_seconds": 3600}').status == 204
    listed = get(pool, server, "/api/v1/checkpoints", AUTH).json()["checkpoints"][0]
    assert listed["expires_at"] is not None
    # The checkpoint id may arrive with its "/" percent-encoded.
    encoded = "/api/v1/training_runs/run-a/checkpoints/weights%2Fw1"
    assert get(pool, server, encoded, AUTH, "DELETE").status == 204
    assert get(pool, server, base, AUTH, "DELETE").status == 404


def check_signed(server, url: str) -> None:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == server.url
    query = dict(parse_qsl(parts.query))
    secret = server._registry.secret
    expected = hmac.new(
        secret, f"{parts.path}\n{query['expires']}\n{query['n']}".encode(), hashlib.sha256
    ).hexdigest()
    assert query["sig"] == expected


@pytest.mark.parametrize("compression", [None, "gz"])
def test_archive_redirect_and_download(server, pool, compression):
    from tinker_sync.testing import archives

    server.add_checkpoint("tinker://run-a/weights/w1", size=300_000, seed=9, compression=compression)
    r = get(pool, server, "/api/v1/training_runs/run-a/checkpoints/weights/w1/archive", AUTH)
    assert r.status == 302 and "Expires" in r.headers
    location = r.headers["Location"]
    check_signed(server, location)
    tar = pool.request("GET", location)
    assert tar.status == 200 and int(tar.headers["Content-Length"]) == len(tar.data)
    with tarfile.open(fileobj=io.BytesIO(tar.data), mode="r:*") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    for name, size, seed in archives.checkpoint_files(9, 300_000):
        assert hashlib.sha256(members[name]).hexdigest() == _data.sha256_of(seed, size)
    part = pool.request("GET", location, headers={"Range": "bytes=100-199", "If-Range": tar.headers["ETag"]})
    assert (part.status, part.data) == (206, tar.data[100:200])
    assert server.violations == []


def test_archive_preparation_answers_503_first(server, pool):
    server.add_checkpoint("tinker://run-a/weights/w1", size=1000, prepare_seconds=0.3)
    path = "/api/v1/training_runs/run-a/checkpoints/weights/w1/archive"
    r = get(pool, server, path, AUTH)
    assert (r.status, r.headers["Retry-After"]) == (503, "1")
    time.sleep(0.35)
    assert get(pool, server, path, AUTH).status == 302


def test_signed_url_checks(server, pool):
    server.add_checkpoint("tinker://run-a/weights/w1", size=1000)
    location = get(pool, server, "/api/v1/training_runs/run-a/checkpoints/weights/w1/archive", AUTH).headers[
        "Location"
    ]
    tampered = location[:-1] + ("0" if location[-1] != "0" else "1")
    assert pool.request("GET", tampered).status == 403
    leaked = pool.request("GET", location, headers=AUTH)
    assert leaked.status == 400
    assert len(server.violations) == 1 and "X-API-Key" in server.violations[0]
    server.script("/signed/", Fault(status=503, retry_after=1))
    assert pool.request("GET", location).status == 503
    assert pool.request("GET", location).status == 200
    server.signed_url_ttl = -10
    expired = get(pool, server, "/api/v1/training_runs/run-a/checkpoints/weights/w1/archive", AUTH).headers[
        "Location"
    ]
    r = pool.request("GET", expired)
    assert r.status == 403 and r.json()["error"]["type"] == "expired"


def test_external_weights_urls(server, pool):
    from tinker_sync.testing import archives

    server.signed_checksums = ("md5",)
    server.add_checkpoint("tinker://run-x/external_weights/e1", size=200_000, seed=4, n_files=3)
    r = get(
        pool,
        server,
        "/api/v1/training_runs/run-x/checkpoints/external_weights/e1/external_weights_urls",
        AUTH,
    )
    body = r.json()
    assert body["expires"].endswith("Z")
    files = archives.checkpoint_files(4, 200_000, 3)
    assert sorted(body["urls"]) == sorted(name for name, _, _ in files)
    for name, size, seed in files:
        url = body["urls"][name]
        check_signed(server, url)
        got = pool.request("GET", url)
        assert hashlib.sha256(got.data).hexdigest() == _data.sha256_of(seed, size)
        assert base64.b64decode(got.headers["x-goog-hash"][4:]) == hashlib.md5(got.data).digest()
        tail = pool.request("GET", url, headers={"Range": f"bytes={size - 10}-"})
        assert (tail.status, tail.data) == (206, got.data[-10:])
    assert server.violations == []


def test_hostile_archive(server, pool):
    from tinker_sync.testing import archives

    kind = sorted(archives.HOSTILE_ARCHIVES)[0]
    server.add_hostile_archive("tinker://run-h/weights/bad", kind)
    location = get(pool, server, "/api/v1/training_runs/run-h/checkpoints/weights/bad/archive", AUTH).headers[
        "Location"
    ]
    assert pool.request("GET", location).data == archives.HOSTILE_ARCHIVES[kind]()


def test_a_failing_route_answers_500(server, pool):
    server.add_hostile_archive("tinker://run-h/weights/bad", "no-such-kind")
    r = get(pool, server, "/api/v1/training_runs/run-h/checkpoints/weights/bad/archive", AUTH)
    assert r.status == 500 and r.json()["error"]["type"] == "mock_server_error"


def test_retrieve_future(server, pool):
    server.add_future("req-1", {"type": "try_again", "queue_state": "active"}, {"result": 42})
    path = "/api/v1/retrieve_future"
    results = [
        get(pool, server, path, JSON, "POST", body=b'{"request_id": "req-1"}').json() for _ in range(3)
    ]
    assert results == [{"type": "try_again", "queue_state": "active"}, {"result": 42}, {"result": 42}]
    assert get(pool, server, path, JSON, "POST", body=b'{"request_id": "x"}').status == 404


# -- CLI and packaging ----------------------------------------------------------------------------


def test_cli_serves_until_terminated():
    with demo_server_process("--api-key", "tml-cli") as served:
        line = served.lines[0]
        assert line.startswith("Mock Tinker server at http://127.0.0.1:") and "(api key tml-cli)" in line
        conn = http.client.HTTPConnection(*served.host_port, timeout=5)
        try:
            conn.request("GET", "/api/v1/healthz", headers={"X-API-Key": "tml-cli"})
            assert conn.getresponse().read() == b'{"status":"ok"}'
        finally:
            conn.close()
    assert served.proc.returncode == 0, served.stderr


IMPORT_CHECK = """
import ast, pathlib, sys
for f in pathlib.Path(sys.argv[1]).glob("*.py"):
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level <= 1, (f.name, "imports above tinker_sync.testing")
            names = [node.module or ""] if node.level == 0 else []
        else:
            continue
        for n in names:
            assert not n.startswith("tinker_sync") or n.startswith("tinker_sync.testing"), (f.name, n)
            if f.name != "archives.py" and node.col_offset == 0:
                assert n != "tarfile", (f.name, "tarfile at import time")
"""


def test_the_server_never_imports_the_client():
    """An oracle must not share code with what it checks; tarfile is only imported lazily."""
    folder = os.path.dirname(_data.__file__)
    out = subprocess.run(
        [sys.executable, "-I", "-W", "error", "-c", IMPORT_CHECK, folder], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_pytest_plugin_gives_any_project_the_fixture(tmp_path):
    """The ``pytest11`` entry point: a project with tinker_sync installed gets ``tinker_server``."""
    (tmp_path / "test_elsewhere.py").write_text(
        "import urllib3\n"
        "def test_health(tinker_server):\n"
        "    r = urllib3.request('GET', tinker_server.url + '/api/v1/healthz',\n"
        "                        headers={'X-API-Key': tinker_server.api_key})\n"
        "    assert r.status == 200 and r.json() == {'status': 'ok'}\n"
    )
    # Less hypothesis's plugin: its terminal summary imports all of hypothesis (0.7 of 1.2 CPU-s).
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize(
    "head, sent",
    [
        ("Content-Length: 40", b'{"request_id": "f"'),
        ("Content-Length: 40", b""),
        ("Transfer-Encoding: chunked", b'12\r\n{"request_id": "f"'),
        ("Transfer-Encoding: chunked", b'12\r\n{"request_id": "f"}\r\n'),
    ],
    ids=["length-part", "length-none", "chunked-part", "chunked-no-end"],
)
def test_a_request_cut_inside_its_body_is_never_routed(head: str, sent: bytes) -> None:
    """A client whose own deadline cut its request went away: the part of a body that came is
    not answered, recorded or counted as the client's mistake (a violation)."""
    import socket

    with MockTinkerServer() as server:
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        with socket.create_connection((host, port)) as sock:
            sock.sendall(
                f"POST /api/v1/retrieve_future HTTP/1.1\r\nHost: x\r\nX-API-Key: {server.api_key}\r\n"
                f"Content-Type: application/json\r\n{head}\r\n\r\n".encode()
                + sent
            )
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(65536) == b""  # no answer: the connection is closed
        with urllib3.PoolManager() as http:  # the server still answers the next client
            assert (
                http.request(
                    "GET", f"{server.url}/api/v1/healthz", headers={"X-API-Key": server.api_key}
                ).status
                == 200
            )
        assert [r for r in server.requests if r.path == "/api/v1/retrieve_future"] == []
        assert server.violations == []
