"""Training and sampling, tinker_sync beside the official SDK on one mock: ``python bench/training.py``.

Scenarios (each client a fresh subprocess; the mock in its own process):
- ``burst``: N in-flight ``sample()`` futures with a D s server delay: seconds to all results, RSS
  above the post-setup level (VmHWM - VmRSS after setup), threads, TCP connections the mock accepted;
  where the time beyond D goes: ``last_sent_s`` (from the first ``sample()`` call until the mock had
  the last request: all results can come no sooner than D after it), ``cpu_s`` (the client's CPU
  seconds, user + system, from the first call to the last result) and ``mock_cpu_s`` (the mock's);
- ``burst`` also runs for ``urllib3``: the same burst as bare urllib3 does it (2 threads POST the
  samples, 8 hold one ``retrieve_future`` each, nothing decoded but the handle), the floor of the
  design: what urllib3 and http.client cost for the 2,000 requests, with no client around them;
- ``sequential``: ``sample().result()`` one after another with no server delay: p50 / p90 ms;
- ``latency``: ``sample().result()`` one after another with a 50 ms server delay (the result becomes
  ready while the poll is held): server completion (the mock's record) to ``.result()`` return, p50 /
  p99 ms; the burst reports the same figure under 1,000 in flight;
- ``encode``: a ``forward_backward`` of 2,048 datums x 512 tokens: encode ms and bytes (the official
  SDK's ``request_conv`` + ``SerializeToString``; tinker_sync's ``_proto``);
- ``many`` (tinker_sync only, with ``--many N``): ``sample_many`` over N prompts (100,000 for the
  issue's figure): seconds, and peak RSS above the post-setup level, which must not grow with N.

Each result carries ``load``, the machine's 1-minute load average as its scenario ended (a busy machine
slows both clients: compare figures of similar load, or the best of several runs for both alike).

Options: ``--official PYTHON`` (the official SDK's venv python; default: ``$TINKER_SYNC_OFFICIAL_VENV``'s, else
the one tests/_official.py caches; skipped when absent), ``--n 1000``, ``--delay 2.0``, ``--sequential 100``, ``--clients tinker_sync,official``,
``--scenarios burst,latency,sequential,encode``, ``--pin`` (the mock on the last CPU, the clients
on the others: a server of its own, as the real one is; on 2 cores, a mock free to share the
client's core measures where the scheduler puts a loopback ping-pong as much as the client),
``--latency 0.02`` (the mock waits that long before every answer: a server 20 ms away, where
the client's concurrency, not its CPU, sets the pace), ``--retrieve-futures`` (the mock's
``sample_use_retrieve_futures`` flag on: each sample waits for its session's ``retrieve_futures`` long
poll, then one ``retrieve_future`` fetches it, in both clients). Prints one JSON object per client
and a table. Timings are never asserted in tests: this is where they are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
BASE = "Qwen/Qwen3-8B"


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


# -- the mock, driven over stdin ------------------------------------------------------------------------


def _pin(mock: bool) -> None:
    """``--pin``: the mock on the last CPU, each client on the others (the mock plays a server of
    its own: sharing a client's cores, the scheduler's placement of a loopback ping-pong would be
    measured, not the client)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus[-1:] if mock else cpus[:-1])


def serve(retrieve_futures: bool, pin: bool = False) -> None:
    if pin:
        _pin(mock=True)
    sys.path.insert(0, str(HERE.parent.parent))
    from tinker_sync.testing import MockTinkerServer

    with MockTinkerServer() as server:
        server.promises.hold = 30.0
        server.promises.futures_hold = 30.0  # as the real server holds a retrieve_futures poll
        server.client_config["sample_use_retrieve_futures"] = retrieve_futures
        print(server.url, flush=True)
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "delay":
                server.training.delays["Sample"] = float(arg)
            elif command == "latency":
                server.latency = float(arg)
            elif command == "clear":
                server.clear()
            elif command == "stats":
                print(json.dumps({"connections": server.connections}), flush=True)
                continue
            elif command == "cpu":
                print(json.dumps(time.process_time()), flush=True)
                continue
            elif command == "completions":
                print(json.dumps(server.promises.completion_times()), flush=True)
                continue
            elif command == "quit":
                break
            print("ok", flush=True)


