"""``client.futures.retrieve`` and ``client.sampling`` against the mock server.

Futures: every answer ``/retrieve_future`` can give, as a table (try_again, 408, 5xx,
429, a reset connection, a failure), then the deadline, the views, and the budget.
Waits are recorded by the ``client`` fixture (``waits``), never slept, except where a
test measures the deadline with real time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

import tinker_sync
from tinker_sync import (
    APIError,
    APIResponse,
    APITimeoutError,
    InternalServerError,
    NotFoundError,
    RequestFailedError,
)
from tinker_sync.resources.futures import POLL_INTERVAL
from tinker_sync.resources.sampling import SampleStream
from tinker_sync.testing import Fault, MockTinkerServer
from tinker_sync.types import CreateModelResponse, SampleResponse, SampleStreamChunk, SamplingParams

RESULT = {"model_id": "run-001", "type": "create_model"}


def try_again(state: str = "active") -> dict[str, Any]:
    return {"type": "try_again", "request_id": "f", "queue_state": state}


# The demo dataset (ids in docs/TESTING.md) behind ``tinker_server`` and the ``client`` on it; a
# client mistake the server records fails the test (conftest.py).
pytestmark = pytest.mark.demo_data


def polls(server: MockTinkerServer) -> int:
    return sum(r.path == "/api/v1/retrieve_future" for r in server.requests)


# (answers, faults on the wire, expected waits: "0" at once, "b" a backoff > 0, a number exactly)
CASES = {
    "try_again": (
        [try_again(), try_again("paused_capacity"), RESULT],
        [],
        [POLL_INTERVAL, 2 * POLL_INTERVAL],
    ),
    "408_at_once": ([Fault(status=408), Fault(status=408), RESULT], [], []),
    "5xx_at_once": ([Fault(status=503), RESULT], [], ["0"]),
    "5xx_after_answers_at_once": ([try_again(), Fault(status=500), RESULT], [], [POLL_INTERVAL, "0"]),
    "5xx_in_a_row_back_off": (
        [Fault(status=502), Fault(status=502), Fault(status=502), RESULT],
        [],
        ["0", "b", "b"],
    ),
    "429_backs_off_with_retry_after": ([Fault(status=429, retry_after=2), RESULT], [], [2.0]),
    "connection_reset_backs_off": ([RESULT], [Fault(reset_after=0)], ["b"]),
    "result_cut_mid_body_is_not_lost": (
        [try_again(), RESULT],
        [Fault(), Fault(reset_after=5)],
        [POLL_INTERVAL, "b"],
    ),
}


@pytest.mark.parametrize(("answers", "faults", "expected"), CASES.values(), ids=CASES.keys())
def test_retrieve_answers(client, tinker_server, waits, answers, faults, expected):
    tinker_server.add_future("f", *answers)
    if faults:
        tinker_server.script("/api/v1/retrieve_future", *faults)
    result = client.futures.retrieve("f", cast_to=CreateModelResponse)
    assert result == CreateModelResponse(model_id="run-001")
    assert len(waits) == len(expected)
    for wait, want in zip(waits, expected, strict=True):
        if want == "0":
            assert wait == 0
        elif want == "b":
            assert 0 < wait <= 10
        else:
            assert wait == pytest.approx(want)
    assert polls(tinker_server) == len(answers) + sum(f.reset_after is not None for f in faults)


def test_queue_states_are_logged_and_reported_when_they_change(client, tinker_server, waits, caplog):
    tinker_server.add_future(
        "f", try_again(), try_again(), try_again("paused_capacity"), Fault(status=408), try_again(), RESULT
    )
    seen: list[str] = []
    with caplog.at_level(logging.INFO, logger="tinker_sync"):
        assert client.futures.retrieve("f", cast_to=dict, on_queue_state=seen.append) == RESULT
    assert seen == ["active", "paused_capacity", "active"]  # the 408 carries "active": a change back
    logged = [r.getMessage() for r in caplog.records if "queue state" in r.getMessage()]
    assert logged == [
        "Future f: queue state active",
        "Future f: queue state paused_capacity",
        "Future f: queue state active",
    ]
    # waits between try_agains grow, capped
    assert waits == [POLL_INTERVAL * 2**i for i in range(4)]


def test_a_raising_callback_never_breaks_the_poll(client, tinker_server, waits):
    tinker_server.add_future("f", try_again(), RESULT)

    def broken(state: str) -> None:
        raise RuntimeError("callback bug")

    assert client.futures.retrieve("f", cast_to=dict, on_queue_state=broken) == RESULT


@pytest.mark.parametrize(
    ("failure", "category"),
    [
        ({"error": "bad input", "category": "user"}, "user"),
        ({"error": "out of memory", "category": "server"}, "server"),
        ({"error": "who knows"}, "unknown"),
    ],
)
def test_a_failed_future_raises_request_failed_error(client, tinker_server, waits, failure, category):
    tinker_server.add_future("f", try_again(), failure)
    with pytest.raises(RequestFailedError) as raised:
        client.futures.retrieve("f", cast_to=dict)
    assert (raised.value.request_id, raised.value.category) == ("f", category)
    assert failure["error"] in str(raised.value) and "f" in str(raised.value)


def test_demo_futures(client, tinker_server, waits):
    assert client.futures.retrieve("future-ok", cast_to=CreateModelResponse).model_id == "run-001"
    with pytest.raises(RequestFailedError, match="out of memory"):
        client.futures.retrieve("future-failed", cast_to=dict)
    with pytest.raises(NotFoundError):
        client.futures.retrieve("no-such-future", cast_to=dict)


def test_persistent_5xx_spends_the_retry_budget(client, tinker_server, waits):
    tinker_server.add_future("f", Fault(status=500))  # the last answer repeats
    with pytest.raises(InternalServerError):
        client.with_options(max_retries=3).futures.retrieve("f", cast_to=dict)
    assert polls(tinker_server) == 4 and len(waits) == 3


def test_the_deadline_names_the_future_and_the_time_waited(tinker_server):
    tinker_server.add_future("slow-future", try_again("paused_capacity"))  # never ready
    with tinker_sync.Client(api_key=tinker_server.api_key, base_url=tinker_server.url) as client:
        start = time.monotonic()
        with pytest.raises(APITimeoutError) as raised:
            client.futures.retrieve("slow-future", cast_to=dict, timeout=0.5)
        elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 10  # it waits its timeout; the future never comes, so no deadline: for ever
    message = str(raised.value)
    waited = re.search(r"had no result after (\d+\.\d) s", message)  # the time it waited, load or not
    assert "slow-future" in message and waited is not None, message
    assert 0.5 <= float(waited.group(1)) <= round(elapsed, 1), message
    assert "last queue state paused_capacity" in message
    assert raised.value.cause == "deadline"


def test_the_deadline_cuts_a_long_retry_after(client, tinker_server, waits):
    tinker_server.add_future("f", Fault(status=429, retry_after=30), RESULT)
    with pytest.raises(APITimeoutError, match="Future f had no result"):
        client.futures.retrieve("f", cast_to=dict, timeout=5)
    assert waits == []  # no wait past the deadline


@pytest.mark.parametrize("timeout", [0, 0.0, -1])
def test_a_zero_timeout_polls_once(client, tinker_server, waits, timeout):
    tinker_server.add_future("done", RESULT)
    tinker_server.add_future("queued", try_again("active"))
    assert client.futures.retrieve("done", cast_to=dict, timeout=timeout) == RESULT
    start = time.monotonic()
    with pytest.raises(
        APITimeoutError,
        match=r"Future queued had no result after (\d+\.\d) s \(1 polls, last queue state active\)",
    ) as raised:
        client.futures.retrieve("queued", cast_to=dict, timeout=timeout)
    elapsed = time.monotonic() - start
    assert polls(tinker_server) == 2 and waits == []
    # the time it names is the one poll's (0.0 s on an idle machine, more under load), never a wait
    waited = re.search(r"after (\d+\.\d) s", str(raised.value))
    assert waited is not None and float(waited.group(1)) <= round(elapsed, 1)


def test_the_client_total_timeout_is_the_default_deadline(tinker_server):
    tinker_server.add_future("f", try_again())
    timeout = tinker_sync.Timeout(connect=1, read=5, total=0.3)
    with tinker_sync.Client(
        api_key=tinker_server.api_key, base_url=tinker_server.url, timeout=timeout
    ) as client:
        with pytest.raises(APITimeoutError, match="after 0.3"):
            client.futures.retrieve("f", cast_to=dict)


def test_views_of_a_future_are_its_last_poll(client, tinker_server, waits):
    tinker_server.add_future("f", try_again(), try_again(), RESULT)
    response = client.with_raw_response.futures.retrieve("f", cast_to=CreateModelResponse)
    assert isinstance(response, APIResponse)
    assert response.json() == RESULT and response.parse().model_id == "run-001"
    assert response.http_request.url.endswith("/api/v1/retrieve_future")
    tinker_server.add_future("g", try_again(), RESULT)
    with client.with_streaming_response.futures.retrieve("g", cast_to=dict) as streamed:
        assert streamed.parse() == RESULT
    assert streamed.is_closed and polls(tinker_server) == 5


# -- sampling ---------------------------------------------------------------------------------------


def test_stream_sample_is_lazy_and_done_ends_it(client, tinker_server):
    stream = client.sampling.stream_sample("Hello", max_tokens=4)
    assert isinstance(stream, SampleStream) and isinstance(stream, tinker_sync.EventStream)
    assert tinker_server.requests == []
    chunks = list(stream)
    assert [c.token for c in chunks[:-1]] == ["tok0", "tok1", "tok2", "tok3"]
    assert (chunks[-1].event_type, chunks[-1].finish_reason, chunks[-1].total_tokens) == ("done", "length", 4)
    handshake, request = tinker_server.requests  # the handshake went first, once
    assert handshake.path == "/api/v1/client/config"
    assert request.json() == {"prompt": "Hello", "max_tokens": 4}
    assert "text/event-stream" in request.headers["accept"]


def test_stream_sample_request_body(client, tinker_server):
    params = SamplingParams(max_tokens=3, temperature=0.5)
    text = client.sampling.stream_sample([1, 2, 3], sampling_params=params, base_model="Qwen/Qwen3-8B").text()
    assert text == "tok0tok1tok2"
    assert tinker_server.requests[-1].json() == {
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
        "sampling_params": {"max_tokens": 3, "temperature": 0.5},
        "base_model": "Qwen/Qwen3-8B",
    }


def test_an_error_event_raises_after_the_tokens_before_it(client):
    got: list[str | None] = []
    with pytest.raises(APIError, match="boom"):
        for chunk in client.sampling.stream_sample("Hi", max_tokens=8, extra_body={"error_at": 3}):
            got.append(chunk.token)
    assert got == ["tok0", "tok1", "tok2"]


def sse_stream(client: tinker_sync.Client, body: bytes) -> Iterator[SampleStream]:
    with client.stream("POST", "/test/sse-raw", content=body) as response:
        yield SampleStream(source=response.event_source(), cast_to=SampleStreamChunk)


def test_an_error_chunk_without_an_error_event_raises_too(client):
    body = (
        b'data: {"event_type": "token", "token": "a"}\n\n'
        b'data: {"event_type": "error", "message": "sampler crashed"}\n\n'
        b'data: {"event_type": "token", "token": "never"}\n\n'
    )
    got = []
    with pytest.raises(APIError, match="The sampler failed: sampler crashed") as raised:
        for stream in sse_stream(client, body):
            for chunk in stream:
                got.append(chunk.token)
    assert got == ["a"]
    assert raised.value.body == {
        "event_type": "error",
        "token": None,
        "token_id": None,
        "index": None,
        "logprob": None,
        "finish_reason": None,
        "total_tokens": None,
        "message": "sampler crashed",
    }


def test_done_ends_the_stream_even_if_the_server_goes_on(client):
    body = b'data: {"event_type": "token", "token": "a"}\n\ndata: {"event_type": "done"}\n\ndata: {"event_type": "token"}\n\n'
    for stream in sse_stream(client, body):
        assert [c.event_type for c in stream] == ["token", "done"]
        assert stream.response is not None and stream.response.is_closed


def test_breaking_out_closes_the_connection(client, tinker_server):
    stream = client.sampling.stream_sample("Hi", max_tokens=1000, extra_body={"delay": 0.01})
    for chunk in stream:
        if chunk.index == 2:
            break
    stream.close()
    assert stream.response is not None and stream.response.is_closed


def test_a_break_alone_closes_the_connection(client, tinker_server):
    # No close(), no with block: the loop's end is enough, as for every event stream.
    stream = client.sampling.stream_sample("Hi", max_tokens=1000, extra_body={"delay": 0.01})
    for chunk in stream:
        if chunk.index == 2:
            break
    assert stream.response is not None and stream.response.is_closed
    assert list(stream) == []  # iterating again after the loop's end yields nothing


def test_with_block_sends_on_entry(client, tinker_server):
    with client.sampling.stream_sample("Hi", max_tokens=2) as stream:
        assert [r.path for r in tinker_server.requests] == ["/api/v1/client/config", "/api/v1/stream_sample"]
        assert stream.text() == "tok0tok1"


def test_sample_through_a_future(client, tinker_server, waits):
    params = SamplingParams(max_tokens=5, seed=7)
    first = client.sampling.sample(
        [1, 2, 3], sampling_params=params, num_samples=2, base_model="Qwen/Qwen3-8B"
    )
    assert isinstance(first, SampleResponse) and len(first.sequences) == 2
    assert all(len(s.tokens) == 5 and s.stop_reason == "length" for s in first.sequences)
    again = client.sampling.sample(
        [1, 2, 3], sampling_params=params, num_samples=2, base_model="Qwen/Qwen3-8B"
    )
    assert again == first  # seeded: the same request, the same answer
    assert polls(tinker_server) == 2 * 3  # future_polls=2 try_agains, then the result, each time
    asked = [r.json() for r in tinker_server.requests if r.path == "/api/v1/asample"][0]
    assert asked["prompt"] == {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]}
    assert asked["sampling_params"] == {"max_tokens": 5, "seed": 7}


def test_sample_of_a_missing_model_path_fails(client, tinker_server, waits):
    with pytest.raises(RequestFailedError) as raised:
        client.sampling.sample(
            [1], sampling_params=SamplingParams(max_tokens=2), model_path="tinker://nope/sampler_weights/x"
        )
    assert raised.value.category == "user"


def test_hooks_see_one_logical_call(tinker_server):
    seen: dict[str, list[Any]] = {"request": [], "response": [], "stream_end": []}
    hooks: Any = {name: [records.append] for name, records in seen.items()}
    with tinker_sync.Client(
        api_key=tinker_server.api_key, base_url=tinker_server.url, event_hooks=hooks, sleep=lambda s: None
    ) as client:
        client.sampling.sample([1], sampling_params=SamplingParams(max_tokens=2), base_model="Qwen/Qwen3-8B")
        assert [len(records) for records in seen.values()] == [1, 1, 1]
        assert seen["request"][0].url.endswith("/api/v1/asample")
        assert seen["stream_end"][0].attempts == 1 + 3  # the POST, two try_agains, the result
        client.futures.retrieve("future-ok", cast_to=dict)
        assert [len(records) for records in seen.values()] == [2, 2, 2]
        assert seen["request"][1].url.endswith("/api/v1/retrieve_future")
        assert seen["stream_end"][1].attempts == 3 and seen["stream_end"][1].error is None
