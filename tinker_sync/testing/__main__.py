"""``python -m tinker_sync.testing [--port N] [--api-key K] [--host H] [--empty]``: run the mock server
in the foreground, with the demo data unless ``--empty``."""

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
    parser.add_argument("--empty", action="store_true", help="start without the demo data")
    args = parser.parse_args(argv)

    from ._server import MockTinkerServer

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server = MockTinkerServer(api_key=args.api_key, host=args.host, port=args.port, demo_data=not args.empty)
    with server:
        print(f"Mock Tinker server at {server.url} (api key {args.api_key})", flush=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
