"""A fast loopback HTTP/1.1 server for bench/: pre-generated bodies written with large ``sendall`` calls.

Run as ``python bench/server.py [--port N] [--tls CA_FILE]``; it prints ``PORT <n>`` on stdout once
listening and serves until killed. With ``--tls`` it serves HTTPS with a certificate for 127.0.0.1 and
localhost from a fresh ``trustme`` CA, whose certificate it writes to CA_FILE (for the clients to trust). Stdlib only (never imports tinker_sync): it is the clients' common oracle, and it
runs in its own process so that it never competes with a client for the GIL.

Routes (GET only; keep-alive honoured; one thread per connection, backlog 4096):

- ``/sse?size=B&count=N&framing=chunked|length&chunk=BYTES``: N events of ~B bytes of JSON each,
  ``data: {...}\\n\\n``. The body is cut from a pre-generated block of whole events, written in
  ``chunk``-sized pieces (default 256 KiB; with chunked framing, one HTTP chunk per write).
- ``/trickle?count=N&interval=MS&size=B``: chunked, one event per chunk (TCP_NODELAY), sent every
  ``interval`` ms; each event's JSON carries ``"t"``, the server's ``time.time()`` just before its write.
- ``/bytes?size=B&ranges=1&rate=R``: B bytes of incompressible data, ``Content-Length`` framing, 4 MiB
  writes. ``ranges=1`` adds a strong ``ETag`` and ``Accept-Ranges: bytes`` and honours ``Range``
  (``bytes=A-B``, ``bytes=A-``) and ``If-Range`` (without it, no validator: clients download in one
  stream); ``rate=R`` paces each response at R bytes per second (an object store's per-connection cap);
  ``digest=1`` sends the whole body's SHA-256 as ``Content-Digest`` on a 200 (clients verify it).
- ``/hello``: a tiny JSON body.

``Connection: close`` in a request closes the connection after its response (the raw reader of
``run.py``'s server check reads to EOF).

Every event of ``/sse`` is a valid JSON document matching ``bench.clients.Event``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import random
import resource
import socket
import ssl
import sys
import threading
import time
from urllib.parse import parse_qsl, urlsplit

BYTES_BLOCK = 4 << 20  # one random block, sent over and over for /bytes
DEFAULT_CHUNK = 256 << 10
BACKLOG = 4096


def raise_nofile() -> None:
    """Raise the soft open-files limit to the hard limit (1000 streams need > 1024 descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def event_json(size: int, index: int) -> bytes:
    """One event's JSON of about ``size`` bytes.

    Small events (up to 512 B) are Tinker's own ``SampleStreamChunk`` token
    event, its text padded to size: what a sampling stream really carries.
    Larger ones are a token-like record padded half with a list of ints and
    half with text, so JSON decoding does real work at every size. Shape:
    ``{"event_type", "index", "logprob", "token", "token_id"}`` or
    ``{"event_type", "index", "logprob", "token_ids": [int], "text"}``.
    """
    head = b'{"event_type":"token","index":%d,"logprob":-0.25,' % index
    if size <= 512:
        tail = b'"token_id":%d,"token":"' % (1000 + index % 150000)
        return head + tail + b"x" * max(1, size - len(head) - len(tail) - 2) + b'"}'
    budget = max(0, size - len(head) - 30)
    ids = []
    used = 0
    n = 0
    while used < budget // 2:
        item = b"%d" % (1000 + (index * 7919 + n * 104729) % 150000)
        ids.append(item)
        used += len(item) + 1
        n += 1
    text = b"x" * max(1, budget - used)
    return head + b'"token_ids":[' + b",".join(ids) + b'],"text":"' + text + b'"}'


@functools.lru_cache(maxsize=16)
def sse_block(size: int) -> tuple[bytes, list[int]]:
    """Whole events back to back (at least 4 MiB and 4 events) and the end offset of each event."""
    parts = []
    ends = []
    total = 0
    index = 0
    while total < (4 << 20) or index < 4:
        event = b"data: " + event_json(size, index) + b"\n\n"
        parts.append(event)
        total += len(event)
        ends.append(total)
        index += 1
    return b"".join(parts), ends


def sse_pieces(size: int, count: int) -> tuple[int, list[memoryview]]:
    """The body of ``count`` events as views of the pre-generated block, and its length."""
    block, ends = sse_block(size)
    view = memoryview(block)
    full, rest = divmod(count, len(ends))
    pieces = [view] * full
    if rest:
        pieces.append(view[: ends[rest - 1]])
    return len(block) * full + (ends[rest - 1] if rest else 0), pieces


@functools.lru_cache(maxsize=1)
def bytes_block() -> bytes:
    return random.Random(1234).randbytes(BYTES_BLOCK)


def head(status: str, content_type: str, length: int | None, extra: list[str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Cache-Control: no-cache", *(extra or [])]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def send_body(sock: socket.socket, pieces: list[memoryview], chunk: int, chunked: bool) -> None:
    """Write the pieces in writes of ``chunk`` bytes (coalescing small pieces, splitting big ones)."""
    buf = bytearray()
    for piece in pieces:
        pos = 0
        while pos < len(piece):
            if not buf and len(piece) - pos >= chunk:
                out = piece[pos : pos + chunk]
                pos += chunk
            else:
                take = min(chunk - len(buf), len(piece) - pos)
                buf += piece[pos : pos + take]
                pos += take
                if len(buf) < chunk:
                    continue
                out = memoryview(bytes(buf))
                buf.clear()
            if chunked:  # one write per chunk: a 256 KiB copy is cheaper than three syscalls
                sock.sendall(b"".join((b"%x\r\n" % len(out), out, b"\r\n")))
            else:
                sock.sendall(out)
    if buf:
        sock.sendall(b"%x\r\n%s\r\n" % (len(buf), bytes(buf)) if chunked else bytes(buf))
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def route_sse(sock: socket.socket, query: dict[str, str], headers: dict[str, str]) -> None:
    size = int(query.get("size", "200"))
    count = int(query.get("count", "1000"))
    chunked = query.get("framing", "chunked") == "chunked"
    chunk = int(query.get("chunk", DEFAULT_CHUNK))
    length, pieces = sse_pieces(size, count)
    sock.sendall(head("200 OK", "text/event-stream", None if chunked else length))
    send_body(sock, pieces, chunk, chunked)


def route_trickle(sock: socket.socket, query: dict[str, str], headers: dict[str, str]) -> None:
    count = int(query.get("count", "100"))
    interval = float(query.get("interval", "5")) / 1000.0
    pad = b"x" * max(0, int(query.get("size", "100")) - 60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(head("200 OK", "text/event-stream", None))
    start = time.monotonic()
    for i in range(count):
        if i:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        event = b'data: {"index":%d,"t":%r,"pad":"%s"}\n\n' % (i, time.time(), pad)
        sock.sendall(b"%x\r\n%s\r\n" % (len(event), event))
    sock.sendall(b"0\r\n\r\n")


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """``bytes=A-B`` / ``bytes=A-`` as (start, end exclusive) within ``size``; None to serve the whole."""
    unit, _, spec = value.strip().partition("=")
    first, _, last = spec.partition("-")
    if unit.strip().lower() != "bytes" or not first.strip().isdigit():
        return None
    start = int(first)
    end = min(size, int(last) + 1) if last.strip().isdigit() else size
    return (start, end) if start < end else None


@functools.lru_cache(maxsize=4)
def body_digest(size: int) -> str:
    """``sha-256=:...:`` of the whole /bytes body of ``size`` bytes (for Content-Digest)."""
    digest, block, left = hashlib.sha256(), bytes_block(), size
    while left:
        digest.update(block[: min(left, len(block))])
        left -= min(left, len(block))
    return f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"


def route_bytes(sock: socket.socket, query: dict[str, str], headers: dict[str, str]) -> None:
    size = int(query.get("size", str(1 << 20)))
    rate = float(query.get("rate", "0"))
    block = memoryview(bytes_block())
    start, end, status, extra = 0, size, "200 OK", []
    if query.get("digest") == "1" and "range" not in headers:
        extra.append(f"Content-Digest: {body_digest(size)}")
    if query.get("ranges") == "1":  # byte ranges: a strong ETag pins the body, Range/If-Range honoured
        etag = f'"bench-{size}"'
        extra += [f"ETag: {etag}", "Accept-Ranges: bytes"]
        wanted = parse_range(headers.get("range", ""), size) if "range" in headers else None
        if wanted is not None and headers.get("if-range", etag) == etag:
            (start, end), status = wanted, "206 Partial Content"
            extra.append(f"Content-Range: bytes {start}-{end - 1}/{size}")
    sock.sendall(head(status, "application/octet-stream", end - start, extra))
    piece = len(block) if not rate else max(16 << 10, min(len(block), int(rate / 20)))
    began, sent, pos = time.monotonic(), 0, start
    while pos < end:
        offset = pos % len(block)
        n = min(end - pos, len(block) - offset, piece)
        if rate:  # paced: never ahead of ``rate`` bytes per second since the body began
            ahead = sent / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        sock.sendall(block[offset : offset + n])
        pos += n
        sent += n


def route_hello(sock: socket.socket, query: dict[str, str], headers: dict[str, str]) -> None:
    body = b'{"hello":"world"}'
    sock.sendall(head("200 OK", "application/json", len(body)) + body)


ROUTES = {"/sse": route_sse, "/trickle": route_trickle, "/bytes": route_bytes, "/hello": route_hello}


def handle(sock: socket.socket) -> None:
    """Serve requests on one connection until the client closes it."""
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            raw, _, buf = buf.partition(b"\r\n\r\n")
            request_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _version = request_line.split(" ", 2)
            parts = urlsplit(target)
            route = ROUTES.get(parts.path)
            if method not in ("GET", "HEAD") or route is None:
                body = b"not found"
                sock.sendall(head("404 Not Found", "text/plain", len(body)) + body)
                continue
            fields = (line.partition(b":") for line in raw.split(b"\r\n")[1:])
            headers = {k.strip().lower().decode("latin-1"): v.strip().decode("latin-1") for k, _, v in fields}
            route(sock, dict(parse_qsl(parts.query)), headers)
            if b"\r\nconnection: close" in raw.lower():
                return
    except (ConnectionError, BrokenPipeError, OSError):
        pass
    finally:
        sock.close()


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 and localhost from a new trustme CA (written to ca_file)."""
    import trustme  # only for --tls (in the test extra, as for the test suite's TLS servers)

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca.cert_pem.write_to_path(ca_file)
    return context


def handle_tls(conn: socket.socket, context: ssl.SSLContext) -> None:
    """The TLS handshake on the connection's own thread, then ``handle``."""
    try:
        tls = context.wrap_socket(conn, server_side=True)
    except (OSError, ssl.SSLError):
        conn.close()
        return
    handle(tls)


def serve(port: int, ca_file: str | None = None) -> None:
    context = tls_context(ca_file) if ca_file else None
    raise_nofile()
    threading.stack_size(256 << 10)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(BACKLOG)
    bytes_block()
    for size in (200, 20_000, 1_000_000):
        sse_block(size)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            threading.Thread(target=handle_tls, args=(conn, context), daemon=True).start()
        else:
            threading.Thread(target=handle, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench/ loopback server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", metavar="CA_FILE", help="serve HTTPS; write the CA certificate here")
    args = parser.parse_args(argv)
    try:
        serve(args.port, args.tls)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
