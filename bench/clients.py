"""The benchmarked clients, one function per (section, client); run by ``bench/run.py`` in subprocesses.

``python bench/clients.py '<json spec>'`` runs one measurement and prints one JSON line:
``{"count": ..., "seconds": ..., "hwm_kb": ..., ...}``. Each run is a fresh process, so its peak RSS
(``VmHWM`` of /proc/self/status, read just before exit) belongs to that client alone, imports included.

Only the client measured is imported. Timing starts just before the request is sent and stops after
the last event or byte: interpreter start-up and imports are not in the time (see the import section).

Every SSE client decodes each event's JSON with msgspec into the same ``Event`` Struct (the fastest
decoding a peer can get), so the rows compare transports and SSE parsing, not JSON libraries.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

READ = 256 * 1024  # what the limit client asks read1 for (tinker_sync's own READ_SIZE)
MiB = 1 << 20
API_KEY = "tml-bench-key"


class Chunk(msgspec.Struct):
    """A small /sse event: Tinker's SampleStreamChunk token event (see ``bench/server.py: event_json``)."""

    event_type: str
    index: int
    logprob: float
    token: str
    token_id: int


class Event(msgspec.Struct):
    """A medium or large /sse event (see ``bench/server.py: event_json``)."""

    event_type: str
    index: int
    logprob: float
    token_ids: list[int]
    text: str


class Tick(msgspec.Struct):
    """The JSON of every /trickle event: ``t`` is the server's ``time.time()`` at send."""

    index: int
    t: float
    pad: str


TYPES = {"chunk": Chunk, "event": Event, "tick": Tick, "dict": dict}


_START: list[float] = []


_CPU: list[float] = []


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def mark() -> None:
    """Start the clock: called by each client right before it sends its request (its objects built)."""
    if not _START:
        _START.append(time.perf_counter())
        _CPU.append(cpu_seconds())


def started(fallback: float) -> float:
    return _START[0] if _START else fallback


def hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# -- SSE clients ---------------------------------------------------------------
# Each ``sse_*(url, cast, count, on_event)`` consumes ``count`` events from ``url`` and returns how many it
# got. With ``on_event`` None the loop only counts (the throughput loop); else it calls
# ``on_event(decoded)`` per event (the trickle loop). Every client decodes every event.


def _ts_client(url: str) -> Any:
    from tinker_sync import Client

    base = url.split("/", 3)
    return Client(api_key=API_KEY, base_url="/".join(base[:3]), max_retries=0, timeout=120)


def sse_tinker_sync(url: str, cast: Any, count: int, on_event: Callable | None) -> int:
    n = 0
    with _ts_client(url) as client:
        stream = client.stream_get(url, cast_to=cast)
        mark()
        if on_event is None:
            for _ in stream:
                n += 1
        else:
            for item in stream:
                on_event(item)
                n += 1
    return n


def sse_httpx(url: str, cast: Any, count: int, on_event: Callable | None) -> int:
    import httpx
    from httpx_sse import connect_sse

    decode = msgspec.json.Decoder(cast).decode
    n = 0
    with httpx.Client(timeout=120) as client:
        mark()
        with connect_sse(client, "GET", url) as source:
            if on_event is None:
                for sse in source.iter_sse():
                    decode(sse.data)
                    n += 1
            else:
                for sse in source.iter_sse():
                    on_event(decode(sse.data))
                    n += 1
    return n


def sse_sseclient(url: str, cast: Any, count: int, on_event: Callable | None) -> int:
    import requests
    import sseclient

    decode = msgspec.json.Decoder(cast).decode
    n = 0
    with requests.Session() as session:
        mark()
        response = session.get(url, stream=True, headers={"Accept": "text/event-stream"}, timeout=120)
        # sseclient-py's README passes the response itself, which iterates in 128-byte pieces
        # (quadratic on 1 MB events); 64 KiB pieces are its best case.
        client = sseclient.SSEClient(response.iter_content(chunk_size=65536))
        if on_event is None:
            for event in client.events():
                decode(event.data)
                n += 1
        else:
            for event in client.events():
                on_event(decode(event.data))
                n += 1
        response.close()
    return n


def sse_requests_sse(url: str, cast: Any, count: int, on_event: Callable | None) -> int:
    from requests_sse import EventSource

    decode = msgspec.json.Decoder(cast).decode
    n = 0
    # requests-sse reconnects when a stream ends (an EventSource never ends): stop at ``count``.
    source = EventSource(url, timeout=120, max_connect_retry=0)
    mark()
    with source:
        for event in source:
            item = decode(event.data)
            if on_event is not None:
                on_event(item)
            n += 1
            if n >= count:
                break
    return n


