"""One file over several connections, against the loopback mock server: the plan, integrity, resume
within a call and across runs (kill -9 included), restarts, re-signed URLs, rate caps, memory."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import socketserver
import threading
import time
from pathlib import Path

import pytest
from _downloads import expected_sha, file_sha, kill_9_mid_download, leftovers

import tinker_sync
import tinker_sync._ramp as ramp
import tinker_sync._range_plan as range_plan
from tinker_sync._files import PartFile
from tinker_sync.testing import Fault

API_KEY = "tml-test-key"  # as in conftest.py
KiB, MiB = 1 << 10, 1 << 20


def bytes_requests(server):
    return [r for r in server.requests if r.path == "/test/bytes"]


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch, waits):
    """Pieces and steals of 64 KiB, so that files of a few MiB spread over every connection; the
    ``client`` fixture records its waits instead of sleeping."""
    monkeypatch.setattr(range_plan, "MIN_PIECE", 64 * KiB)
    monkeypatch.setattr(range_plan, "MIN_STEAL", 64 * KiB)
    monkeypatch.setattr(range_plan, "STEAL_ALIGN", 4 * KiB)
    monkeypatch.setattr(ramp, "PROBE_TIME", 0.0)  # every connection at once (the probe: its own tests)


def spans(server, path: str = "/test/bytes") -> list[tuple[int, int]]:
    """The ``[start, end)`` every ranged request asked for (a request without Range: the whole)."""
    found = []
    for request in server.requests:
        if not request.path.startswith(path):
            continue
        value = request.headers.get("range")
        if value is None:
            found.append((0, 1 << 62))
            continue
        first, _, last = value.removeprefix("bytes=").partition("-")
        found.append((int(first), int(last) + 1 if last else 1 << 62))
    return found


# -- the plan, alone ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "pool", "expected"),
    [
        (0, 32, 1),
        (31 * MiB, 32, 1),
        (32 * MiB, 32, 2),
        (64 * MiB, 32, 4),
        (10 << 30, 32, 8),
        (10 << 30, 3, 3),
    ],
)
def test_auto_connections(remaining, pool, expected):
    assert range_plan.auto_connections(remaining, pool) == expected


def test_a_plan_hands_out_every_missing_byte_once_and_splits_the_largest_range_at_the_end():
    plan = range_plan.RangePlan(1000 * KiB, [(0, 100 * KiB), (500 * KiB, 600 * KiB)], piece=200 * KiB)
    claimed = [plan.claim() for _ in range(4)]
    assert [(s.start, s.end) for s in claimed] == [
        (100 * KiB, 300 * KiB),
        (300 * KiB, 500 * KiB),
        (600 * KiB, 800 * KiB),
        (800 * KiB, 1000 * KiB),
    ]
    offset, count = plan.take(claimed[3], 10 * KiB)
    assert (offset, count) == (800 * KiB, 10 * KiB)
    plan.written(offset, count)
    thief = plan.claim()  # nothing left: the back half of (the first of) the largest ranges
    assert thief is not None and (thief.start, thief.end) == (200 * KiB, 300 * KiB)
    assert claimed[0].end == 200 * KiB  # its fetcher stops there
    assert plan.take(claimed[0], 150 * KiB) == (100 * KiB, 100 * KiB)  # never past the split
    plan.release(claimed[1])  # fetched nothing: handed out again, first
    again = plan.claim()
    assert again is not None and (again.start, again.end) == (300 * KiB, 500 * KiB)
    assert plan.done_bytes == 210 * KiB and plan.prefix == 100 * KiB


@pytest.mark.parametrize("connections", [0, -1, 2.0, "4", "many", None])
def test_connections_must_be_a_positive_int_or_auto(client, tmp_path, connections):
    with pytest.raises(ValueError, match="connections must be a positive integer or 'auto'"):
        client.download("/test/bytes?size=10", tmp_path / "f", connections=connections)
    assert list(tmp_path.iterdir()) == []


# -- whole downloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checksum", "connections"),
    [("", 2), ("md5", 4), ("sha256", 3), ("crc32c", 4), ("md5,crc32c", 2), ("etag-md5", 8)],
)
def test_a_download_over_n_connections_is_the_same_file(
    client, tinker_server, tmp_path, checksum, connections
):
    size = 3 * MiB + 5
    dest = tmp_path / "out.bin"
    query = f"size={size}&seed=7" + (f"&checksum={checksum}" if checksum else "")
    client.download(f"/test/bytes?{query}", dest, connections=connections)
    assert file_sha(dest) == expected_sha(7, size)
    assert leftovers(dest) == []
    first, *rest = bytes_requests(tinker_server)
    assert "range" not in first.headers  # the first answer shows the server takes ranges
    assert rest and all(r.headers["range"].startswith("bytes=") and r.headers["if-range"] for r in rest)
    assert all(r.headers["if-range"] == rest[0].headers["if-range"] for r in rest)


@pytest.mark.parametrize("checksum", ["md5", "sha256", "crc32c"])
def test_a_wrong_checksum_over_n_connections_leaves_nothing(client, tmp_path, checksum):
    dest = tmp_path / "out.bin"
    with pytest.raises(tinker_sync.DownloadIntegrityError, match="mismatch"):
        client.download(
            f"/test/bytes?size={2 * MiB}&seed=2&checksum={checksum}&bad_checksum=1", dest, connections=4
        )
    assert not dest.exists() and leftovers(dest) == []


@pytest.mark.parametrize(
    ("query", "connections", "why"),
    [
        (f"size={4 * MiB}", "auto", "small for auto"),
        (f"size={4 * MiB}&chunked=1", 4, "no length"),
        (f"size={100 * KiB}", 4, "under two pieces"),
    ],
)
def test_one_connection_when_ranges_would_not_help(client, tinker_server, tmp_path, query, connections, why):
    client.download(f"/test/bytes?{query}&seed=1", tmp_path / "f", connections=connections)
    assert [r.headers.get("range") for r in bytes_requests(tinker_server)] == [None], why


def test_auto_spreads_a_large_body_and_stream_to_file_does_too(client, tinker_server, tmp_path, monkeypatch):
    monkeypatch.setattr(range_plan, "AUTO_STEP", 512 * KiB)  # "large" at test sizes: 4 MiB -> 8 connections
    size = 4 * MiB
    with client.stream("GET", f"/test/bytes?size={size}&seed=3&checksum=sha256") as response:
        assert response.connections_for("auto") == 8
        assert response.stream_to_file(tmp_path / "f") == size
    assert file_sha(tmp_path / "f") == expected_sha(3, size)
    assert len(bytes_requests(tinker_server)) > 8


def test_rate_capped_connections_run_at_once(client, tinker_server, tmp_path):
    """With each connection capped (as object stores do), N connections are N responses at once."""
    tinker_server.rate_limit = 2 * MiB  # per connection
    size = 4 * MiB
    client.download(f"/test/bytes?size={size}&seed=4", tmp_path / "f", connections=4)
    assert file_sha(tmp_path / "f") == expected_sha(4, size)
    assert tinker_server.peak_in_flight >= 4  # (a connection the client closed may linger a moment)
    tinker_server.clear()
    client.download(f"/test/bytes?size={size // 8}&seed=4", tmp_path / "g", connections=1)
    assert tinker_server.peak_in_flight == 1


HELD_FOR_A_RANGE = ("wrong-content-range", "unstable-etag")


class _Quirky(http.server.BaseHTTPRequestHandler):
    """Serves ``server.body`` with Range support, but for the quirks in ``server.quirks``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are separate writes: no delayed-ACK stalls
    server: _QuirkyServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        quirks, body = self.server.quirks, self.server.body
        asked = self.headers.get("Range")
        self.server.ranges.append(asked)
        if asked:
            self.server.ranged.set()
        # The first answer of a quirk judged by its ranged requests holds half its body until one came:
        # sent whole at once, it could end before the client's fetchers asked (a loaded machine).
        hold = len(self.server.ranges) == 1 and quirks in HELD_FOR_A_RANGE
        status, start, end = 200, 0, len(body)
        pinned = self.headers.get("If-Range") in (None, '"v1"')
        if asked and "range200" not in quirks and pinned:
            first, _, last = asked.removeprefix("bytes=").partition("-")
            status, start, end = 206, int(first), min(len(body), int(last) + 1 if last else len(body))
        sent = gzip.compress(body, mtime=0) if "gzip" in quirks else body[start:end]
        if "gzip" in quirks:
            status = 200
        self.send_response(status)
        etag = f'"v{len(self.server.ranges)}"' if "unstable-etag" in quirks else '"v1"'
        self.send_header("ETag", f"W/{etag}" if "weak" in quirks else etag)
        if "no-ranges" not in quirks:
            self.send_header("Accept-Ranges", "bytes")
        if "gzip" in quirks:
            self.send_header("Content-Encoding", "gzip")
        if status == 206:
            shift = 1 if "wrong-content-range" in quirks else 0
            self.send_header("Content-Range", f"bytes {start + shift}-{end - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(sent)))
        self.end_headers()
        try:
            if hold:
                self.wfile.write(sent[: len(sent) // 2])
                self.wfile.flush()
                self.server.ranged.wait(60)
                sent = sent[len(sent) // 2 :]
            self.wfile.write(sent)
        except OSError:
            pass  # the client left (it dropped a range it could not use)


class _QuirkyServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, quirks: str, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Quirky)
        self.quirks, self.body, self.ranges = quirks, body, []
        self.ranged = threading.Event()  # a request with a Range header came

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.mark.parametrize("via", ["download", "stream_to_file"])
@pytest.mark.parametrize(
    ("quirks", "requests"),
    [
        ("weak", 1),  # a weak ETag pins no bytes: one connection
        ("no-ranges", 1),
        ("gzip", 1),  # encoded on the way: stored as served, over one connection
        ("range200", 1),  # takes ranges, says it, then answers them whole: that 200 read through
        ("wrong-content-range", None),
        ("unstable-etag", 3),  # a new ETag on every answer: restarts once, then one connection
    ],
)
def test_a_server_whose_ranges_cannot_be_used_gets_one_connection(tmp_path, quirks, requests, via, waits):
    body = os.urandom(3 * MiB + 7)
    server = _QuirkyServer(quirks, body)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    url, dest = f"http://127.0.0.1:{server.server_address[1]}/blob", tmp_path / "blob"
    try:
        with tinker_sync.Client(api_key=API_KEY, base_url=url, max_retries=3, sleep=waits.append) as client:
            if via == "download":
                client.download(url, dest, connections=4)
            else:
                with client.stream("GET", url) as response:
                    response.stream_to_file(dest, connections=4)
    finally:
        server.shutdown()
        server.server_close()
    assert dest.read_bytes() == (gzip.compress(body, mtime=0) if quirks == "gzip" else body)
    assert leftovers(dest) == []
    if quirks == "range200":  # no restart: the 200 to a range is used, the bytes held are skipped
        assert server.ranges[0] is None and server.ranges.count(None) == 1
    elif requests == 1:
        assert server.ranges == [None]
    else:  # the ranges failed; the restarts are whole GETs, the last one over one connection
        assert server.ranges[0] is None and server.ranges.count(None) == (requests or 2)
        last = len(server.ranges) - 1 - server.ranges[::-1].index(None)
        # Ranges the server took after the last whole GET are ones already on their way when the
        # client gave up on ranges (the server's threads record in the order they run, not in the
        # order the client sent): at most one per other connection.
        assert any(server.ranges[1:last]) and len(server.ranges[last + 1 :]) <= 3


# -- resume, restart ------------------------------------------------------------------------------


def test_each_range_resumes_in_the_call_within_its_range(client, tinker_server, tmp_path, waits):
    size = 4 * MiB
    tinker_server.script(
        "/test/bytes", Fault(), *(Fault(reset_after=100 * KiB + i) for i in range(6))
    )  # the first answer whole, then six ranges cut
    client.download(f"/test/bytes?size={size}&seed=5", tmp_path / "f", connections=4)
    assert file_sha(tmp_path / "f") == expected_sha(5, size)
    resumed = [r.headers["range"] for r in bytes_requests(tinker_server)[7:]]
    closed = [v for v in resumed if not v.endswith("-")]
    assert len(closed) == len(resumed)  # a cut range resumes up to its own end, never past it
    assert sum(waits) == 0.0  # every resume followed progress


def test_a_changed_etag_mid_download_restarts_every_range_from_zero(client, tinker_server, tmp_path):
    size = 3 * MiB
    tinker_server.rate_limit = 16 * MiB
    tinker_server.script("/test/bytes", Fault(), Fault(), Fault(change_etag=True))
    calls: list[int] = []
    dest = tmp_path / "f"
    client.download(
        f"/test/bytes?size={size}&seed=6", dest, connections=3, progress=lambda d, t: calls.append(d)
    )
    assert file_sha(dest) == expected_sha(6, size)
    wholes = [i for i, r in enumerate(bytes_requests(tinker_server)) if "range" not in r.headers]
    assert len(wholes) == 2 and wholes[0] == 0  # a fresh GET after the change
    later = bytes_requests(tinker_server)[wholes[1] + 1 :]
    etags = {r.headers["if-range"] for r in later}
    assert len(etags) == 1 and etags != {bytes_requests(tinker_server)[1].headers["if-range"]}
    assert 0 in calls[1:]  # progress went back to zero
    assert leftovers(dest) == []


class _Interrupted(Exception):
    pass


def _interrupt(done: int, total: int | None) -> None:
    if done >= 100 * KiB:  # the caller's thread stops (as on Ctrl-C: an exception in its callback)
        raise _Interrupted


@pytest.mark.parametrize(
    ("trigger", "progress", "raises"),
    [
        (Fault(status=404), None, tinker_sync.NotFoundError),  # another range fails for good
        (Fault(), _interrupt, _Interrupted),  # the caller is interrupted
        (Fault(change_etag=True), None, None),  # another range shows a new version: restart at once
    ],
)
def test_a_stalled_range_never_holds_the_caller_once_the_transfer_stops(
    client, tinker_server, tmp_path, trigger, progress, raises
):
    """A range whose server went silent must not keep the caller waiting for its read timeout once
    the transfer stops (an error, an interrupt, a restart): its read is broken off."""
    size, dest = 4 * MiB, tmp_path / "f"
    tinker_server.rate_limit = 4 * MiB
    tinker_server.script("/test/bytes", Fault(), Fault(stall_after=1000, stall=30), trigger)
    started = time.monotonic()
    if raises is None:
        client.download(f"/test/bytes?size={size}&seed=16", dest, connections=2, progress=progress)
        assert file_sha(dest) == expected_sha(16, size)
    else:
        with pytest.raises(raises):
            client.download(f"/test/bytes?size={size}&seed=16", dest, connections=2, progress=progress)
    assert time.monotonic() - started < 15  # not the 30 s stall (nor the 60 s read timeout)


def test_all_connections_failing_spend_one_budget_and_keep_what_they_wrote(client, tinker_server, tmp_path):
    size = 2 * MiB
    dest = tmp_path / "f"
    tinker_server.script("/test/bytes", Fault(reset_after=300 * KiB), *(Fault(status=503) for _ in range(7)))
    with pytest.raises(tinker_sync.InternalServerError):
        client.with_options(max_retries=3).download(f"/test/bytes?size={size}&seed=8", dest, connections=4)
    # The first answer, at most one send per connection, then 3 retries in all: one budget.
    sent = bytes_requests(tinker_server)
    assert 1 + 3 + 1 <= len(sent) <= 1 + 4 + 3
    assert max(int(r.headers["x-stainless-retry-count"]) for r in sent) == 3
    state = PartFile(dest).load(f"{client.base_url}/test/bytes?size={size}&seed=8")
    assert state is not None and state.ranges and state.done > 0
    assert not dest.exists()
    tinker_server.clear()
    client.download(f"/test/bytes?size={size}&seed=8", dest, connections=4)  # the re-run: only the rest
    assert file_sha(dest) == expected_sha(8, size)
    assert all(a >= b or c <= a for (a, _), (b, c) in _pairs(spans(tinker_server), state.ranges))


def _pairs(requested, done):
    return [(r, d) for r in requested for d in done if r[0] < d[1] and d[0] < r[1]]


def test_a_rerun_fetches_only_what_its_sidecar_lacks(client, tinker_server, tmp_path):
    size, dest, url = 2 * MiB, tmp_path / "f", f"/test/bytes?size={2 * MiB}&seed=9"
    done = [(0, 300 * KiB), (MiB, MiB + 200 * KiB)]
    _planted(client, tinker_server, dest, url, done, size=size)
    client.download(url, dest, connections=3)
    assert file_sha(dest) == expected_sha(9, size)
    requested = spans(tinker_server)
    assert requested[0][0] == 300 * KiB  # the first missing piece, then the others
    assert not _pairs(requested, done)


def _planted(client, server, dest, url, ranges, *, size):
    """A ``.part`` and sidecar as an earlier run leaves them: ``ranges`` written (None: front to back)."""
    with tinker_sync.Client(api_key=API_KEY, base_url=server.url) as other:
        with other.stream("GET", url) as response:
            etag, headers = response.headers["etag"], dict(response.headers)
            body = response.read()
    part = PartFile(dest)
    with open(part.part, "wb") as f:
        if ranges is None:
            f.write(body[: size // 3])
        else:
            f.truncate(size)
            for start, end in ranges:
                f.seek(start)
                f.write(body[start:end])
    part.save(f"{client.base_url}{url}", etag, size, headers, ranges)
    server.clear()


@pytest.mark.parametrize(
    "done",
    [
        [(0, MiB), (MiB + 10 * KiB, 2 * MiB)],  # one small hole: the first piece fills it
        [(0, MiB), (MiB + 10 * KiB, MiB + 500 * KiB)],  # a small hole, then a large one
        [(0, 100 * KiB), (140 * KiB, 300 * KiB), (310 * KiB, 2 * MiB - 1)],  # small holes, a 1-byte tail
        [(5 * KiB, 2 * MiB)],  # only the first bytes are missing
    ],
)
def test_a_rerun_whose_first_hole_is_smaller_than_a_piece_fetches_only_the_holes(
    client, tinker_server, tmp_path, done
):
    """The first missing piece fills a hole exactly: no empty range is asked for (a server answers
    ``bytes=B-(B-1)`` with the whole body, which would restart the file from zero)."""
    size, dest, url = 2 * MiB, tmp_path / "f", f"/test/bytes?size={2 * MiB}&seed=15&checksum=md5"
    _planted(client, tinker_server, dest, url, done, size=size)
    client.download(url, dest, connections=4)
    assert file_sha(dest) == expected_sha(15, size)
    requested = spans(tinker_server)
    assert all(start < end < 1 << 62 for start, end in requested), requested  # no whole, no empty range
    assert not _pairs(requested, done)
    assert sum(end - start for start, end in requested) == size - sum(end - start for start, end in done)


@pytest.mark.parametrize(
    "tamper",
    [
        {"checksums": {"x-goog-hash": 5}},
        {"checksums": {"content-digest": ["sha-256=:AAAA:"]}},
        {"checksums": "md5"},
        {"ranges": [[0, 4 * MiB]]},  # past the end
        {"ranges": [[-1, KiB]]},
        {"ranges": [[0, 300 * KiB], [200 * KiB, 400 * KiB]]},  # overlapping
        {"ranges": [[0.0, 1024.0]]},
        {"ranges": "all"},
        {"total": "2097152"},
        {"validator": 7},
    ],
)
def test_a_sidecar_that_is_not_one_this_module_wrote_restarts_from_zero(
    client, tinker_server, tmp_path, tamper
):
    """Never a crash on every re-run, never a byte trusted from it: the download starts afresh."""
    size, dest, url = 2 * MiB, tmp_path / "f", f"/test/bytes?size={2 * MiB}&seed=17&checksum=md5"
    _planted(client, tinker_server, dest, url, [(0, 300 * KiB)], size=size)
    sidecar = Path(f"{dest}.part.json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **tamper}))
    client.download(url, dest, connections=4)
    assert file_sha(dest) == expected_sha(17, size)
    assert spans(tinker_server)[0] == (0, 1 << 62) and leftovers(dest) == []  # afresh, from byte 0


def test_a_part_written_front_to_back_is_finished_over_several_connections(client, tinker_server, tmp_path):
    size, dest, url = 3 * MiB, tmp_path / "f", f"/test/bytes?size={3 * MiB}&seed=12&checksum=md5"
    _planted(client, tinker_server, dest, url, None, size=size)
    client.download(url, dest, connections=3)
    assert file_sha(dest) == expected_sha(12, size)
    requested = spans(tinker_server)
    assert requested[0][0] == size // 3 and requested[0][1] < size  # a closed range: the first piece
    assert len(requested) > 3 and not _pairs(requested, [(0, size // 3)])


def test_a_part_with_every_range_written_is_verified_and_renamed_without_a_request(
    client, tinker_server, tmp_path
):
    size, dest, url = MiB, tmp_path / "f", f"/test/bytes?size={MiB}&seed=13&checksum=sha256"
    _planted(client, tinker_server, dest, url, [(0, size)], size=size)
    client.download(url, dest, connections=4)
    assert file_sha(dest) == expected_sha(13, size)
    assert bytes_requests(tinker_server) == [] and leftovers(dest) == []


def test_a_range_past_a_shrunk_resource_restarts_from_zero(client, tinker_server, tmp_path):
    size, dest, url = 2 * MiB, tmp_path / "f", f"/test/bytes?size={2 * MiB}&seed=14"
    _planted(client, tinker_server, dest, url, [(0, 100 * KiB)], size=size)
    tinker_server.script("/test/bytes", Fault(status=416))
    client.download(url, dest, connections=2)
    assert file_sha(dest) == expected_sha(14, size)
    requested = spans(tinker_server)
    assert requested[0][0] == 100 * KiB and requested[1] == (0, 1 << 62)  # then the whole, afresh


@pytest.mark.slow
def test_kill_9_mid_parallel_download_then_the_rerun_fetches_only_the_missing_ranges(tinker_server, tmp_path):
    size = 16 * MiB
    url = f"/test/bytes?size={size}&seed=10"
    dest = tmp_path / "killed.bin"
    # Killed at 6 MiB: connections are added in steps (1, 2, 4) each measured for a while, so by then
    # the download runs on several whatever the machine's load (at 2 MiB it could still be on one).
    done = kill_9_mid_download(tinker_server, url, dest, killed_after=6 * MiB)
    assert not dest.exists() and os.path.getsize(f"{dest}.part") == size  # sized up front
    assert len([r for r in bytes_requests(tinker_server) if "range" in r.headers]) >= 3  # several connections
    tinker_server.clear()
    with tinker_sync.Client(api_key=API_KEY, base_url=tinker_server.url) as client:
        client.download(url, dest, connections=4)
    assert file_sha(dest) == expected_sha(10, size)
    requested = spans(tinker_server)
    assert requested and not _pairs(requested, done)  # never a byte the sidecar listed
    assert leftovers(dest) == []


# -- signed URLs -------------------------------------------------------------------------------------


def test_external_weights_over_n_connections_re_sign_a_refused_url_and_resume(
    client, tinker_server, tmp_path
):
    tinker_server.signed_checksums = ("md5",)
    tinker_server.add_checkpoint("tinker://run-1/external_weights/ext", size=4 * MiB, seed=3, n_files=2)
    tinker_server.rate_limit = 16 * MiB
    tinker_server.script("/signed/", Fault(), Fault(), Fault(), Fault(status=403))
    path = client.checkpoints.download("tinker://run-1/external_weights/ext", tmp_path, connections=4)
    files = sorted(p.name for p in path.rglob("*") if p.is_file())
    assert len(files) == 2
    signed = [r for r in tinker_server.requests if r.path.startswith("/signed/")]
    signatures = {r.query["sig"] for r in signed}
    assert len(signatures) >= 3  # two files, and a third signature after the refusal
    listings = [r for r in tinker_server.requests if r.path.endswith("/external_weights_urls")]
    assert len(listings) == 2
    assert tinker_server.violations == []


def test_an_archive_saved_over_n_connections_is_re_signed_when_its_url_expires(
    client, tinker_server, tmp_path
):
    tinker_server.add_checkpoint("tinker://run-1/weights/w", size=3 * MiB, seed=2)
    tinker_server.rate_limit = 16 * MiB
    tinker_server.script("/signed/", Fault(), Fault(), Fault(status=403))
    with client.with_streaming_response.checkpoints.archive("tinker://run-1/weights/w") as response:
        size = response.stream_to_file(tmp_path / "w.tar", connections=3)
    signed = [r for r in tinker_server.requests if r.path.startswith("/signed/")]
    assert len({r.query["sig"] for r in signed}) == 2  # signed once more after the 403
    assert len([r for r in signed if "range" in r.headers]) >= 3
    import tarfile

    with tarfile.open(tmp_path / "w.tar") as tar:
        assert sum(m.size for m in tar.getmembers()) == 3 * MiB
    assert size == os.path.getsize(tmp_path / "w.tar")
    assert tinker_server.violations == []
