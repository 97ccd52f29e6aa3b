"""``python bench/run.py --check``: the standard scenarios' ratios against ``bench/baseline.json``.

Each scenario measures tinker_sync and its peer (a bare urllib3 loop doing the same work) in the
same run, interleaved, and keeps one number: the RATIO of the two. Ratios, not times, are compared
with the committed baseline, so that a slower or busier machine does not fail the check; a ratio
that falls by more than the scenario's noise band fails it (exit status 1).

Throughput scenarios take the best of N runs of each side (on a shared machine the best run is
the one least disturbed by other work); the first-event scenario takes the median of N fresh
processes and compares a difference in milliseconds (a ratio of two ~1 ms times is all noise).

``--update-baseline`` writes the ratios of this run as the new baseline (after a change that is
meant to move them: say so in its commit message).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO, Before, Server, log, run_client, table

BASELINE = Path(__file__).resolve().parent / "baseline.json"
MiB = 1 << 20
# What ``--check --only`` takes: groups of scenarios.
# The wall-clock ratio of the checked figures measured per CPU second (shown, not checked).
WALL: dict[str, float | None] = {}
# The first event's wall-clock ms (tinker_sync, urllib3): shown below the table, not checked.
WALL_MS: dict[str, tuple[float | None, float | None]] = {}
# The suffix of a figure measured with ``--before DIR``'s checkout (shown beside ours, not checked).
BEFORE = "(--before)"
GROUPS = ("sse", "first", "download", "https", "streams", "thousand")


@dataclass
class Scenario:
    """One checked figure.

    ``band``: how far the figure may fall below its baseline before the check fails, a fraction
    of the baseline ratio (``kind`` "ratio", higher is better) or milliseconds (``kind`` "ms",
    tinker_sync minus its peer, lower is better).
    """

    name: str
    what: str
    band: float
    kind: str = "ratio"


SCENARIOS = [
    Scenario(
        "sse 200 B typed",
        "events per CPU second of the client process, cast_to=Struct, vs the bare urllib3 loop",
        0.12,
    ),
    Scenario("sse 200 B dict", "events/s, cast_to=dict, vs the bare loop (dict)", 0.12),
    Scenario("sse 200 B typed, pure", "the pure-Python decoder, vs the bare loop", 0.12),
    Scenario("sse 20 KB typed", "events/s, chunked in 16 KiB writes, vs the bare loop", 0.12),
    Scenario("sse 20 KB dict", "the same, cast_to=dict, vs the bare loop (dict)", 0.12),
    Scenario("sse 20 KB typed, pure", "the pure-Python decoder, vs the bare loop", 0.12),
    Scenario(
        "first event",
        "CPU ms of the process from a fresh Client() to the first event, minus a fresh PoolManager's (median)",
        1.0,
        "ms",
    ),
    Scenario("download to file", "durable MB/s of stream_to_file vs urllib3 read(1 MiB) + fsync", 0.20),
    Scenario("https download", "MB/s over TLS, iter_bytes vs urllib3 read(1 MiB), to /dev/null", 0.15),
    Scenario(
        "1,000 streams", "aggregate events/s of 1,000 SSE streams in one process vs the bare loop", 0.20
    ),
    Scenario("1,000 streams memory", "peak RSS of the bare loop / tinker_sync's (1,000 streams)", 0.15),
    Scenario("1,000 downloads", "aggregate MB/s of 1,000 capped downloads vs urllib3 read(64 KiB)", 0.15),
    Scenario("1,000 downloads memory", "RSS per download: the urllib3 peer's / tinker_sync's", 0.25),
]


def best(results: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> float | None:
    good = [key(r) for r in results if "error" not in r]
    return max(good) if good else None


def interleaved(specs: dict[str, dict[str, Any]], runs: int, **kw: Any) -> dict[str, list[dict[str, Any]]]:
    """Each spec ``runs`` times, in rotating order; every run a fresh process."""
    names = list(specs)
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for k in range(runs):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            r = run_client(specs[name], **kw)
            if "error" in r:
                log(f"check {name}: {r['error']}")
            out[name].append(r)
    return out


def sse(url: str, runs: int, before: Before | None) -> dict[str, tuple[float | None, float | None]]:
    """Best events per CPU second of each tinker_sync flavour and of the bare loop, 200 B and 20 KB events."""
    out: dict[str, tuple[float | None, float | None]] = {}
    flavours = [("tinker_sync", "chunk"), ("tinker_sync-dict", "dict"), ("tinker_sync-pure", "chunk")]
    if before is not None:
        flavours += [(before.name + name.removeprefix("tinker_sync"), cast) for name, cast in flavours]
    for label, size, count, chunk in (
        ("200 B", 200, 200_000, 256 << 10),
        ("20 KB", 20_000, 10_000, 16 << 10),
    ):
        specs = {}
        for client, cast in [*flavours, ("limit", "chunk"), ("limit-dict", "dict")]:
            n = count // 4 if client.endswith("-pure") else count
            typ = cast if size == 200 or cast == "dict" else "event"
            specs[client] = {
                "section": "sse",
                "client": client,
                "count": n,
                "type": typ,
                "url": f"{url}/sse?size={size}&count={n}&chunk={chunk}",
            }
        results = interleaved(specs, runs, before=before)
        cpu = {c: best(rs, lambda r: r["count"] / max(r["cpu_seconds"], 1e-9)) for c, rs in results.items()}
        rate = {c: best(rs, lambda r: r["count"] / r["seconds"]) for c, rs in results.items()}
        for who in ["tinker_sync"] + ([before.name] if before is not None else []):
            tag = "" if who == "tinker_sync" else f" {BEFORE}"
            for name, ours, peer in (
                (f"sse {label} typed", who, "limit"),
                (f"sse {label} dict", f"{who}-dict", "limit-dict"),
                (f"sse {label} typed, pure", f"{who}-pure", "limit"),
            ):
                out[name + tag] = (cpu[ours], cpu[peer])
                WALL[name + tag] = figure(name, rate[ours], rate[peer])
    return out


def first_event(url: str, runs: int, before: Before | None) -> dict[str, tuple[float | None, float | None]]:
    """Median ms to the first event from a fresh client in a fresh process: tinker_sync, urllib3."""
    clients = ["tinker_sync", "urllib3"] + ([before.name] if before is not None else [])
    specs = {
        c: {"section": "first", "client": c, "type": "chunk", "url": f"{url}/sse?size=200&count=1"}
        for c in clients
    }
    results = interleaved(specs, runs, before=before)

    def med(rs: list[dict[str, Any]], key: str) -> float | None:
        good = [r[key] for r in rs if "error" not in r]
        return statistics.median(good) if good else None

    cpu = {c: med(rs, "cpu_ms") for c, rs in results.items()}
    wall = {c: med(rs, "ttfe_ms") for c, rs in results.items()}
    out = {}
    for name, who in [("first event", "tinker_sync")] + (
        [(f"first event {BEFORE}", before.name)] if before else []
    ):
        out[name] = (cpu[who], cpu["urllib3"])
        WALL_MS[name] = (wall[who], wall["urllib3"])
    return out


def downloads(
    url: str, runs: int, size: int, tls_env: dict[str, str] | None, before: Before | None = None
) -> dict[str, tuple[float | None, float | None]]:
    """Best MB/s: to a file (durable: fsynced) over plain HTTP, or to /dev/null over TLS."""
    name = "https download" if tls_env else "download to file"
    how = "iter_bytes" if tls_env else "stream_to_file"
    clients = [f"tinker_sync {how}", "urllib3 read(1 MiB)"] + ([f"{before.name} {how}"] if before else [])
    with tempfile.TemporaryDirectory(prefix="tinker-sync-check-") as tmp:
        dest = os.devnull if tls_env else os.path.join(tmp, "body.bin")
        specs = {
            c: {
                "section": "download",
                "client": c,
                "url": f"{url}/bytes?size={size}",
                "dest": dest,
                "size": size,
            }
            for c in clients
        }
        key = "seconds" if tls_env else "durable_seconds"
        results = interleaved(specs, runs, env=tls_env, before=before)
    rate = {c: best(rs, lambda r: r["count"] / r[key] / 1e6) for c, rs in results.items()}
    out = {name: (rate[clients[0]], rate[clients[1]])}
    if before is not None:
        out[f"{name} {BEFORE}"] = (rate[clients[2]], rate[clients[1]])
    return out


def streams(url: str, runs: int, count: int) -> dict[str, tuple[float | None, float | None]]:
    """1,000 SSE streams in one process: best aggregate events/s, and the lowest peak RSS."""
    specs = {
        c: {
            "section": "concurrency",
            "client": c,
            "type": "chunk",
            "streams": count,
            "count": 100,
            "url": f"{url}/sse?size=200&count=100",
        }
        for c in ("tinker_sync", "limit")
    }
    results = interleaved(specs, runs, timeout=600)
    rate = {c: best(rs, lambda r: r["count"] / r["seconds"]) for c, rs in results.items()}
    rss = {c: best(rs, lambda r: -r["hwm_kb"]) for c, rs in results.items()}
    return {
        "1,000 streams": (rate["tinker_sync"], rate["limit"]),
        "1,000 streams memory": (
            None if rss["tinker_sync"] is None else -rss["tinker_sync"],
            None if rss["limit"] is None else -rss["limit"],
        ),
    }


def thousand(url: str, runs: int, count: int) -> dict[str, tuple[float | None, float | None]]:
    """``count`` capped downloads at once, one thread each: aggregate MB/s and RSS per download."""
    size, rate = 2 * MiB, 512 << 10  # every download lasts ~4 s: all run at once
    with tempfile.TemporaryDirectory(prefix="tinker-sync-check-") as tmp:
        specs = {
            c: {
                "section": "thousand",
                "client": c,
                "count": count,
                "url": f"{url}/bytes?size={size}&digest=1&rate={rate}",
                "size": size,
                "dir": tmp,
            }
            for c in ("iter_bytes", "urllib3")
        }
        results = interleaved(specs, runs, timeout=900)
    mbs = {c: best(rs, lambda r: r["count"] / r["seconds"] / 1e6) for c, rs in results.items()}
    per = {c: best(rs, lambda r: -(r["hwm_kb"] - r["rss_before_kb"]) / count) for c, rs in results.items()}
    return {
        "1,000 downloads": (mbs["iter_bytes"], mbs["urllib3"]),
        "1,000 downloads memory": (
            None if per["iter_bytes"] is None else -per["iter_bytes"],
            None if per["urllib3"] is None else -per["urllib3"],
        ),
    }


def figure(name: str, ours: float | None, peer: float | None) -> float | None:
    """The checked number: ours / peer (peer / ours for memory: higher is better), or ms above the peer."""
    if ours is None or peer is None or ours <= 0 or peer <= 0:
        return None
    if name == "first event":
        return ours - peer
    if name.endswith("memory"):
        return peer / ours
    return ours / peer


def main(args: argparse.Namespace) -> int:
    runs = args.runs or (3 if args.quick else 7)
    count = min(args.streams, 250) if args.quick else args.streams
    size = (64 if args.quick else 128) * MiB
    measured: dict[str, tuple[float | None, float | None]] = {}
    only = {s.strip() for s in args.only.split(",") if s.strip()} or set(GROUPS)
    if only - set(GROUPS):
        raise SystemExit(f"--check --only takes {','.join(GROUPS)}")
    if args.update_baseline and only != set(GROUPS):
        raise SystemExit("--update-baseline needs every scenario (no --only)")
    before = Before(args.before) if args.before else None
    server = Server()
    try:
        if "sse" in only:
            measured |= sse(server.url, runs, before)
        if "first" in only:
            measured |= first_event(server.url, max(runs, 5) * 3, before)
        if "download" in only:
            measured |= downloads(server.url, max(3, runs - 2), size, None, before)
        if "https" in only:
            with tempfile.TemporaryDirectory() as tmp:
                ca_file = os.path.join(tmp, "ca.pem")
                tls = Server(ca_file=ca_file)
                try:
                    measured |= downloads(tls.url, max(3, runs - 2), size, {"SSL_CERT_FILE": ca_file}, before)
                finally:
                    tls.stop()
        if "streams" in only:
            measured |= streams(server.url, 2 if args.quick else 3, count)
        if "thousand" in only:
            measured |= thousand(server.url, 1 if args.quick else 2, count)
    finally:
        server.stop()
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {"figures": {}}
    rows, failed, figures = [], [], {}
    for scenario, name in [(sc, sc.name + tag) for sc in SCENARIOS for tag in ("", " " + BEFORE)]:
        if name not in measured:
            continue  # not asked for (--only), or no --before
        ours, peer = measured[name]
        value = figure(scenario.name, ours, peer)
        base = baseline["figures"].get(scenario.name)
        if name != scenario.name:
            base = None
        else:
            figures[name] = value
        if name != scenario.name:
            status, floor = f"--before {before.name if before else ''}", None
        elif value is None:
            status, floor = "ERROR", None
            failed.append(scenario.name)
        elif base is None:
            status, floor = "no baseline", None
        elif scenario.kind == "ms":
            floor = base + scenario.band
            status = "ok" if value <= floor else "FELL"
        else:
            floor = base * (1 - scenario.band)
            status = "ok" if value >= floor else "FELL"
        if status == "FELL":
            failed.append(scenario.name)
        unit = " ms" if scenario.kind == "ms" else "x"
        band = f"+{scenario.band:g} ms" if scenario.kind == "ms" else f"-{scenario.band:.0%}"
        rows.append(
            [
                name,
                _num(ours),
                _num(peer),
                "-" if value is None else f"{value:.2f}{unit}",
                "-" if WALL.get(name) is None else f"{WALL[name]:.2f}x",
                "-" if base is None else f"{base:.2f}{unit}",
                band,
                "-" if floor is None else f"{floor:.2f}{unit}",
                status,
            ]
        )
    print(
        f"# bench --check ({'quick, ' if args.quick else ''}best of {runs}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})\n"
    )
    print(
        table(
            ["scenario", "tinker_sync", "peer", "figure", "wall", "baseline", "band", "floor", "status"], rows
        )
    )
    print()
    for scenario in SCENARIOS:
        if scenario.name in measured:
            print(f"- {scenario.name}: {scenario.what}")
    for name, (ours, peer) in WALL_MS.items():
        print(f"- {name}, wall clock: tinker_sync {_num(ours)} ms, urllib3 {_num(peer)} ms (median)")
    if args.update_baseline:
        baseline = {
            "note": "ratios (tinker_sync / its peer in the same run) written by `python bench/run.py --check "
            "--update-baseline`; 'first event' is ms above the peer",
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
            ).stdout.strip(),
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "figures": {k: round(v, 3) for k, v in figures.items() if v is not None},
        }
        BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
        print(f"\nWrote {BASELINE.relative_to(REPO)}.")
        return 0
    if failed:
        print(
            f"\nFAILED: {', '.join(failed)} fell below the baseline by more than the band (or did not run)."
        )
        return 1
    print("\nAll figures within their bands.")
    return 0


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