def sse_limit(url: str, cast: Any, count: int, on_event: Callable | None) -> int:
    """The limit: urllib3 read1, split on b"\\n\\n" with bytes.find, msgspec from a memoryview. No SSE rules."""
    import urllib3

    decode = msgspec.json.Decoder(cast).decode
    n = 0
    pool = urllib3.PoolManager(retries=False)
    mark()
    response = pool.request(
        "GET", url, preload_content=False, timeout=120, headers={"Accept": "text/event-stream"}
    )
    read1 = response.read1
    parts: list[Any] = []  # the start of an event that straddles chunks
    while chunk := read1(READ):
        pos = 0
        if parts:
            if chunk[:1] == b"\n" and parts[-1][-1:] == b"\n":  # b"\n\n" split across the chunks
                event = b"".join(parts)[:-1]
                pos = 1
            else:
                end = chunk.find(b"\n\n")
                if end < 0:
                    parts.append(chunk)
                    continue
                parts.append(memoryview(chunk)[:end])
                event = b"".join(parts)  # the one copy: only the straddling event
                pos = end + 2
            parts = []
            if on_event is None:
                decode(memoryview(event)[6:])
            else:
                on_event(decode(memoryview(event)[6:]))
            n += 1
        view = memoryview(chunk)  # whole events are decoded in place
        while (end := chunk.find(b"\n\n", pos)) >= 0:
            if on_event is None:
                decode(view[pos + 6 : end])
            else:
                on_event(decode(view[pos + 6 : end]))
            n += 1
            pos = end + 2
        if pos < len(chunk):
            parts.append(view[pos:])
    response.release_conn()
    pool.clear()
    return n


def sse_decode_only(url: str, cast: Any, count: int, on_event: Callable | None) -> int:
    """No I/O: the same bytes, already in memory, split and decoded as the limit does (a ceiling)."""
    from urllib.parse import parse_qs, urlsplit

    from server import sse_pieces  # bench/server.py: the very bytes the server sends

    size = int(parse_qs(urlsplit(url).query)["size"][0])
    _, pieces = sse_pieces(size, count)
    decode = msgspec.json.Decoder(cast).decode
    n = 0
    mark()
    for view in pieces:
        buf = view.obj[: len(view)] if len(view) != len(view.obj) else view.obj
        pos = 0
        while (end := buf.find(b"\n\n", pos)) >= 0:
            decode(view[pos + 6 : end])
            n += 1
            pos = end + 2
    return n


SSE_CLIENTS = {
    "tinker_sync": sse_tinker_sync,
    "tinker_sync-dict": sse_tinker_sync,
    "tinker_sync-pure": sse_tinker_sync,
    "httpx-sse": sse_httpx,
    "sseclient-py": sse_sseclient,
    "requests-sse": sse_requests_sse,
    "limit": sse_limit,
    "limit-dict": sse_limit,
    "decode-only": sse_decode_only,
}


# What each client imports, loaded before the clock starts (import time has its own section).
PREIMPORT = {
    "tinker_sync": ["tinker_sync"],
    "httpx-sse": ["httpx", "httpx_sse"],
    "sseclient-py": ["requests", "sseclient"],
    "requests-sse": ["requests", "requests_sse"],
    "limit": ["urllib3"],
    "requests": ["requests"],
    "httpx": ["httpx"],
    "urllib3": ["urllib3"],
}


def preimport(client: str) -> None:
    import importlib

    base = client.split()[0].split("@")[0]  # "tinker_sync@383cba7": an older checkout, same imports
    for name in PREIMPORT.get(base.removesuffix("-dict").removesuffix("-pure"), []):
        importlib.import_module(name)


def implementation(client: str) -> str:
    if client.startswith("tinker_sync"):
        from tinker_sync import sse

        return sse.IMPLEMENTATION
    return ""


def run_sse(spec: dict[str, Any]) -> dict[str, Any]:
    client = re.sub(r"@\S+?(?=-|$)", "", spec["client"])  # "tinker_sync@383cba7-dict": an older checkout
    cast = dict if client == "tinker_sync-dict" else TYPES[spec.get("type", "event")]
    func = SSE_CLIENTS[client]
    preimport(client)
    n = func(spec["url"], cast, spec["count"], None)
    seconds = time.perf_counter() - started(0)
    cpu = cpu_seconds() - _CPU[0]
    if n != spec["count"]:
        raise SystemExit(f"{client}: got {n} events, expected {spec['count']}")
    return {"count": n, "seconds": seconds, "cpu_seconds": cpu, "impl": implementation(client)}