# -- the clients ------------------------------------------------------------------------------------------


def client(kind: str, url: str, scenario: str, n: int) -> dict[str, Any]:
    if kind == "official":
        os.environ["TINKER_TELEMETRY"] = "0"
        import tinker
        from tinker import types
    else:
        sys.path.insert(0, str(HERE.parent.parent))
        import tinker_sync as tinker  # type: ignore[no-redef]
        from tinker_sync import types  # type: ignore[no-redef]

    if scenario == "encode":
        return encode(kind, types)
    service = tinker.ServiceClient(base_url=url, api_key="tml-test-key")
    sampler = service.create_sampling_client(base_model=BASE).result()
    prompt = types.ModelInput.from_ints(list(range(32)))
    params = types.SamplingParams(max_tokens=16, seed=1)
    if kind == "urllib3":
        return bare_burst(service, sampler.sampling_session_id, url, n)
    sampler.sample(prompt, 1, params).result()
    rss0 = _status("VmRSS")
    out: dict[str, Any] = {"client": kind, "scenario": scenario}
    if scenario == "many":
        start = time.perf_counter()
        prompts = (types.ModelInput.from_ints([i % 1000, 7]) for i in range(n))
        count = sum(1 for _ in sampler.sample_many(prompts, 1, params, window=64))
        out.update(prompts=count, seconds=round(time.perf_counter() - start, 1))
        out["rss_above_setup_mb"] = round((_status("VmHWM") - rss0) / 2**20, 1)
    elif scenario == "burst":
        cpu0 = time.process_time()
        out["started_at"] = time.time()
        start = time.perf_counter()
        futures = [sampler.sample(prompt, 1, params) for _ in range(n)]
        out["submit_s"] = round(time.perf_counter() - start, 3)
        returned: dict[str, float] = {}
        for future in futures:
            future.result()
            _returned(returned, future)
        out["all_results_s"] = round(time.perf_counter() - start, 3)
        out["cpu_s"] = round(time.process_time() - cpu0, 3)
        out["returned"] = returned
        out["rss_above_setup_mb"] = round((_status("VmHWM") - rss0) / 2**20, 1)
        out["threads"] = threading.active_count()
    elif scenario == "latency":
        returned: dict[str, float] = {}
        for _ in range(n):
            future = sampler.sample(prompt, 1, params)
            future.result()
            _returned(returned, future)
        out["returned"] = returned
    else:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            sampler.sample(prompt, 1, params).result()
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        out["p50_ms"] = round(statistics.median(times), 2)
        out["p90_ms"] = round(times[int(len(times) * 0.9)], 2)
    if kind == "official":
        service.close("success").result()
    else:
        service.close()
    return out


