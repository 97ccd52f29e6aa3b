"""``python -m tinker_sync.testing [--port N] [--api-key K] [--host H] [--empty]``: run the mock server
in the foreground, with the demo data unless ``--empty``.

It prints where it listens, then the ``export`` line that points a shell (the client, the CLI,
every example of the docs) at it.
"""

from __future__ import annotations

import argparse
import shlex
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
        print(f"Mock Tinker server at {server.url} (api key {args.api_key})")
        print(f"export TINKER_API_KEY={shlex.quote(args.api_key)} TINKER_BASE_URL={shlex.quote(server.url)}")
        print("(paste that line into the shell that runs the client; Ctrl-C stops the server)", flush=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