def run_trickle(spec: dict[str, Any]) -> dict[str, Any]:
    client = spec["client"]
    func = SSE_CLIENTS[client]
    preimport(client)
    lags: list[float] = []
    first: list[float] = []
    now = time.time
    clock = time.perf_counter

    def on_event(tick: Tick) -> None:
        if not first:
            first.append(clock())
        lags.append(now() - tick.t)

    n = func(spec["url"], Tick, spec["count"], on_event)
    start = started(0)
    if n != spec["count"]:
        raise SystemExit(f"{client}: got {n} events, expected {spec['count']}")
    lags.sort()
    return {
        "count": n,
        "ttfe_ms": (first[0] - start) * 1000,
        "lag_ms": lags[len(lags) // 2] * 1000,
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
        "impl": implementation(client),
    }


def run_first(spec: dict[str, Any]) -> dict[str, Any]:
    """Time to the first event from a fresh client in a fresh process: the clock starts before the
    client (``Client()`` or a urllib3 ``PoolManager``) is built, so its first request's set-up counts
    (imports do not: they have their own section)."""
    client, url = spec["client"], spec["url"]
    preimport(client)
    cast = TYPES[spec.get("type", "chunk")]
    clock, cpu = time.perf_counter, time.process_time
    if client.startswith("tinker_sync"):
        start, cpu0 = clock(), cpu()
        with _ts_client(url) as ts:
            stream = ts.stream_get(url, cast_to=cast)
            next(iter(stream))
            first, cpu1 = clock(), cpu()
            stream.close()
    else:
        import urllib3

        decode = msgspec.json.Decoder(cast).decode
        start, cpu0 = clock(), cpu()
        pool = urllib3.PoolManager(retries=False)
        response = pool.request("GET", url, preload_content=False, timeout=120)
        buf = b""
        while (end := buf.find(b"\n\n")) < 0:
            buf += response.read1(READ)
        decode(memoryview(buf)[6:end])
        first, cpu1 = clock(), cpu()
        response.release_conn()
        pool.clear()
    return {
        "count": 1,
        "ttfe_ms": (first - start) * 1000,
        "cpu_ms": (cpu1 - cpu0) * 1000,  # CPU time of this process (all threads): steadier under load
        "impl": implementation(client),
    }


# -- downloads -----------------------------------------------------------------


def dl_tinker_sync_file(url: str, dest: str) -> int:
    with _ts_client(url) as client:
        mark()
        with client.stream("GET", url) as response:
            return response.stream_to_file(dest)


def dl_tinker_sync_iter(url: str, dest: str) -> int:
    n = 0
    client = _ts_client(url)
    mark()
    with client, client.stream("GET", url) as response, open(dest, "wb") as f:
        for chunk in response.iter_bytes():
            f.write(chunk)
            n += len(chunk)
    return n


def dl_requests(url: str, dest: str) -> int:
    import requests

    n = 0
    session = requests.Session()
    mark()
    with session, session.get(url, stream=True, timeout=120) as response:
        with open(dest, "wb") as f:
            for chunk in response.iter_content(MiB):
                f.write(chunk)
                n += len(chunk)
    return n


def dl_httpx(url: str, dest: str) -> int:
    import httpx

    n = 0
    client = httpx.Client(timeout=120)
    mark()
    with client, client.stream("GET", url) as response, open(dest, "wb") as f:
        for chunk in response.iter_bytes():
            f.write(chunk)
            n += len(chunk)
    return n


def dl_urllib3(url: str, dest: str) -> int:
    import urllib3

    n = 0
    pool = urllib3.PoolManager(retries=False)
    mark()
    response = pool.request("GET", url, preload_content=False, timeout=120)
    with open(dest, "wb") as f:
        while chunk := response.read(MiB):
            f.write(chunk)
            n += len(chunk)
    response.release_conn()
    return n


DOWNLOAD_CLIENTS = {
    "tinker_sync stream_to_file": dl_tinker_sync_file,
    "tinker_sync iter_bytes": dl_tinker_sync_iter,
    "requests iter_content(1 MiB)": dl_requests,
    "httpx iter_bytes": dl_httpx,
    "urllib3 read(1 MiB)": dl_urllib3,
}


def run_download(spec: dict[str, Any]) -> dict[str, Any]:
    name = re.sub(r"@\S+", "", spec["client"])  # "tinker_sync@383cba7 iter_bytes": the same code path
    func = DOWNLOAD_CLIENTS[name]
    preimport(spec["client"])
    n = func(spec["url"], spec["dest"])
    start = started(0)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - _CPU[0]
    if n != spec["size"]:
        raise SystemExit(f"{spec['client']}: got {n} bytes, expected {spec['size']}")
    durable = None
    if spec["dest"] != os.devnull:
        if os.path.getsize(spec["dest"]) != spec["size"]:
            raise SystemExit(f"{spec['client']}: file has {os.path.getsize(spec['dest'])} bytes")
        durable = fsync_path(spec["dest"]) - start  # stream_to_file fsyncs already: then this is ~free
    return {"count": n, "seconds": seconds, "durable_seconds": durable, "cpu_seconds": cpu}


def fsync_path(path: str) -> float:
    """fsync ``path`` and return the clock after (the same step for every client, curl included)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter()


# -- one file over several connections -----------------------------------------------------------


def run_parallel(spec: dict[str, Any]) -> dict[str, Any]:
    """``client.download(url, dest, connections=N)`` (fsynced before its rename, as always)."""
    from tinker_sync import Client

    url, dest = spec["url"], spec["dest"]
    with Client(api_key=API_KEY, base_url=url.split("/bytes")[0], max_retries=0, timeout=120) as client:
        mark()
        client.download(url, dest, connections=spec["connections"])
    seconds = time.perf_counter() - started(0)
    size = os.path.getsize(dest)
    if size != spec["size"]:
        raise SystemExit(f"tinker_sync: file has {size} bytes, expected {spec['size']}")
    return {
        "count": size,
        "seconds": seconds,
        "durable_seconds": seconds,
        "cpu_seconds": cpu_seconds() - _CPU[0],
    }


# -- a thousand downloads in one process ---------------------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_thousand(spec: dict[str, Any]) -> dict[str, Any]:
    """``count`` threads sharing one Client, each ``stream_to_file`` (verified against the server's
    Content-Digest) or ``iter_bytes`` (hashed) of the same body; every body must be identical.

    Each thread opens its response first; the bodies are read once every response is open, so
    that they are all read at once (the server caps each connection's rate: none can finish
    before the last starts). Peak RSS minus the RSS before the threads, per download, is the cost.
    """
    import hashlib
    import tempfile

    from tinker_sync import Client

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count, url, how = spec["count"], spec["url"], spec["client"]
    base = url.split("/bytes")[0]
    client = Client(api_key=API_KEY, base_url=base, max_retries=3, timeout=300, pool_maxsize=count)
    if how == "urllib3":  # the peer: one shared urllib3 pool, read(64 KiB) (tinker_sync's share of 1,000)
        import urllib3

        pool = urllib3.PoolManager(maxsize=count, retries=False)
    tmp = tempfile.mkdtemp(prefix="tinker-sync-thousand-", dir=spec.get("dir"))
    opened = threading.Barrier(count)
    digests: list[str] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with client.stream("GET", url) as response:
                opened.wait()
                if how == "stream_to_file":
                    path = os.path.join(tmp, f"f{i}")
                    response.stream_to_file(path)  # raises unless the file matches Content-Digest
                    digests.append(response.headers["content-digest"])
                    os.unlink(path)
                else:
                    digest = hashlib.sha256()
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                    digests.append(digest.hexdigest())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            opened.abort()

    def peer(i: int) -> None:
        try:
            response = pool.request("GET", url, preload_content=False, timeout=300)
            opened.wait()
            digest = hashlib.sha256()
            while chunk := response.read(64 << 10):
                digest.update(chunk)
            response.release_conn()
            digests.append(digest.hexdigest())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            opened.abort()

    before = _rss_kb()
    threads = [threading.Thread(target=peer if how == "urllib3" else one, args=(i,)) for i in range(count)]
    mark()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started(0)
    os.rmdir(tmp)
    if errors:
        raise SystemExit(f"{how}: {len(errors)} downloads failed, first: {errors[0]!r}")
    if len(digests) != count or len(set(digests)) != 1:
        raise SystemExit(f"{how}: {len(set(digests))} different bodies among {len(digests)}")
    return {"count": count * spec["size"], "seconds": seconds, "rss_before_kb": before}


# -- a download cut at random offsets ------------------------------------------------------------


def run_resets(spec: dict[str, Any]) -> dict[str, Any]:
    """``client.download`` of ``size`` bytes from the checkout's own mock server, its connections cut
    at ``cuts`` random offsets (the same ones for every checkout); ``connections`` None: the default."""
    import hashlib
    import itertools
    import random

    from tinker_sync import Client
    from tinker_sync.testing import Fault, MockTinkerServer
    from tinker_sync.testing._data import sha256_of

    size, cuts, seed = spec["size"], spec["cuts"], 5
    offsets = sorted(random.Random(7).sample(range(1, size), cuts))
    connections = {} if spec.get("connections") is None else {"connections": spec["connections"]}
    with MockTinkerServer() as server:
        pieces = [b - a for a, b in itertools.pairwise([0, *offsets])]  # then the rest, uncut
        server.script("/test/bytes", *[Fault(reset_after=n) for n in pieces])
        with Client(api_key=server.api_key, base_url=server.url) as client:
            mark()
            try:
                path = client.download(f"/test/bytes?size={size}&seed={seed}", spec["dest"], **connections)
                failure = None
            except Exception as exc:  # noqa: BLE001 - reported as the row's outcome
                failure = f"{type(exc).__name__}: {str(exc)[:120]}"
        seconds = time.perf_counter() - started(0)
        sends = sum(r.path == "/test/bytes" for r in server.requests)
    identical = False
    if failure is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while data := f.read(1 << 22):
                h.update(data)
        identical = h.hexdigest() == sha256_of(seed, size)
        os.remove(path)
    return {
        "count": size,
        "seconds": seconds,
        "requests": sends,
        "failure": failure,
        "identical": identical,
    }


# -- concurrency ---------------------------------------------------------------


def run_concurrency(spec: dict[str, Any]) -> dict[str, Any]:
    """``streams`` threads, each with one SSE stream of ``count`` events; one shared Client (or pool)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    streams, count, url, client = spec["streams"], spec["count"], spec["url"], spec["client"]
    cast = TYPES[spec.get("type", "chunk")]
    preimport(client)
    opened_at: list[float] = []
    # The clock starts when the last stream is open: the barrier's action runs in the thread that
    # completes it, before any thread is released (the main thread may be scheduled much later).
    barrier = threading.Barrier(streams + 1, action=lambda: opened_at.append(time.perf_counter()))
    got = [0] * streams
    errors: list[BaseException] = []

    if client == "tinker_sync":
        shared = _ts_client(url)

        def worker(i: int) -> None:
            try:
                with shared.stream_get(url, cast_to=cast) as stream:  # sends the request now
                    barrier.wait()
                    n = 0
                    for _ in stream:
                        n += 1
                    got[i] = n
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                barrier.abort()

    else:  # the limit: a bare urllib3 pool shared by all threads
        import urllib3

        pool = urllib3.PoolManager(maxsize=32, retries=False)
        decode = msgspec.json.Decoder(cast).decode

        def worker(i: int) -> None:
            try:
                response = pool.request("GET", url, preload_content=False, timeout=120)
                barrier.wait()
                n = 0
                tail = b""
                while chunk := response.read1(READ):
                    buf = tail + chunk if tail else chunk
                    view = memoryview(buf)
                    pos = 0
                    while (end := buf.find(b"\n\n", pos)) >= 0:
                        decode(view[pos + 6 : end])
                        n += 1
                        pos = end + 2
                    tail = buf[pos:]
                response.release_conn()
                got[i] = n
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        barrier.wait()  # every stream is open: start the clock for the events
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    end = time.perf_counter()
    if errors:
        raise SystemExit(f"{client}: {len(errors)} streams failed, first: {errors[0]!r}")
    opened = opened_at[0]
    total = sum(got)
    bad = [n for n in got if n != count]
    if bad:
        raise SystemExit(f"{client}: {len(bad)} streams got the wrong count (e.g. {bad[0]} != {count})")
    return {"count": total, "seconds": end - opened, "open_seconds": opened - start}


SECTIONS = {
    "sse": run_sse,
    "trickle": run_trickle,
    "first": run_first,
    "download": run_download,
    "concurrency": run_concurrency,
    "parallel": run_parallel,
    "thousand": run_thousand,
    "resets": run_resets,
}


def main() -> int:
    spec = json.loads(sys.argv[1])
    result = SECTIONS[spec["section"]](spec)
    result["hwm_kb"] = hwm_kb()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