def bare_burst(service: Any, sampling_session_id: str, url: str, n: int) -> dict[str, Any]:
    """The burst as bare urllib3 does it, the floor of the design: 2 threads POST the samples, 8 hold
    one ``retrieve_future`` each (oldest first) until its protobuf answer, nothing decoded but the
    handle's JSON; tinker_sync's session and headers (the same bytes on the wire). No retries, no
    futures, no ordering: the HTTP alone."""
    import collections
    import uuid

    import urllib3

    headers = dict(service._engine.wire._template("/api/v1/asample")[1])
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    pool = urllib3.HTTPConnectionPool(
        host, int(port), maxsize=10, timeout=urllib3.Timeout(connect=5, read=60)
    )
    base = {
        "num_samples": 1,
        "prompt": {"chunks": [{"tokens": list(range(32)), "type": "encoded_text"}]},
        "sampling_params": {"max_tokens": 16, "seed": 1, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
        "sampling_session_id": sampling_session_id,
        "type": "sample",
    }
    seqs = iter(range(1_000_000, 1_000_000 + n))
    ids: collections.deque[str] = collections.deque()
    cond = threading.Condition()
    done = [0]

    def post(path: str, body: dict[str, Any], extra: dict[str, str]) -> tuple[str, bytes]:
        sent = {**headers, **extra, "X-Idempotency-Key": str(uuid.uuid4())}
        raw = json.dumps(body).encode()
        answer = pool.urlopen("POST", path, body=raw, headers=sent, preload_content=False, retries=False)
        content = answer.read()
        answer.release_conn()
        if answer.status != 200:
            raise RuntimeError(f"{path} answered {answer.status}: {content[:200]!r}")
        return answer.headers.get("content-type", ""), content

    def guarded(work: Any) -> Any:
        def run() -> None:
            try:
                work()
            except BaseException as error:  # a failed thread would leave the others waiting: end it all
                print(f"urllib3 burst: {error!r}", file=sys.stderr, flush=True)
                os._exit(1)

        return run

    def submit() -> None:
        while (seq := next(seqs, None)) is not None:
            _, handle = post(
                "/api/v1/asample", {**base, "seq_id": seq}, {"X-Tinker-Sampling-Backpressure": "1"}
            )
            with cond:
                ids.append(json.loads(handle)["request_id"])
                cond.notify()

    def poll() -> None:
        extra = {"Accept": "application/x-protobuf", "X-Tinker-Request-Type": "Sample"}
        while True:
            with cond:
                while not ids:
                    if done[0] >= n:
                        return
                    cond.wait(0.05)
                request_id = ids.popleft()
            body = {"request_id": request_id, "allow_metadata_only": True}
            while "protobuf" not in post("/api/v1/retrieve_future", body, extra)[0]:
                pass
            with cond:
                done[0] += 1

    cpu0 = time.process_time()
    started_at, start = time.time(), time.perf_counter()
    threads = [threading.Thread(target=submit) for _ in range(2)] + [
        threading.Thread(target=poll) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = {"client": "urllib3", "scenario": "burst", "started_at": started_at}
    out["all_results_s"] = round(time.perf_counter() - start, 3)
    out["cpu_s"] = round(time.process_time() - cpu0, 3)
    service.close()
    return out


def _request_id(future: Any) -> str | None:
    """The server's id of a sample's future, to match it with the mock's completion time (tinker_sync's
    ``Future.request_id``; the official SDK's public future does not show it: no figure for it)."""
    request_id = getattr(future, "request_id", None)
    return request_id if isinstance(request_id, str) else None


def _returned(returned: dict[str, float], future: Any) -> None:
    request_id = _request_id(future)
    if request_id is not None:
        returned[request_id] = time.time()


def latencies(returned: dict[str, float], completed: dict[str, float]) -> dict[str, float]:
    """Server completion to ``.result()`` return, p50 / p99 ms, over the futures whose id is known."""
    gaps = sorted((at - completed[rid]) * 1000 for rid, at in returned.items() if rid in completed)
    if not gaps:
        return {}
    return {
        "completion_to_result_p50_ms": round(statistics.median(gaps), 1),
        "completion_to_result_p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 1),
    }


def encode(kind: str, types: Any) -> dict[str, Any]:
    data = [
        types.Datum(
            model_input=types.ModelInput.from_ints([(i * 7 + j) % 150_000 for j in range(512)]),
            loss_fn_inputs={
                "target_tokens": [(i * 7 + j + 1) % 150_000 for j in range(512)],
                "weights": [1.0] * 512,
            },
        )
        for i in range(2048)
    ]
    best = float("inf")
    size = 0
    for _ in range(3):
        start = time.perf_counter()
        if kind == "official":
            from tinker.proto.request_conv import forward_backward_request_to_proto

            request = types.ForwardBackwardRequest(
                forward_backward_input=types.ForwardBackwardInput(data=data, loss_fn="cross_entropy"),
                model_id="s:train:0",
                seq_id=1,
            )
            body = forward_backward_request_to_proto(request).SerializeToString()
        else:
            from tinker_sync._proto import encode_forward_backward_request

            body = encode_forward_backward_request("s:train:0", 1, data, "cross_entropy")
        best = min(best, time.perf_counter() - start)
        size = len(body)
    return {"client": kind, "scenario": "encode", "encode_ms": round(best * 1000, 1), "bytes": size}


# -- the driver -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    cached = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinker-sync/venv-official-0.38.0"
    )
    venv = Path(os.environ.get("TINKER_SYNC_OFFICIAL_VENV") or cached)
    parser.add_argument("--official", default=str(venv / "bin" / "python"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--many", type=int, default=0, help="sample_many over this many prompts (0: skipped)")
    parser.add_argument(
        "--clients", default="tinker_sync,official,urllib3", help="which clients, comma-separated"
    )
    parser.add_argument(
        "--scenarios", default="burst,latency,sequential,encode", help="which, comma-separated"
    )
    parser.add_argument(
        "--retrieve-futures",
        action="store_true",
        help="the mock's sample_use_retrieve_futures flag on: samples wait for their session's long poll",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds the mock waits before every answer: a far server's round trip (0.02: 20 ms)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the mock on the last CPU, the clients on the others (a server of its own)",
    )
    args = parser.parse_args()
    if args.serve:
        return serve(args.retrieve_futures, args.pin)
    if args.client:
        if args.pin:
            _pin(mock=False)
        print(json.dumps(client(args.client, args.url, args.scenario, args.n)))
        return None

    mock = subprocess.Popen(
        [
            sys.executable,
            str(HERE),
            "--serve",
            *(["--retrieve-futures"] if args.retrieve_futures else []),
            *(["--pin"] if args.pin else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert mock.stdin is not None and mock.stdout is not None
    url = mock.stdout.readline().strip()

    def tell(command: str) -> str:
        assert mock.stdin is not None and mock.stdout is not None
        mock.stdin.write(command + "\n")
        mock.stdin.flush()
        return mock.stdout.readline().strip()

    tell(f"latency {args.latency}")

    pythons = {"tinker_sync": sys.executable, "urllib3": sys.executable}
    if Path(args.official).exists():
        pythons["official"] = args.official
    pythons = {kind: python for kind, python in pythons.items() if kind in args.clients.split(",")}
    results = []
    try:
        scenarios = [
            ("burst", args.n, args.delay),
            ("latency", args.sequential, 0.05),
            ("sequential", args.sequential, 0.0),
            ("encode", 0, 0.0),
        ]
        scenarios = [s for s in scenarios if s[0] in args.scenarios.split(",")]
        if args.many:
            scenarios.append(("many", args.many, 0.0))
        for scenario, n, delay in scenarios:  # the clients in turn for each scenario: the same moment's load
            for kind, python in pythons.items():
                if (scenario == "many" and kind != "tinker_sync") or (
                    scenario != "burst" and kind == "urllib3"
                ):
                    continue
                tell(f"delay {delay}")
                tell("clear")
                mock_cpu = float(tell("cpu"))
                run = [
                    python,
                    str(HERE),
                    "--client",
                    kind,
                    "--url",
                    url,
                    "--scenario",
                    scenario,
                    "--n",
                    str(n),
                    *(["--pin"] if args.pin else []),
                ]
                done = subprocess.run(run, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    print(f"{kind} {scenario} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                returned = result.pop("returned", None)
                started_at = result.pop("started_at", None)
                completed = json.loads(tell("completions")) if returned is not None else {}
                if returned is not None:
                    result.update(latencies(returned, completed))
                if scenario == "burst":
                    if started_at is not None and completed:  # each sample completes `delay` after it came
                        result["last_sent_s"] = round(max(completed.values()) - delay - started_at, 3)
                    result["mock_cpu_s"] = round(float(tell("cpu")) - mock_cpu, 3)
                    result["tcp_connections"] = json.loads(tell("stats"))["connections"]
                    result["n"], result["delay_s"] = n, delay
                    result["retrieve_futures"] = args.retrieve_futures
                    result["latency_s"] = args.latency
                result["load"] = round(os.getloadavg()[0], 1)  # the 1-minute load average as it ended
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        tell("quit")
        mock.wait(30)
    for result in results:
        figures = ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("client", "scenario"))
        print(f"{result['client']:12} {result['scenario']:11} {figures}")
    burst = {r["client"]: r["all_results_s"] for r in results if r["scenario"] == "burst"}
    for peer in ("official", "urllib3"):
        if "tinker_sync" in burst and peer in burst:
            print(f"burst: tinker_sync / {peer} = {burst['tinker_sync'] / burst[peer]:.2f}x")


if __name__ == "__main__":
    main()
