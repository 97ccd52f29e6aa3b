"""A loopback mock of the Tinker API for tests and benchmarks.

stdlib + msgspec only, and it never imports the client: it is an independent
oracle. Importing this package costs nothing (everything loads lazily).

    from tinker_sync.testing import MockTinkerServer, Fault

    with MockTinkerServer(api_key="tml-test-key") as server:   # 127.0.0.1, ephemeral port
        server.url                                             # "http://127.0.0.1:PORT", no trailing /
        server.script("/test/bytes", Fault(reset_after=1000), Fault(status=503, retry_after=1))
        server.add_checkpoint("tinker://run-1/weights/final", size=1 << 20)
        server.requests, server.connections, server.violations

``python -m tinker_sync.testing [--port N] [--api-key K] [--host H]`` serves in the
foreground and prints ``Mock Tinker server at URL (api key K)``.

MockTinkerServer(api_key="tml-test-key", *, host="127.0.0.1", port=0)
    start() / stop() / context manager; url, port, api_key
    requests -> list[RecordedRequest(method, path, query, headers, body)] (snapshot; headers lower-cased,
        query last-value-wins, path without query; .json() decodes the body)
    connections -> TCP connections accepted; clear() resets requests, connections and violations
    violations -> list[str]: credentials (X-API-Key / Authorization) sent to a signed URL
    script(path_prefix, *faults) -> each Fault is used by the next request whose path starts with
        the prefix (FIFO); unscripted /test/* and /signed/* requests take faults from the query
    add_checkpoint(tinker_path, *, size, seed=0, n_files=4, compression=None, prepare_seconds=0.0,
        prepare_status=503, public=False) -> the checkpoint JSON
    add_hostile_archive(tinker_path, kind)   -- archive = archives.HOSTILE_ARCHIVES[kind]()
    add_future(request_id, *results)          -- answers of /retrieve_future in turn; the last repeats
    signed_url_ttl = 900.0 (seconds; negative gives already-expired URLs)
    signed_checksums = () ("md5", "crc32c", "sha256", "etag-md5" headers on signed downloads)
    supported_models = [...]
serve(**kw) -> a context manager yielding a started server.

Fault(reset_after=None, rst=False, stall_after=None, stall=0.0, status=None, retry_after=None,
      ignore_range=False, change_etag=False, wrong_length=None, trickle=None, trickle_delay=0.0,
      delay_headers=0.0)
    Byte counts are body bytes. reset_after closes the connection (FIN; RST with rst=True) after
    that many bytes -- no terminating chunk. Query forms: reset_after, rst=1, stall_after & stall,
    ignore_range=1, change_etag=1, wrong_length, trickle & trickle_delay, delay_headers.

Routes (errors are JSON ``{"error": {"message", "type"}}``):
    /api/v1/*  need ``X-API-Key`` (else 401):
      GET healthz; GET get_server_capabilities; POST retrieve_future {"request_id"}
      POST stream_sample {"prompt", "max_tokens"=8, "error_at"=null, "delay"=0} -> SSE token events
          (``id: i``), then a done event; error_at=k -> ``event: error`` after k tokens
      GET training_runs (limit=20, offset); GET training_runs/{run}; GET training_runs/{run}/checkpoints
      GET checkpoints (limit=100, offset; newest first)
      DELETE training_runs/{run}/checkpoints/{kind}/{name} (204); POST|DELETE .../publish (204; 409)
      PUT .../ttl {"ttl_seconds"} (204); GET .../archive -> 302 Location=signed URL, Expires
          (prepare_status + Retry-After: 1 during the first prepare_seconds)
      GET .../external_weights_urls -> {"urls": {relative path: signed URL}, "expires": ISO UTC}
      (the checkpoint id may also come as one percent-encoded segment, weights%2FNAME)
    /signed/<token>/archive, /signed/<token>/files/<relative path> ?expires=&sig=
      GET/HEAD with Range/If-Range/ETag; 403 bad signature or expired (type "expired"); 400 + a
      violation when X-API-Key or Authorization is sent.
    ANY /test/sse  count=10 size=100 delay=0 eol=lf|cr|crlf framing=chunked|length|close chunk=N ids=1
        retry=N error_at=N ping=1 event=NAME content_type=T status=N cut_after=N hang=1
        (+ Last-Event-ID resumes after that id when ids=1); data is {"index": i, "payload": "xx.."}
    ANY /test/sse-raw  echoes the request body as text/event-stream (chunk, framing, delay)
    ANY /test/echo     {"method", "path", "query", "headers", "body" (latin-1)}
    ANY /test/status/<code>  that status, {"error": {"message": "status <code>"}}
        (/test/echo and /test/status: retry_after, retry_after_ms, should_retry -> headers)
    GET|HEAD /test/bytes  size=1024 seed=0 checksum=md5,crc32c,sha256,etag-md5 bad_checksum=1 chunked=1;
        ETag "<seed>-<size>-<version>", Range (A-, A-B, -N) -> 206, 416, If-Range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._server import MockTinkerServer, serve
    from ._sessions import ModelRecord, SessionRecord
    from ._types import Fault, RecordedRequest

__all__ = ["Fault", "MockTinkerServer", "ModelRecord", "RecordedRequest", "SessionRecord", "serve"]

# Lazy: importing the package must not load the server (http.server, threads) or tarfile.
_HOMES = {
    "Fault": "_types",
    "MockTinkerServer": "_server",
    "ModelRecord": "_sessions",
    "RecordedRequest": "_types",
    "SessionRecord": "_sessions",
    "serve": "_server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
