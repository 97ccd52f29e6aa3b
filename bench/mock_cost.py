"""The mock server's own CPU per request: ``python bench/mock_cost.py [--requests N] [--before DIR]``.

Every test and every training bench talks to ``tinker_sync.testing``'s mock, and both clients of
``bench/training.py`` share one, so its cost per request is part of every figure there. This sends N
requests pipelined on one keep-alive connection (each with the official SDK's 18 header fields) and
reports the CPU time of the process per request: the mock's handler thread does nearly all of it (the
client side is one ``sendall`` and a ``recv`` loop). CPU time, not wall time: it holds up when other
work shares the machine. Each figure is the best of ``--runs`` fresh processes.

Routes: ``healthz`` (the wire alone: reading the head, routing, answering), ``asample`` by base model
(a SampleRequest decoded, a fake model's tokens drawn, a future made) and ``retrieve_future`` (polls of
those futures), and the same two on a sampling session as the burst of ``bench/training.py`` sends them
(``seq_id``s, results in protobuf). ``--before DIR`` runs an older checkout's mock (a tree with
``tinker_sync/``) beside this one, interleaved.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROUTES = ("healthz", "asample", "retrieve_future", "session_asample", "session_retrieve_future")
SDK_FIELDS = {
    "Host": "127.0.0.1",
    "Accept-Encoding": "identity",
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": "Tinker/Python 0.38.0",
    "X-Stainless-Lang": "python",
    "X-Stainless-Package-Version": "0.38.0",
    "X-Stainless-OS": "Linux",
    "X-Stainless-Arch": "x64",
    "X-Stainless-Runtime": "CPython",
    "X-Stainless-Runtime-Version": "3.11.7",
    "x-stainless-retry-count": "0",
    "x-stainless-read-timeout": "60",
    "X-Tinker-Sampling-Backpressure": "1",
}
SAMPLE = {
    "num_samples": 1,
    "prompt": {"chunks": [{"tokens": list(range(32)), "type": "encoded_text"}]},
    "sampling_params": {"max_tokens": 16, "seed": 1},
    "base_model": "Qwen/Qwen3-8B",
}


def request(method: str, path: str, api_key: str, i: int, body: bytes = b"", accept: str = "") -> bytes:
    fields = {**SDK_FIELDS, "X-API-Key": api_key, "X-Idempotency-Key": f"stainless-python-retry-{i}"}
    if accept:
        fields["Accept"] = accept
    if body:
        fields["Content-Length"] = str(len(body))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body


def pipelined(port: int, data: bytes, answers: int) -> bytes:
    """Send ``data`` on one connection, read until ``answers`` responses came; return what came."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        received: list[bytes] = []

        def read() -> None:
            seen = 0
            tail = b""
            while seen < answers:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received.append(chunk)
                window = tail + chunk  # a status line may span two reads
                seen += window.count(b"HTTP/1.1 ") - tail.count(b"HTTP/1.1 ")
                tail = window[-16:]

        reader = threading.Thread(target=read)
        reader.start()
        sock.sendall(data)
        reader.join()
    return b"".join(received)


def sampling_session(port: int, api_key: str) -> str:
    """A session and a sampling session on it (as a client's first calls make them): its id."""

    def call(path: str, body: dict[str, object]) -> dict[str, str]:
        answer = pipelined(port, request("POST", path, api_key, 0, json.dumps(body).encode()), 1)
        result: dict[str, str] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        return result

    session = call("/api/v1/create_session", {"sdk_version": "0.38.0", "tags": []})["session_id"]
    body = {"session_id": session, "sampling_session_seq_id": 0, "base_model": SAMPLE["base_model"]}
    return call("/api/v1/create_sampling_session", body)["sampling_session_id"]


def child(route: str, n: int) -> float:
    """CPU microseconds per request of ``route`` (this process), the mock imported from sys.path."""
    from tinker_sync.testing import MockTinkerServer

    with MockTinkerServer() as server:
        key = server.api_key
        if route == "healthz":
            data = b"".join(request("GET", "/api/v1/healthz", key, i) for i in range(n))
        else:
            sample = SAMPLE
            if route.startswith("session_"):  # as the burst samples: on a sampling session, seq ids
                sampler = sampling_session(server.port, key)
                sample = {**SAMPLE, "base_model": None, "sampling_session_id": sampler}
            data = b"".join(
                request("POST", "/api/v1/asample", key, i, json.dumps({**sample, "seq_id": i + 1}).encode())
                if route.startswith("session_")
                else request("POST", "/api/v1/asample", key, i, json.dumps(sample).encode())
                for i in range(n)
            )
            if route.endswith("retrieve_future"):
                answers = pipelined(server.port, data, n)
                ids = [m.decode() for m in re.findall(rb'"request_id":"([^"]+)"', answers)]
                assert len(ids) == n, len(ids)
                accept = "application/x-protobuf" if route.startswith("session_") else ""
                data = b"".join(
                    request(
                        "POST",
                        "/api/v1/retrieve_future",
                        key,
                        i,
                        json.dumps({"request_id": r}).encode(),
                        accept,
                    )
                    for i, r in enumerate(ids)
                )
        started = time.process_time()
        answers = pipelined(server.port, data, n)
        spent = time.process_time() - started
        assert answers.count(b"HTTP/1.1 200 OK\r\n") == n
    return spent / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", help="an older checkout (a directory with tinker_sync/) beside this one")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--child", nargs=3, metavar=("TREE", "ROUTE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tree, route, n = args.child
        sys.path.insert(0, tree)
        print(f"{child(route, int(n)):.1f}")
        return
    trees = {"this": str(HERE.parent)}
    if args.before:
        trees["before"] = str(Path(args.before).resolve())
    for route in args.routes.split(","):
        best: dict[str, float] = {}
        for _ in range(args.runs):
            for name, tree in trees.items():  # interleaved: the same moment's load for both
                run = [sys.executable, __file__, "--child", tree, route, str(args.requests)]
                us = float(subprocess.run(run, capture_output=True, text=True, check=True).stdout)
                best[name] = min(best.get(name, us), us)
        figures = "  ".join(f"{name} {us:6.1f} us" for name, us in best.items())
        print(f"{route:24} CPU per request (best of {args.runs}): {figures}", flush=True)


if __name__ == "__main__":
    main()
