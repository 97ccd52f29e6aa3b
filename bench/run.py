"""tinker_sync against its peers and against the limit: ``python bench/run.py [--quick] [--only ...]``.

Sections (``--only`` takes a comma-separated list of these names):

- ``server``: the bench server's own throughput, read by a raw socket into a reused buffer (it must
  be far above every client), beside the mock server's (``python -m tinker_sync.testing``).
- ``sse``: events/s with each event's JSON decoded, for ~200 B, ~20 KB and ~1 MB events.
- ``trickle``: time to first event and per-event delivery lag on a stream of one event every 5 ms.
- ``download``: MB/s and peak RSS for a large body, to a file (temp dir) and to /dev/null.
- ``https``: the same download over HTTPS (the bench server with ``--tls``): tinker_sync, bare urllib3
  and ``curl -o`` over one local TLS server, and with ``--before DIR`` an older tinker_sync checkout
  (its own venv) in the same run, so that before/after ratios come from one run.
- ``parallel``: one large file over HTTPS with 1, 2, 4 and 8 connections (``download(connections=N)``)
  beside ``curl -o`` and ``aria2c -x N``; then with each connection capped, against N x the cap.
- ``concurrency``: 1000 SSE streams from 1000 threads in one process: RSS and aggregate events/s.
- ``thousand``: 1000 downloads of 16 MiB at once from 1000 threads sharing one client
  (``stream_to_file``, and ``iter_bytes``): peak RSS and what each download costs.
- ``resets``: one download cut at 100 random offsets with default settings (each checkout's own mock
  server), with ``--before DIR`` the older checkout too: seconds, requests, a byte-identical file.
- ``import``: wall time of ``python -c "import tinker_sync"`` beside ``import urllib3, msgspec``.
- ``cli``: wall time of ``tinker-sync --version`` and ``tinker-sync run list`` (against the mock server),
  beside the official CLI's ``tinker version`` and ``tinker run list`` (``--official VENV``).

The server runs in its own process; every client run is a fresh subprocess (``bench/clients.py``), so
peak RSS is per client. Runs are interleaved (client order rotates each round) and medians reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import PY, REPO, Before, Server, child_env, log, run_client, table

SECTIONS = (
    "server",
    "sse",
    "trickle",
    "download",
    "https",
    "parallel",
    "concurrency",
    "thousand",
    "resets",
    "import",
    "cli",
)

SSE_SIZES = {"small": 200, "medium": 20_000, "large": 1_000_000}
SSE_TYPES = {"small": "chunk", "medium": "event", "large": "event"}  # the Struct each event decodes into
SSE_CLIENTS = [
    "tinker_sync",
    "tinker_sync-dict",
    "tinker_sync-pure",
    "httpx-sse",
    "sseclient-py",
    "requests-sse",
    "limit",
    "decode-only",
]
PEERS = ("httpx-sse", "sseclient-py", "requests-sse")
TRICKLE_CLIENTS = ["tinker_sync", "tinker_sync-pure", "httpx-sse", "sseclient-py", "requests-sse", "limit"]
DOWNLOAD_CLIENTS = [
    "tinker_sync stream_to_file",
    "tinker_sync iter_bytes",
    "requests iter_content(1 MiB)",
    "httpx iter_bytes",
    "urllib3 read(1 MiB)",
    "curl -o",
]
DOWNLOAD_PEERS = ("requests iter_content(1 MiB)", "httpx iter_bytes")
HTTPS_CLIENTS = ["tinker_sync stream_to_file", "tinker_sync iter_bytes", "urllib3 read(1 MiB)", "curl -o"]
IMPORTS = {
    "python -c pass": "pass",
    "import urllib3, msgspec": "import urllib3, msgspec",
    "import tinker_sync": "import tinker_sync",
    "import tinker_sync (pure)": "import tinker_sync",
    "import httpx": "import httpx",
    "import requests": "import requests",
}


def run_curl(url: str, dest: str, size: int, extra: list[str] | None = None) -> dict[str, Any]:
    """curl -o, timed from outside (process start included: a few ms); peak RSS polled from /proc."""
    return run_tool(["curl", "-s", "-S", "-f", *(extra or []), "-o", dest, url], dest, size)


def run_aria2c(url: str, dest: str, size: int, connections: int, ca_file: str) -> dict[str, Any]:
    """aria2c -x N -s N (N connections, N pieces), its file preallocated as tinker_sync's is."""
    directory, name = os.path.split(dest)
    command = ["aria2c", "-q", f"-x{connections}", f"-s{connections}", "-k1M", "--file-allocation=falloc"]
    command += ["--allow-overwrite=true", "--auto-file-renaming=false", f"--ca-certificate={ca_file}"]
    return run_tool([*command, "-d", directory, "-o", name, url], dest, size)


