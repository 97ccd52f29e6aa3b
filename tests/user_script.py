"""A user's script: the README's examples, as a user writes them, type-checked with ``mypy --strict``.

``assert_type`` pins what a user's editor and mypy see (no ``Any`` where the type
is known); ``test_user_script.py`` runs it against the mock server, so every line
also works. ``.ci/run`` type-checks it with the package (pyproject ``[tool.mypy]``).
"""

from __future__ import annotations

import pathlib
from typing import assert_type

import tinker_sync
from tinker_sync import (
    EventHooks,
    EventStream,
    RetryInfo,
    ServerSentEvent,
    StreamedResponse,
    StreamEndInfo,
    Timeout,
)
from tinker_sync.resources.types import CheckpointList, SampleStreamChunk


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
    with client.stream("GET", "/test/bytes?size=5000") as response:
        size = response.stream_to_file(workdir / "small.bin", progress=lambda done, total: None)
        assert_type(size, int)

    # Checkpoints: typed resources.
    listing = client.checkpoints.list()
    assert_type(listing, CheckpointList)
    target = client.checkpoints.download("tinker://run-001/weights/final", output_dir=workdir / "ckpt")
    assert_type(target, pathlib.Path)
    assert any(target.iterdir())

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
    patient.close()
    client.close()
