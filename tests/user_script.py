"""A user's script: the README's examples, as a user writes them, type-checked with ``mypy --strict``.

``assert_type`` pins what a user's editor and mypy see (no ``Any`` where the type
is known); ``test_user_script.py`` runs it against the mock server, so every line
also works. ``.ci/run`` type-checks it with the package (pyproject ``[tool.mypy]``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any, assert_type

import tinker_sync
from tinker_sync import (
    APIResponse,
    EventHooks,
    EventStream,
    ResponseContextManager,
    RetryInfo,
    ServerSentEvent,
    StreamedResponse,
    StreamEndInfo,
    Timeout,
)
from tinker_sync.resources.sampling import SampleStream
from tinker_sync.resources.types import CheckpointList, SampleStreamChunk
from tinker_sync.types import (
    Checkpoint,
    CheckpointArchiveUrl,
    CreateModelResponse,
    ExternalWeightsUrls,
    HealthResponse,
    SampleResponse,
    SamplingParams,
    ServerCapabilities,
    Session,
    SessionList,
    SyncReport,
    TrainingRun,
    TrainingRunList,
)


def main(api_key: str, base_url: str, workdir: pathlib.Path) -> None:
    client = tinker_sync.Client(api_key=api_key, base_url=base_url)

    # Plain calls: decoded JSON, or typed with cast_to.
    health = client.get("/api/v1/healthz", cast_to=dict[str, str])
    assert_type(health, dict[str, str])
    assert health == {"status": "ok"}

    # Server-Sent Events: a lazy generator of ServerSentEvent, or typed events.
    events = client.stream_post("/api/v1/stream_sample", json={"prompt": "Hi", "max_tokens": 4})
    assert_type(events, EventStream[ServerSentEvent])
    for event in events:
        assert_type(event, ServerSentEvent)
        assert isinstance(event.data, str)
    chunks = client.stream_post(
        "/api/v1/stream_sample", json={"prompt": "Hi", "max_tokens": 4}, cast_to=SampleStreamChunk
    )
    assert_type(chunks, EventStream[SampleStreamChunk])
    tokens = [chunk.token for chunk in chunks if chunk.event_type == "token"]
    assert_type(tokens, list[str | None])
    assert len(tokens) == 4

    # Raw bodies in bounded memory.
    with client.stream("GET", "/test/bytes?size=100000") as response:
        assert_type(response, StreamedResponse)
        total = 0
        for piece in response.iter_bytes(chunk_size=65536):
            assert_type(piece, bytes)
            total += len(piece)
    assert total == 100_000

    # Files: atomic, verified, resumable.
    path = client.download("/test/bytes?size=300000&checksum=md5", workdir / "blob.bin")
    assert_type(path, pathlib.Path)
    path = client.download("/test/bytes?size=3000000", workdir / "over-four.bin", connections=4)
    with client.stream("GET", "/test/bytes?size=5000") as response:
        size = response.stream_to_file(workdir / "small.bin", progress=lambda done, total: None)
        assert_type(size, int)

    # Checkpoints: typed resources.
    listing = client.checkpoints.list()
    assert_type(listing, CheckpointList)
    target = client.checkpoints.download("tinker://run-001/weights/final", output_dir=workdir / "ckpt")
    assert_type(target, pathlib.Path)
    assert any(target.iterdir())
    report = client.checkpoints.sync("run-003", workdir / "mirror", kinds=["weights"], latest=1)
    assert_type(report, SyncReport)
    assert report.status == "synced" and len(report.downloaded) == 1

    # The API's resources, typed.
    assert_type(client.health.check(), HealthResponse)
    assert_type(client.server.capabilities(), ServerCapabilities)
    page = client.training_runs.list(limit=5)
    assert_type(page, TrainingRunList)
    assert page.cursor.total_count == 45
    runs = client.training_runs.iter(max_items=3)
    assert_type(runs, Iterator[TrainingRun])
    assert [run.training_run_id for run in runs] == ["run-001", "run-002", "run-003"]
    assert_type(client.training_runs.get("run-001"), TrainingRun)
    assert_type(client.checkpoints.get("tinker://run-001/weights/final"), Checkpoint)
    assert_type(client.checkpoints.iter(max_items=2), Iterator[Checkpoint])
    assert_type(client.checkpoints.archive_url("tinker://run-001/weights/final"), CheckpointArchiveUrl)
    urls = client.checkpoints.external_weights_urls("tinker://run-001/external_weights/hf-export")
    assert_type(urls, ExternalWeightsUrls)
    assert_type(client.checkpoints.set_ttl("tinker://run-001/weights/step-0100", 3600), None)
    assert_type(client.sessions.list(), SessionList)
    assert_type(client.sessions.get("session-001"), Session)
    assert_type(client.sessions.iter(), Iterator[str])
    model = client.futures.retrieve("future-ok", cast_to=CreateModelResponse, timeout=30)
    assert_type(model, CreateModelResponse)
    assert_type(client.futures.retrieve("future-ok", cast_to=dict[str, Any]), dict[str, Any])
    stream = client.sampling.stream_sample("Hi", max_tokens=3)
    assert_type(stream, SampleStream)
    as_events: EventStream[SampleStreamChunk] = stream  # a SampleStream is an EventStream of chunks
    assert_type(stream.text(), str)
    assert as_events.response is not None
    sampled = client.sampling.sample(
        [1, 2], sampling_params=SamplingParams(max_tokens=2), base_model="Qwen/Qwen3-8B"
    )
    assert_type(sampled, SampleResponse)

    # Raw views: APIResponse[T], from the client or from a resource.
    raw = client.with_raw_response.training_runs.list(limit=2)
    assert_type(raw, APIResponse[TrainingRunList])
    assert_type(raw.parse(), TrainingRunList)
    assert_type(raw.status_code, int)
    assert_type(raw.read(), bytes)
    assert_type(client.training_runs.with_raw_response.get("run-001"), APIResponse[TrainingRun])
    assert_type(
        client.with_raw_response.checkpoints.delete("tinker://run-002/weights/step-0100"), APIResponse[None]
    )
    assert_type(
        client.with_raw_response.futures.retrieve("future-ok", cast_to=CreateModelResponse).parse(),
        CreateModelResponse,
    )

    # Streaming views: a with block whose body is unread.
    block = client.with_streaming_response.checkpoints.archive("tinker://run-001/weights/final")
    assert_type(block, ResponseContextManager[bytes])
    with block as archive:
        assert_type(archive, APIResponse[bytes])
        written = archive.stream_to_file(workdir / "model.tar", progress=lambda done, total: None)
        assert_type(written, int)
    with client.checkpoints.with_streaming_response.list("run-001") as listing_response:
        assert_type(listing_response.parse(), CheckpointList)
        for line in listing_response.iter_lines():
            assert_type(line, str)
    with client.with_streaming_response.sampling.stream_sample("Hi", max_tokens=2) as sse:
        assert_type(sse.iter_events(SampleStreamChunk), EventStream[SampleStreamChunk])
    with client.with_streaming_response.sessions.get("session-001") as streamed:
        assert_type(streamed.iter_events(), EventStream[ServerSentEvent])
        assert_type(streamed.iter_bytes(1024), Iterator[bytes])

    # Retries, timeouts and hooks.
    def on_retry(info: RetryInfo) -> None:
        print("retrying", info.url, info.reason, info.wait)

    def on_end(info: StreamEndInfo) -> None:
        assert info.bytes >= 0

    hooks: EventHooks = {"retry": [on_retry], "stream_end": [on_end, print]}
    patient = tinker_sync.Client(
        api_key=api_key,
        base_url=base_url,
        max_retries=3,
        timeout=Timeout(connect=5, read=30),
        event_hooks=hooks,
    ).with_options(max_retries=20)
    assert_type(patient, tinker_sync.Client)
    assert patient.get("/api/v1/healthz", timeout=2.0) == {"status": "ok"}

    # Per-call overrides on every API method (and its views): headers, query, body, timeout, retries.
    traced = client.training_runs.list(
        limit=2,
        extra_headers={"X-Trace-Id": "run-42"},
        extra_query={"access_scope": "accessible"},
        timeout=Timeout(connect=5, read=10),
        max_retries=2,
    )
    assert_type(traced, TrainingRunList)
    assert_type(client.health.check(timeout=5.0), HealthResponse)
    raw_run = client.with_raw_response.training_runs.get("run-001", extra_headers={"X-Trace-Id": "run-42"})
    assert_type(raw_run, APIResponse[TrainingRun])
    with client.with_streaming_response.sessions.list(extra_query={"limit": 3}, timeout=10) as listed:
        assert_type(listed.parse(), SessionList)
    sampled_more = client.sampling.sample(
        [1, 2],
        sampling_params=SamplingParams(max_tokens=2),
        base_model="Qwen/Qwen3-8B",
        extra_body={"topk_prompt_logprobs": 1},
        timeout=60,
    )
    assert_type(sampled_more, SampleResponse)

    # A copy with other defaults, sharing the connection pool: per task, cheap.
    tagged = client.with_options(default_headers={"X-Team": "research"}, timeout=20.0, max_retries=5)
    assert_type(tagged, tinker_sync.Client)
    assert_type(tagged.sessions.get("session-001", extra_headers={"X-Trace-Id": "run-43"}), Session)
    assert_type(client.copy(max_retries=1), tinker_sync.Client)

    # The download methods take the same overrides: headers and query for the API's requests
    # (and the URL given), never for a signed URL; timeout and retries for the whole download.
    fetched = client.download(
        "/test/bytes?size=20000",
        workdir / "traced.bin",
        extra_headers={"X-Trace-Id": "run-44"},
        extra_query={"seed": "3"},
        timeout=Timeout(connect=5, read=30),
        max_retries=4,
    )
    assert_type(fetched, pathlib.Path)
    traced_target = client.checkpoints.download(
        "tinker://run-001/external_weights/hf-export",
        output_dir=workdir / "traced",
        extra_headers={"X-Trace-Id": "run-45"},
        timeout=120.0,
        max_retries=6,
    )
    assert_type(traced_target, pathlib.Path)
    traced_report = tagged.checkpoints.sync(
        "run-003", workdir / "traced-mirror", latest=1, extra_headers={"X-Trace-Id": "run-46"}, timeout=300
    )
    assert_type(traced_report, SyncReport)
    assert traced_report.status == "synced"
    patient.close()
    client.close()
