"""``tinker-sync demo``: the mock server in-process (imported only when the demo runs), a few
streamed sampling events, then a checkpoint download that survives an injected connection reset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import PROG, AddCommand, diagnostics, version
from ._progress import format_size
from .checkpoint import download_checkpoint


def _cmd_demo(args: argparse.Namespace) -> int:
    """The mock server in-process: a few streamed sampling events, then a checkpoint download that
    survives an injected connection reset."""
    from .._client import Client
    from ..testing import Fault, MockTinkerServer  # lazy: only the demo runs a server

    size = int(args.size * (1 << 20))
    # trust_env=False: the server is in this process, on loopback; a proxy from the environment could not reach it.
    with (
        MockTinkerServer() as server,
        Client(api_key=server.api_key, base_url=server.url, trust_env=False) as client,
    ):
        print(f"Mock Tinker server at {server.url}")
        print(version().removeprefix(f"{PROG} "))
        print("Streaming a sample (client.sampling.stream_sample):")
        for chunk in client.sampling.stream_sample("Hello", max_tokens=6):
            if chunk.event_type == "token":
                print(f"  token {chunk.index}: {chunk.token!r}")
            else:
                print(
                    f"  {chunk.event_type}: finish_reason={chunk.finish_reason} total_tokens={chunk.total_tokens}"
                )
        path = "tinker://demo-run/weights/demo"
        server.add_checkpoint(path, size=size, seed=1)
        server.script("/signed/", Fault(reset_after=size // 2))  # one connection reset mid-transfer
        print(
            f"Downloading {path} ({format_size(size)}); the server resets the connection halfway:", flush=True
        )
        target, total = download_checkpoint(client, path, args.output, True, diagnostics(args))
        resumed = [r for r in server.requests if r.path.startswith("/signed/") and "range" in r.headers]
        for request in resumed:
            print(f"Resumed after the reset with {request.headers['range']} (the extraction never noticed)")
        print(f"Checkpoint extracted to {target} ({format_size(total)}):")
        for file in sorted(p for p in Path(target).rglob("*") if p.is_file()):
            print(f"  {file.relative_to(target)}  {file.stat().st_size} bytes")
    return 0


def register(commands: Any, command: AddCommand) -> None:
    """Add ``demo`` to the commands."""
    demo = command(
        commands, "demo", _cmd_demo, help="run a local mock server: stream a sample, download a checkpoint"
    )
    demo.add_argument("--size", type=float, default=300, metavar="MIB", help="checkpoint size in MiB (300)")
    demo.add_argument(
        "-o", "--output", default="tinker-demo", metavar="DIR", help="where to put it (./tinker-demo)"
    )
