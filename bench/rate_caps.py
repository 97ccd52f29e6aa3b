"""The mock server's per-connection rate cap, measured: ``python bench/rate_caps.py [--connections N]``.

``MockTinkerServer(rate_limit=R)`` paces each connection with its own token bucket, so N connections at
once should receive about N times what one receives (as an object store's per-connection cap behaves).
That is a matter of elapsed time, which a loaded machine distorts, so it is measured here rather than
asserted in tests (``tests/test_testing_transport.py`` keeps the load-proof lower bounds).
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time

from tinker_sync.testing import MockTinkerServer

MiB = 1 << 20


def timed_download(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.monotonic()
    conn.request("GET", path)
    conn.getresponse().read()
    conn.close()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2 * MiB, help="bytes per second per connection")
    parser.add_argument("--size", type=int, default=MiB, help="bytes per download")
    args = parser.parse_args()
    path = f"/test/bytes?size={args.size}"
    with MockTinkerServer(rate_limit=args.rate) as server:
        one = timed_download(server.port, path)
        threads = [
            threading.Thread(target=timed_download, args=(server.port, path)) for _ in range(args.connections)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        together = time.monotonic() - started
    speedup = (args.connections * args.size / together) / (args.size / one)
    print(f"one connection: {args.size / one / MiB:.2f} MiB/s (cap {args.rate / MiB:.2f} MiB/s)")
    print(
        f"{args.connections} connections: {args.connections * args.size / together / MiB:.2f} MiB/s, "
        f"{speedup:.2f}x one (ideal {args.connections}x)"
    )


if __name__ == "__main__":
    main()
