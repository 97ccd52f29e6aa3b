"""``python -m tinker_sync.testing [--port N] [--api-key K]``: run the mock server in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinker_sync.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--api-key", default="tml-test-key")
    args = parser.parse_args(argv)

    from ._server import MockTinkerServer

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with MockTinkerServer(api_key=args.api_key, host=args.host, port=args.port) as server:
        print(f"Mock Tinker server at {server.url} (api key {args.api_key})", flush=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