def run_tool(command: list[str], dest: str, size: int) -> dict[str, Any]:
    """A download by another program, timed from outside; peak RSS polled from /proc; then fsynced."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    hwm = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    assert proc.stderr is not None
    if proc.returncode != 0:
        return {"error": f"{command[0]} exit {proc.returncode}: {proc.stderr.read().decode()[:200]}"}
    got = size if dest == os.devnull else os.path.getsize(dest)
    if got != size:
        return {"error": f"{command[0]} wrote {got} bytes, expected {size}"}
    durable = None
    if dest != os.devnull:
        fd = os.open(dest, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        durable = time.perf_counter() - start
    return {"count": size, "seconds": seconds, "durable_seconds": durable, "hwm_kb": hwm}


# -- statistics and tables ---------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    good = [r for r in results if "error" not in r]
    out: dict[str, Any] = {"runs": len(good)}
    if len(good) < len(results):
        out["error"] = next(r["error"] for r in results if "error" in r)
    if good:
        out[key] = median([r[key] for r in good])
        out["rss_mb"] = median([r["hwm_kb"] / 1024 for r in good if "hwm_kb" in r])
        if good[0].get("impl"):
            out["impl"] = good[0]["impl"]
    return out


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if digits == 0 and abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{max(digits, 2)}f}"
    return str(value)


def ratio(value: float | None, ref: float | None, lower_is_better: bool = False) -> str:
    if value is None or not ref:
        return "-"
    r = ref / value if lower_is_better else value / ref
    return f"{r:.2f}x"


def rotate(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


# -- sections ------------------------------------------------------------------


def raw_read(url: str, path: str) -> tuple[int, float]:
    """Read a whole response with a raw socket (Connection: close) into a reused 1 MiB buffer."""
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)))
    start = time.perf_counter()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    buf = bytearray(1 << 20)
    total = 0
    while n := sock.recv_into(buf):
        total += n
    seconds = time.perf_counter() - start
    sock.close()
    return total, seconds


def section_server(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """Throughput of the bench server (and of the mock server), read by a raw socket in this process."""
    out: dict[str, Any] = {}
    n_small = 2_000_000 if not args.quick else 500_000
    gib = args.download_size
    cases = [
        ("bench server", server.url, f"/sse?size=200&count={n_small}", 200),
        ("bench server", server.url, f"/sse?size=20000&count={n_small // 100}", 20_000),
        ("bench server", server.url, f"/bytes?size={gib}", None),
    ]
    mock = Server(mock=True)
    try:
        cases += [
            ("mock server", mock.url, f"/test/sse?count={n_small // 10}&size=200", 200),
            ("mock server", mock.url, f"/test/bytes?size={gib // 8}&seed=1", None),
        ]
        rows = []
        for name, url, path, event in cases:
            runs = [raw_read(url, path) for _ in range(max(1, min(args.runs, 3)))]
            total, seconds = runs[0][0], median([s for _, s in runs])
            assert seconds is not None
            mbs = total / seconds / 1e6
            key = f"{name} {path.split('?')[0]}" + (f" {event} B" if event else "")
            out[key] = {
                "bytes": total,
                "seconds": seconds,
                "mb_s": mbs,
                "events_s": (total / (event + 10)) / seconds if event else None,
            }
            rows.append([name, path, fmt(mbs), fmt(out[key]["events_s"])])
    finally:
        mock.stop()
    print("\n## Server throughput (raw socket reader, same machine)\n")
    print(table(["server", "route", "MB/s", "events/s (equiv.)"], rows))
    return out


def section_sse(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base_counts = {"small": 5_000, "medium": 200, "large": 4}
    target = 0.35 if args.quick else 0.8
    for label, size in SSE_SIZES.items():
        clients = [c for c in SSE_CLIENTS if c in args.clients] if args.clients else list(SSE_CLIENTS)
        counts: dict[str, int] = {}
        for client in clients:  # calibration (and warm-up): choose a count for ~target seconds
            n = base_counts[label]
            r = run_client(
                {
                    "section": "sse",
                    "client": client,
                    "count": n,
                    "type": SSE_TYPES[label],
                    "url": f"{server.url}/sse?size={size}&count={n}",
                }
            )
            if "error" in r:
                counts[client] = n
                log(f"sse {label} {client}: calibration failed: {r['error']}")
                continue
            rate = r["count"] / r["seconds"]
            counts[client] = max(3, min(int(rate * target), 5_000_000))
        results: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
        for k in range(args.runs):
            for client in rotate(clients, k):
                n = counts[client]
                r = run_client(
                    {
                        "section": "sse",
                        "client": client,
                        "count": n,
                        "type": SSE_TYPES[label],
                        "url": f"{server.url}/sse?size={size}&count={n}",
                    }
                )
                if "error" not in r:
                    r["events_s"] = r["count"] / r["seconds"]
                    r["cpu_events_s"] = r["count"] / max(r["cpu_seconds"], 1e-9)
                results[client].append(r)
                log(f"sse {label} {client} run {k + 1}: {r.get('events_s', r.get('error'))}")
        section = {c: summarize(rs, "events_s") | {"count": counts[c]} for c, rs in results.items()}
        for c, rs in results.items():
            section[c]["cpu_events_s"] = median([r["cpu_events_s"] for r in rs if "error" not in r])
        refs = {}
        for key in ("events_s", "cpu_events_s"):
            peers = [section[p][key] for p in PEERS if section.get(p, {}).get(key)]
            refs[key] = (section.get("limit", {}).get(key), max(peers) if peers else None)
        rows = []
        for client in clients:
            s = section[client]
            rate, cpu = s.get("events_s"), s.get("cpu_events_s")
            name = client + (f" ({s['impl']})" if s.get("impl") else "")
            rows.append(
                [
                    name,
                    fmt(rate),
                    fmt(cpu),
                    fmt(rate * (size + 10) / 1e6 if rate else None, 1),
                    f"{ratio(rate, refs['events_s'][0])} / {ratio(cpu, refs['cpu_events_s'][0])}",
                    f"{ratio(rate, refs['events_s'][1])} / {ratio(cpu, refs['cpu_events_s'][1])}",
                    fmt(s.get("rss_mb"), 1),
                    str(s["count"]) + (f" ERROR: {s['error']}" if "error" in s else ""),
                ]
            )
        print(f"\n## SSE throughput: {label} events (~{size:,} B of JSON each, decoded)\n")
        if label == "small":
            print(
                "Ratios are wall / CPU: events per wall second, and per CPU second of the client process "
                "(steadier when other processes share the machine).\n"
                "decode-only: no I/O, the same bytes split and decoded in memory (the JSON cost alone).\n"
            )
        print(
            table(
                [
                    "client",
                    "events/s",
                    "events/CPU-s",
                    "MB/s",
                    "vs limit",
                    "vs fastest peer",
                    "peak RSS MB",
                    "events/run",
                ],
                rows,
            )
        )
        out[label] = {
            "size": size,
            "clients": section,
            "limit": refs["events_s"][0],
            "fastest_peer": refs["events_s"][1],
            "limit_cpu": refs["cpu_events_s"][0],
            "fastest_peer_cpu": refs["cpu_events_s"][1],
        }
    return out


def section_trickle(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    count = 60 if args.quick else 200
    interval = 5
    clients = [c for c in TRICKLE_CLIENTS if c in args.clients] if args.clients else list(TRICKLE_CLIENTS)
    url = f"{server.url}/trickle?count={count}&interval={interval}&size=200"
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    for k in range(args.runs):
        for client in rotate(clients, k):
            r = run_client(
                {"section": "trickle", "client": client, "count": count, "type": "tick", "url": url}
            )
            results[client].append(r)
            log(f"trickle {client} run {k + 1}: {r.get('lag_ms', r.get('error'))}")
    section: dict[str, Any] = {}
    for client, rs in results.items():
        good = [r for r in rs if "error" not in r]
        section[client] = {
            "runs": len(good),
            "ttfe_ms": median([r["ttfe_ms"] for r in good]),
            "lag_ms": median([r["lag_ms"] for r in good]),
            "lag_p99_ms": median([r["lag_p99_ms"] for r in good]),
            "rss_mb": median([r["hwm_kb"] / 1024 for r in good]),
        }
        if len(good) < len(rs):
            section[client]["error"] = next(r["error"] for r in rs if "error" in r)
    lim = section.get("limit", {})
    rows = []
    for client in clients:
        s = section[client]
        d_first = (
            None if s["ttfe_ms"] is None or lim.get("ttfe_ms") is None else s["ttfe_ms"] - lim["ttfe_ms"]
        )
        d_lag = None if s["lag_ms"] is None or lim.get("lag_ms") is None else s["lag_ms"] - lim["lag_ms"]
        rows.append(
            [
                client,
                fmt(s["ttfe_ms"], 3),
                fmt(d_first, 3),
                fmt(s["lag_ms"], 3),
                fmt(d_lag, 3),
                fmt(s["lag_p99_ms"], 3),
                fmt(s["rss_mb"], 1) + (f" ERROR: {s['error']}" if "error" in s else ""),
            ]
        )
    print(
        f"\n## Time to first event and delivery lag ({count} events, one every {interval} ms, one HTTP chunk each)\n"
    )
    print(
        table(
            [
                "client",
                "first event ms",
                "vs limit ms",
                "median lag ms",
                "vs limit ms",
                "p99 lag ms",
                "peak RSS MB",
            ],
            rows,
        )
    )
    return {"count": count, "interval_ms": interval, "clients": section}


def download_tables(
    args: argparse.Namespace,
    url: str,
    clients: list[str],
    *,
    title: str,
    before: Before | None = None,
    env: dict[str, str] | None = None,
    curl_args: list[str] | None = None,
) -> dict[str, Any]:
    """Each client downloads ``url`` to a file and to /dev/null, interleaved; a table per target."""
    size = args.download_size
    out: dict[str, Any] = {"size": size, "targets": {}}
    tmp = tempfile.mkdtemp(prefix="tinker-sync-bench-")
    try:
        for target in ("file", "/dev/null"):
            results: dict[str, list[dict[str, Any]]] = {}
            targets = [c for c in clients if not (target != "file" and c.endswith("stream_to_file"))]
            for k in range(args.runs):
                for client in rotate(targets, k):
                    dest = os.path.join(tmp, "body.bin") if target == "file" else os.devnull
                    if client == "curl -o":
                        r = run_curl(url, dest, size, curl_args)
                    else:
                        spec = {
                            "section": "download",
                            "client": client,
                            "url": url,
                            "dest": dest,
                            "size": size,
                        }
                        r = run_client(spec, before=before, env=env)
                    if "error" not in r:
                        r["mb_s"] = r["count"] / r["seconds"] / 1e6
                        if r.get("durable_seconds"):
                            r["durable_mb_s"] = r["count"] / r["durable_seconds"] / 1e6
                    results.setdefault(client, []).append(r)
                    log(f"{title} {target} {client} run {k + 1}: {r.get('mb_s', r.get('error'))}")
                    for leftover in os.listdir(tmp):
                        os.unlink(os.path.join(tmp, leftover))
            section = {c: summarize(rs, "mb_s") for c, rs in results.items()}
            for c, rs in results.items():
                section[c]["durable_mb_s"] = median([r["durable_mb_s"] for r in rs if r.get("durable_mb_s")])
                section[c]["cpu_seconds"] = median([r["cpu_seconds"] for r in rs if r.get("cpu_seconds")])
            # To a file, compare time-to-durable (every client gets the same fsync at its end;
            # stream_to_file fsyncs by design); to /dev/null, plain MB/s.
            key = "durable_mb_s" if target == "file" else "mb_s"
            refs = {name: section.get(name, {}).get(key) for name in ("curl -o", "urllib3 read(1 MiB)")}
            peers = [section[p][key] for p in DOWNLOAD_PEERS if section.get(p, {}).get(key)]
            best_peer = max(peers) if peers else None
            rows = []
            for client in targets:
                s = section[client]
                row = [client, fmt(s.get("mb_s"))]
                if target == "file":
                    row.append(fmt(s.get("durable_mb_s")))
                row += [
                    ratio(s.get(key), refs["curl -o"]),
                    ratio(s.get(key), refs["urllib3 read(1 MiB)"]),
                ]
                if best_peer:
                    row.append(ratio(s.get(key), best_peer))
                rows.append(
                    row
                    + [
                        fmt(s.get("cpu_seconds"), 2),
                        fmt(s.get("rss_mb"), 1) + (f" ERROR: {s['error']}" if "error" in s else ""),
                    ]
                )
            head = ["client", "MB/s written"] + (["MB/s durable (+fsync)"] if target == "file" else [])
            head += ["vs curl", "vs urllib3 read(1 MiB)"] + (["vs fastest peer"] if best_peer else [])
            where = "a file in a temp dir (same disk)" if target == "file" else "/dev/null"
            print(f"\n## {title}: {size / 2**20:,.0f} MiB to {where}\n")
            if target == "file":
                print(
                    "Ratios use the durable rate: the time until the data is on disk (each client's write, then "
                    "one fsync of the file; stream_to_file fsyncs before its rename by design). CPU s: the "
                    "client process's user + system time (curl's is not measured).\n"
                )
            print(table(head + ["CPU s", "peak RSS MB"], rows))
            out["targets"][target] = {"clients": section, "refs": refs, "fastest_peer": best_peer}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def section_download(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    url = f"{server.url}/bytes?size={args.download_size}"
    notes = []
    clients = [
        c for c in DOWNLOAD_CLIENTS if not args.clients or c.split()[0] in args.clients or c in args.clients
    ]
    if not shutil.which("curl") and "curl -o" in clients:
        clients.remove("curl -o")
        notes.append("curl -o: skipped, curl is not installed.")
    out = download_tables(args, url, clients, title="Download")
    for note in notes:
        print(f"\nNote: {note}")
    return out | {"notes": notes}


def section_https(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """The download over HTTPS, one local TLS server (bench/server.py --tls) for every client."""
    clients = [
        c for c in HTTPS_CLIENTS if not args.clients or c.split()[0] in args.clients or c in args.clients
    ]
    before = Before(args.before) if args.before else None
    if before is not None:
        clients[2:2] = [f"{before.name} stream_to_file", f"{before.name} iter_bytes"]
    if not shutil.which("curl") and "curl -o" in clients:
        clients.remove("curl -o")
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = os.path.join(tmp, "ca.pem")
        tls = Server(ca_file=ca_file)
        try:
            url = f"{tls.url}/bytes?size={args.download_size}"
            # Every Python client trusts the test CA through SSL_CERT_FILE (OpenSSL's default
            # locations, which urllib3 and tinker_sync, old and new, read); curl through --cacert.
            return download_tables(
                args,
                url,
                clients,
                title="HTTPS download",
                before=before,
                env={"SSL_CERT_FILE": ca_file},
                curl_args=["--cacert", ca_file],
            ) | {"before": before.name if before else None}
        finally:
            tls.stop()


def section_parallel(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """One file over N connections (HTTPS, a strong ETag and ranges), then with each connection capped."""
    size = args.download_size
    counts = (1, 2, 4, 8)
    tools = [f"tinker_sync connections={n}" for n in counts] + ["curl -o"]
    if shutil.which("aria2c"):
        tools += [f"aria2c -x{n}" for n in counts]
    notes = (
        [] if shutil.which("aria2c") else ["aria2c: not installed (apt-get install aria2), its rows skipped."]
    )
    cap = 25_000_000
    capped_size = (256 if not args.quick else 128) << 20
    out: dict[str, Any] = {"size": size, "cap": cap, "capped_size": capped_size, "notes": notes}
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = os.path.join(tmp, "ca.pem")
        tls = Server(ca_file=ca_file)
        try:
            for label, rate, tool_list, nbytes in (
                ("full", 0, tools, size),
                ("capped", cap, [t for t in tools if t.startswith("tinker_sync")], capped_size),
            ):
                url = f"{tls.url}/bytes?size={nbytes}&ranges=1" + (f"&rate={rate}" if rate else "")
                results: dict[str, list[dict[str, Any]]] = {t: [] for t in tool_list}
                for k in range(args.runs if label == "full" else 1):
                    for tool in rotate(tool_list, k):
                        dest = os.path.join(tmp, "body.bin")
                        if tool == "curl -o":
                            r = run_curl(url, dest, nbytes, ["--cacert", ca_file])
                        elif tool.startswith("aria2c"):
                            r = run_aria2c(url, dest, nbytes, int(tool.split("-x")[1]), ca_file)
                        else:
                            spec = {
                                "section": "parallel",
                                "client": "tinker_sync",
                                "connections": int(tool.split("=")[1]),
                                "url": url,
                                "dest": dest,
                                "size": nbytes,
                            }
                            r = run_client(spec, env={"SSL_CERT_FILE": ca_file})
                        if "error" not in r:
                            r["mb_s"] = r["count"] / r["durable_seconds"] / 1e6
                        results[tool].append(r)
                        log(f"parallel {label} {tool} run {k + 1}: {r.get('mb_s', r.get('error'))}")
                        if os.path.exists(dest):
                            os.unlink(dest)
                section = {t: summarize(rs, "mb_s") for t, rs in results.items()}
                for t, rs in results.items():
                    section[t]["cpu_seconds"] = median([r["cpu_seconds"] for r in rs if r.get("cpu_seconds")])
                out[label] = section
        finally:
            tls.stop()
    one = out["full"]["tinker_sync connections=1"].get("mb_s")
    curl = out["full"].get("curl -o", {}).get("mb_s")
    rows = []
    for tool, s in out["full"].items():
        rows.append(
            [
                tool,
                fmt(s.get("mb_s")),
                ratio(s.get("mb_s"), one),
                ratio(s.get("mb_s"), curl),
                fmt(s.get("cpu_seconds"), 2),
                fmt(s.get("rss_mb"), 1) + (f" ERROR: {s['error']}" if "error" in s else ""),
            ]
        )
    print(f"\n## One file over several connections: {size / 2**20:,.0f} MiB over HTTPS to a file, durable\n")
    print(
        "Each tool writes the file, then it is fsynced (tinker_sync fsyncs before its rename); MB/s to that "
        "point. One local TLS server on the same machine: the connections share its CPUs with the clients. "
        "CPU s: tinker_sync's process (curl's and aria2c's are not measured).\n"
    )
    print(table(["client", "MB/s durable", "vs 1 connection", "vs curl", "CPU s", "peak RSS MB"], rows))
    rows = []
    for tool, s in out["capped"].items():
        n = int(tool.split("=")[1])
        rows.append([tool, fmt(s.get("mb_s"), 1), fmt(n * cap / 1e6, 1), ratio(s.get("mb_s"), n * cap / 1e6)])
    print(
        f"\n## Each connection capped at {cap / 1e6:g} MB/s (as object stores cap them): "
        f"{capped_size / 2**20:,.0f} MiB over HTTPS\n"
    )
    print(table(["client", "MB/s durable", "N x cap MB/s", "vs N x cap"], rows))
    for note in notes:
        print(f"\nNote: {note}")
    return out


def section_thousand(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """``--streams`` downloads of 16 MiB at once, one thread each, one shared client."""
    count = args.streams if not args.quick else min(args.streams, 250)
    size = 16 << 20
    rate = 512 << 10  # per connection: every download lasts ~32 s, so all of them run at once
    url = f"{server.url}/bytes?size={size}&digest=1&rate={rate}"
    out: dict[str, Any] = {"downloads": count, "size": size, "rate": rate, "clients": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for how in ("iter_bytes", "stream_to_file"):
            os.sync()  # no writeback of an earlier run's files competes with this one
            spec = {
                "section": "thousand",
                "client": how,
                "count": count,
                "url": url,
                "size": size,
                "dir": tmp,
            }
            r = run_client(spec, timeout=900)
            log(f"thousand {how}: {r.get('hwm_kb', r.get('error'))}")
            out["clients"][how] = r
            if "error" in r:
                rows.append([how, "-", "-", "-", "-", f"ERROR: {r['error']}"])
                continue
            per = (r["hwm_kb"] - r["rss_before_kb"]) / count
            rows.append(
                [
                    how,
                    fmt(r["hwm_kb"] / 1024, 1),
                    fmt(per, 0),
                    fmt(r["seconds"], 1),
                    fmt(r["count"] / r["seconds"] / 1e6),
                    "yes",
                ]
            )
    print(
        f"\n## {count} downloads at once: {count} threads, one client, {size >> 20} MiB each "
        f"(each connection capped at {rate >> 10} KiB/s, so that all run at once)\n"
    )
    print(
        "stream_to_file checks each file against the server's Content-Digest (SHA-256); iter_bytes hashes "
        "each body. Per download: (peak RSS - RSS before the threads) / downloads.\n"
    )
    print(
        table(["how", "peak RSS MB", "KiB per download", "seconds", "aggregate MB/s", "all identical"], rows)
    )
    return out


def section_resets(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """A download whose connection is cut at 100 random offsets, default settings (and ``--before``)."""
    size, cuts = args.download_size, 100
    # (client, cuts, connections): None is the default ("auto": several for a large body, each cut
    # in turn), 1 the one connection that every cut hits (as before parallel downloads)
    clients: list[tuple[str, int, int | None]] = [
        ("tinker_sync", 0, None),
        ("tinker_sync", cuts, None),
        ("tinker_sync", cuts, 1),
    ]
    before = Before(args.before) if args.before else None
    if before is not None:
        clients.append((before.name, cuts, None))
    out: dict[str, Any] = {"size": size, "cuts": cuts, "clients": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for client, n, connections in clients:
            spec = {
                "section": "resets",
                "client": client,
                "size": size,
                "cuts": n,
                "connections": connections,
                "dest": os.path.join(tmp, "f"),
            }
            r = run_client(spec, timeout=1800, before=before)
            label = f"{client}, {n} cuts" + ("" if connections is None else f", connections={connections}")
            log(f"resets {label}: {r.get('seconds', r.get('error'))}")
            out["clients"][label] = r
            if "error" in r:
                rows.append([label, "-", "-", f"ERROR: {r['error']}"])
                continue
            outcome = "byte-identical" if r["identical"] else f"failed: {r['failure']}"
            rows.append([label, fmt(r["seconds"], 1), str(r["requests"]), outcome])
    print(
        f"\n## {size >> 20} MiB downloaded through {cuts} connection cuts at random offsets, default settings\n"
    )
    print(
        "Each checkout's own mock server cuts the connection at the same offsets; `client.download(...)` "
        "with its defaults (and with one connection). Requests: every GET of the body, ranges included.\n"
    )
    print(table(["client", "seconds", "requests", "outcome"], rows))
    return out


def section_concurrency(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    streams = args.streams
    count = 50 if args.quick else 200
    url = f"{server.url}/sse?size=200&count={count}"
    clients = ["tinker_sync", "limit"]
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    for k in range(max(1, min(args.runs, 3))):
        for client in rotate(clients, k):
            r = run_client(
                {
                    "section": "concurrency",
                    "client": client,
                    "type": SSE_TYPES["small"],
                    "streams": streams,
                    "count": count,
                    "url": url,
                }
            )
            if "error" not in r:
                r["events_s"] = r["count"] / r["seconds"]
            results[client].append(r)
            log(f"concurrency {client} run {k + 1}: {r.get('events_s', r.get('error'))}")
    section = {c: summarize(rs, "events_s") for c, rs in results.items()}
    for c, rs in results.items():
        good = [r for r in rs if "error" not in r]
        section[c]["open_seconds"] = median([r["open_seconds"] for r in good])
    limit = section["limit"].get("events_s")
    rows = [
        [
            c,
            fmt(s.get("events_s")),
            ratio(s.get("events_s"), limit),
            fmt(s.get("open_seconds"), 2),
            fmt(s.get("rss_mb"), 1) + (f" ERROR: {s['error']}" if "error" in s else ""),
        ]
        for c, s in section.items()
    ]
    print(
        f"\n## {streams} concurrent SSE streams, {streams} threads, one shared client "
        f"({count} events of ~200 B each; every event counted)\n"
    )
    print(table(["client", "aggregate events/s", "vs limit", "all streams open s", "peak RSS MB"], rows))
    return {"streams": streams, "events_per_stream": count, "clients": section}


def section_import(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    n = 5 if args.quick else 15
    times: dict[str, list[float]] = {name: [] for name in IMPORTS}
    with tempfile.TemporaryDirectory() as cwd:
        for k in range(n):
            for name in rotate(list(IMPORTS), k):
                start = time.perf_counter()
                subprocess.run([PY, "-c", IMPORTS[name]], check=True, env=child_env(name), cwd=cwd)
                times[name].append((time.perf_counter() - start) * 1000)
        proc = subprocess.run(
            [PY, "-X", "importtime", "-c", "import tinker_sync"],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=cwd,
        )
    heaviest = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self" in line:
            continue
        self_us, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        heaviest.append((int(self_us), int(cumulative), name))
    heaviest.sort(reverse=True)
    section = {name: median(t) for name, t in times.items()}
    bare = section["python -c pass"]
    base = section["import urllib3, msgspec"]
    rows = [[name, fmt(ms, 1), fmt(ms - bare, 1), fmt(ms - base, 1)] for name, ms in section.items()]  # type: ignore[operator]
    print(f"\n## Import time (wall time of a fresh `python -c ...`, median of {n})\n")
    print(table(["command", "ms", "minus bare python ms", "minus urllib3+msgspec ms"], rows))
    print("\nHeaviest modules under `python -X importtime -c 'import tinker_sync'` (self time):\n")
    print(
        table(
            ["module", "self ms", "cumulative ms"],
            [[name.strip(), fmt(s / 1000, 2), fmt(c / 1000, 2)] for s, c, name in heaviest[:8]],
        )
    )
    return {"median_ms": section, "runs": n, "importtime_top": heaviest[:15]}


def section_cli(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """A fresh process per CLI command: ours (and ``--before``'s) beside the official ``tinker`` CLI."""
    n = 5 if args.quick else 15
    mock = Server(mock=True)
    ours = str(Path(PY).with_name("tinker-sync"))
    official = str(Path(args.official) / "bin" / "tinker") if args.official else None
    commands = {
        "python -c pass": [PY, "-c", "pass"],
        "tinker-sync --version": [ours, "--version"],
        "tinker-sync run list": [ours, "run", "list"],
    }
    notes = []
    before = Before(args.before) if args.before else None
    if before is not None:  # its source tree first on the path, run as a module
        commands[f"{before.name} --version"] = [before.python, "-m", "tinker_sync", "--version"]
        commands[f"{before.name} run list"] = [before.python, "-m", "tinker_sync", "run", "list"]
    if official and os.path.exists(official):
        commands["tinker version (official)"] = [official, "version"]
        commands["tinker run list (official)"] = [official, "run", "list"]
    else:
        notes.append("the official CLI: pass --official VENV (a venv with `pip install tinker`) for its rows")
    env = child_env() | {"TINKER_BASE_URL": mock.url, "TINKER_API_KEY": mock.api_key}
    before_env = env | ({"PYTHONPATH": str(before.root)} if before is not None else {})
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    failed: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory() as cwd:
            for k in range(n):
                for name in rotate(list(commands), k):
                    use = before_env if before is not None and name.startswith(before.name) else env
                    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                    proc = subprocess.run(commands[name], capture_output=True, text=True, env=use, cwd=cwd)
                    if proc.returncode != 0:
                        lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
                        failed[name] = lines[-1][:160]
                        continue
                    times[name].append((time.perf_counter() - start) * 1000)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    used = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
                    cpu[name].append(used * 1000)
    finally:
        mock.stop()
    wall_ms = {name: median(t) for name, t in times.items()}
    cpu_ms = {name: median(t) for name, t in cpu.items()}

    def minus(value: float | None, bare: float | None) -> str:
        return fmt(None if value is None or bare is None else value - bare, 1)

    rows = [
        [
            name,
            fmt(wall_ms[name], 1),
            minus(wall_ms[name], wall_ms["python -c pass"]),
            fmt(cpu_ms[name], 1),
            minus(cpu_ms[name], cpu_ms["python -c pass"]),
            failed.get(name, ""),
        ]
        for name in commands
    ]
    print(f"\n## CLI start (a fresh process, median of {n}; `run list` against the mock server)\n")
    print("CPU ms: user + system time of the process (steadier than wall time on a busy machine).\n")
    print(table(["command", "wall ms", "minus bare python", "CPU ms", "minus bare python", "error"], rows))
    for note in notes:
        print(f"\nNote: {note}")
    return {"median_ms": wall_ms, "median_cpu_ms": cpu_ms, "runs": n, "errors": failed}


RUNNERS = {
    "server": section_server,
    "sse": section_sse,
    "trickle": section_trickle,
    "download": section_download,
    "https": section_https,
    "parallel": section_parallel,
    "concurrency": section_concurrency,
    "thousand": section_thousand,
    "resets": section_resets,
    "import": section_import,
    "cli": section_cli,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (under a minute)")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument(
        "--clients", default="", help="comma-separated client names to keep (sse, trickle, download)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--runs", type=int, default=None, help="runs per client (default 3, --quick 2)")
    parser.add_argument(
        "--streams", type=int, default=1000, help="concurrent streams and downloads (default 1000)"
    )
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="an older tinker_sync checkout with its own .venv, measured beside this one (https and cli sections; "
        "with --check: sse, first event, downloads)",
    )
    parser.add_argument(
        "--official",
        metavar="VENV",
        help="a venv with the official `tinker` package, for the cli section's rows",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the standard scenarios and compare their ratios with bench/baseline.json (exit 1 if one fell)",
    )
    parser.add_argument(
        "--update-baseline", action="store_true", help="with --check: write this run's ratios as the baseline"
    )
    args = parser.parse_args(argv)
    if args.check or args.update_baseline:
        import check  # bench/check.py

        return check.main(args)
    args.runs = args.runs or (2 if args.quick else 3)
    args.download_size = (256 if args.quick else 1024) << 20
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    server = Server()
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "runs": args.runs,
        "load_average": os.getloadavg(),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip(),
    }
    print(
        f"# tinker_sync bench ({'quick' if args.quick else 'full'}; Python {meta['python']}, "
        f"{meta['cpus']} CPUs, {args.runs} runs per client, medians; commit {meta['git']})"
    )
    results: dict[str, Any] = {"meta": meta}
    started = time.perf_counter()
    try:
        for name in SECTIONS:
            if name in only:
                t0 = time.perf_counter()
                results[name] = RUNNERS[name](args, server)
                log(f"{name}: {time.perf_counter() - t0:.1f} s")
                sys.stdout.flush()
    finally:
        server.stop()
    meta["seconds"] = time.perf_counter() - started
    meta["load_average_end"] = os.getloadavg()
    print(
        f"\n(total {meta['seconds']:.0f} s; 1-min load average {meta['load_average'][0]:.1f} at start, "
        f"{meta['load_average_end'][0]:.1f} at end on {meta['cpus']} CPUs: other load skews absolute numbers, "
        "interleaving keeps the ratios fair)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
