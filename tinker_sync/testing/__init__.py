"""A loopback mock of the Tinker API for tests and benchmarks.

stdlib + msgspec only, and it never imports the client: it is an independent
oracle. Importing this package costs nothing (everything loads lazily).

    from tinker_sync.testing import MockTinkerServer, Fault

    with MockTinkerServer(api_key="tml-test-key") as server:   # 127.0.0.1, ephemeral port
        server.url                                             # "http://127.0.0.1:PORT", no trailing /
        server.script("/test/bytes", Fault(reset_after=1000), Fault(status=503, retry_after=1))
        server.add_checkpoint("tinker://run-1/weights/final", size=1 << 20)
        server.requests, server.connections, server.violations

``python -m tinker_sync.testing [--port N] [--api-key K] [--host H] [--empty]`` serves in the
foreground, with the demo data unless ``--empty``, and prints
``Mock Tinker server at URL (api key K)``.

MockTinkerServer(api_key="tml-test-key", *, host="127.0.0.1", port=0, demo_data=False,
                 ssl_context=None, rate_limit=None)
    start() / stop() / context manager; url, port, api_key. stop() wakes every waiting response.
    demo_data=True   start with the demo dataset (below); without it the server starts empty.
    ssl_context      an ssl.SSLContext with a server certificate: HTTPS; url and signed URLs say https://
    rate_limit       bytes per second for every body on each connection (one token bucket per
                     connection, kept across keep-alive requests; N connections get ~N times one)
    requests -> list[RecordedRequest(method, path, query, headers, body)] (snapshot; headers lower-cased,
        query last-value-wins, path without query; .json() decodes the body)
    connections -> TCP connections accepted; clear() resets requests, connections, peak_in_flight and
        violations
    peak_in_flight -> the most requests answered at the same time (N for a download over N connections)
    violations -> list[str], each "METHOD PATH: message": every client mistake the server answered
        400/401/404/405/422 (wrong method or path, missing X-API-Key, a body without
        Content-Type: application/json, a query or JSON body of the wrong shape, an unknown JSON field,
        a finished session or unloaded model used again) and credentials (X-API-Key / Authorization)
        sent to a signed URL. A missing resource (404), a conflict (409), a wrong key's 401 and a
        refused value (a ttl out of range, an unsupported base model) are no violation.
        Client tests assert ``server.violations == []``.
    script(path_prefix, *faults) -> each Fault is used by the next request whose path starts with
        the prefix (FIFO); unscripted /test/* and /signed/* requests take faults from the query
    add_checkpoint(tinker_path, *, size, seed=0, n_files=4, compression=None, prepare_seconds=0.0,
        prepare_status=503, public=False) -> the checkpoint JSON (registers the run if new); its files
        are archives.checkpoint_files(seed, size, n_files)
    add_hostile_archive(tinker_path, kind)   -- archive = archives.HOSTILE_ARCHIVES[kind]()
    add_run(run_id, *, base_model=None, owner="mock-user", is_lora=True, lora_rank=32, corrupted=False,
        user_metadata=None) -> the TrainingRun JSON; another owner's run is listed only with
        access_scope=accessible
    add_session(session_id=None, *, training_run_ids=(), sampler_ids=(), tags=(), user_metadata=None,
        display_name=None, owner="mock-user") -> SessionRecord (a new "session-NNN" id when None)
    add_future(request_id, *answers)  -- answers of /retrieve_future in turn; the last repeats
    script_future(kind, *answers)     -- the next future the server creates for kind (create_model,
        load_weights, save_weights_external, unload_model, sample) gives these answers before its
        result, instead of the future_polls try_agains; an {"error", "category"} answer ends it
        (it repeats and the operation has no effect)
        Answers: a dict, answered 200 (a result, {"type": "try_again", "request_id", "queue_state"},
        or {"error", "category": "user"|"server"|"unknown"}); or Fault(status=S[, retry_after=R]):
        408 answers a try_again body, any other status the JSON error (+ Retry-After: R).
    future_polls = 2 (try_again answers before each server future's result)
    max_page_size = None (an int caps every list's page, whatever limit the client asks, as real
        APIs do; the cursor says the capped limit)
    archive_mode = "archive": GET .../archive answers 302; "export" answers 404 (as a server that
        dropped archives: the client must use the export flow); 405 or 501 answer that status
    signed_url_ttl = 900.0 (seconds; negative gives already-expired URLs)
    signed_checksums = () ("md5", "crc32c", "sha256", "etag-md5" headers on signed downloads)
    supported_models = ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B"]
    sessions -> list[SessionRecord(session_id, created_at, tags, user_metadata, sdk_version,
        project_id, display_name, owner, training_run_ids, sampler_ids, finished (None or the
        finish reason: success|errored|interrupted), finish_detail, heartbeats)]   (snapshots)
    models -> list[ModelRecord(model_id, session_id, model_seq_id, base_model, lora_rank,
        loaded_path, exports (tinker paths saved), unloaded)]
    deleted_checkpoints -> tinker paths deleted through the API, oldest first
    checkpoint(tinker_path) -> its Checkpoint JSON, or None
    client_config = {"pjwt_auth_enabled": False} (what POST client/config answers; with
        pjwt_auth_enabled every route but client/config and auth/* wants a JWT from auth/token)
    client_dynamic_config = {} ; jwt_lifetime = 3600.0 (seconds) ; trace_export_polls = 1 (pending
        answers before ready) ; trace_size = 262144 ; error_format = "error" | "detail" (FastAPI's
        {"detail": message}, a list for a 422)
    add_api_key(key), mint_jwt(lifetime=None) -> str, revoke_tokens() (every JWT so far refused),
    refuse_jwt(count=1) (the next count JWT requests answered 401 invalid_token), tokens_issued,
    telemetry -> the batches received, add_sampler(sampler_id, base_model, model_path=None)
serve(**kw) -> a context manager yielding a started server.

ForwardProxy(*, auth=None, host="127.0.0.1", port=0)   -- a loopback HTTP proxy (see _proxy)
    CONNECT tunnels and absolute-form forwarding, to loopback targets only (else 403; a refused
    target 502); auth=(user, password) requires Proxy-Authorization: Basic (else 407).
    url (no credentials), auth_url (with them), requests -> [ProxyRequest(method, target, headers,
    body)] (every head read in clear), tunnels -> ["host:port", ...], seen -> every byte read in
    clear (never a tunnel's), connections, clear(), stop(); a context manager.

Fault(reset_after=None, rst=False, stall_after=None, stall=0.0, status=None, retry_after=None,
      ignore_range=False, change_etag=False, wrong_length=None, trickle=None, trickle_delay=0.0,
      delay_headers=0.0, rate=None)
    Byte counts are body bytes. reset_after closes the connection (FIN; RST with rst=True) after
    that many bytes -- no terminating chunk. rate caps this response at bytes per second. Query
    forms: reset_after, rst=1, stall_after & stall, ignore_range=1, change_etag=1, wrong_length,
    trickle & trickle_delay, delay_headers, rate.

Routes. Errors are JSON {"error": {"message", "type"}} (or {"detail"}: error_format). /api/v1/* need X-API-Key (else 401) and
Content-Type: application/json on any body. "->" gives the 200 body; "future" means the 200 body
{"request_id", "model_id"} whose result comes from POST retrieve_future. Shapes are the SDK's
(tinker 0.38 types of the same names); JSON bodies accept exactly the SDK request fields.
    GET|HEAD healthz -> {"status": "ok"}
    GET get_server_capabilities -> {"supported_models": [{"model_name", "max_context_length",
        "trainable", "sampleable"}]}
    GET training_runs ?limit=20&offset=0&access_scope=owned|accessible -> {"training_runs":
        [TrainingRun], "cursor": {"offset", "limit", "total_count"}}
        TrainingRun: {"training_run_id", "base_model", "model_owner", "is_lora", "lora_rank",
        "corrupted", "last_request_time", "user_metadata", "last_checkpoint": Checkpoint|null,
        "last_sampler_checkpoint": Checkpoint|null}
    GET training_runs/{run} ?access_scope -> TrainingRun (404 for another owner's run when owned)
    GET training_runs/{run}/checkpoints -> {"checkpoints": [Checkpoint]}
        Checkpoint: {"checkpoint_id": "KIND/NAME", "checkpoint_type": "training"|"sampler"|"external",
        "tinker_path", "training_run_id", "size_bytes", "public", "time", "expires_at", "user_metadata"}
        (times ISO 8601 UTC with a Z)
    GET checkpoints ?limit=100&offset=0 -> {"checkpoints": [...] newest first, "cursor"} (owned runs)
    Under training_runs/{run}/checkpoints/{KIND}/{NAME} (KIND/NAME may come as one %2F segment;
    run ids may contain ":", as model ids do):
      DELETE -> 204;  POST | DELETE .../publish -> 204, 409 if already public / private
      PUT .../ttl {"ttl_seconds": int (3600 .. 10 years) | null} -> 204 (sets expires_at from now)
      GET .../archive -> 302, Location = signed URL of the tar, Expires (prepare_status + Retry-After: 1
          during the first prepare_seconds; see archive_mode)
      GET .../external_weights_urls (external_weights only) -> {"urls": {relative path: signed URL},
          "expires": ISO UTC}
    GET sessions ?limit=20&offset=0&access_scope -> {"sessions": [session ids]}
    GET sessions/{id} ?access_scope -> {"training_run_ids", "sampler_ids", "user_metadata", "display_name"}
    POST create_session {"sdk_version", "tags"=[], "user_metadata"?, "project_id"?, "display_name"?}
        -> {"type": "create_session", "info_message": null, "warning_message": null,
        "error_message": null, "session_id"}
    POST session_heartbeat {"session_id"} -> {"type": "session_heartbeat"}
    POST sessions/{id}/finish {"reason": {"type": "success"|"errored"|"interrupted"}, "detail"?}
        -> 204 (the first finish wins)
    POST weights_info {"tinker_path"} -> {"base_model", "optimizer_config": {"type": "adamw"},
        "is_lora", "lora_rank", "train_unembed", "train_mlp", "train_attn"}
    POST get_info {"model_id"} -> {"type": "get_info", "model_data": {"arch", "model_name",
        "tokenizer_id"}, "model_id", "optimizer_config", "is_lora", "lora_rank", "model_name"}
    POST create_model {"session_id", "model_seq_id", "base_model", "lora_config": {"rank", ...}?,
        "user_metadata"?, "optimizer_config"?} -> future; model_id "SESSION:train:SEQ" (also its
        training run's id); result {"model_id", "type": "create_model"}
    POST load_weights {"path": "tinker://RUN/weights/NAME", "optimizer": bool, and either "model_id"
        (after create_model; "seq_id"?) or "session_id" + "model_seq_id" (creates the model, as SDK
        0.38 does)} -> future; result {"path", "model_id", "type": "load_weights"}, or a failure
        {"error", "category": "user"} when the checkpoint does not exist
    POST save_weights_external {"model_id", "path": "<plain name>", "ttl_seconds"?, "seq_id"?}
        -> future; result {"path": "tinker://MODEL/external_weights/<name>", "size_bytes",
        "type": "save_weights_external"}. The export is a real external_weights checkpoint (listed,
        deletable, ttl) whose files (external_weights_urls) have the names and bytes of the loaded
        checkpoint's archive members.
    POST unload_model {"model_id"} -> future; result {"model_id", "type": "unload_model"}
    POST client/config | client/dynamic_config {"sdk_version"} -> the flags (see client_config)
    POST auth/token {} (X-API-Key: an API key) -> {"jwt"}: HS256, claims sub, org_id, email, iat,
        exp. A JWT expired, revoked or refused -> 401, WWW-Authenticate: Bearer error="invalid_token"
    GET auth/apikey/me -> {"key_id", "name", "note", "details": {"org_details": {"name"},
        "user_details": {"email"}}};  DELETE auth/apikey/me -> 204 (the key is revoked)
    POST telemetry (any JSON) -> {"status": "accepted"} (counted in telemetry, never a violation)
    POST copy_weights {"source_path", "destination_project_id" | "session_id" + "model_seq_id",
        "ttl_seconds"?} -> {"tinker_path": "tinker://copy-NNN/KIND/NAME"}
    POST sessions/search SessionSearchRequest -> {"sessions": [SessionSummary], "next_cursor"}
    GET sessions/{id}/trace_export -> {"status": "pending"} (trace_export_polls times), then
        {"status": "ready", "url": signed URL of the trace file (trace_size generated bytes)}
    GET samplers/{id} -> {"sampler_id", "base_model", "model_path"} (samplers sessions list)
    POST retrieve_future {"request_id", "allow_metadata_only"?} -> the next answer (see add_future);
        404 for an unknown id
    POST asample SampleRequest {"prompt": {"chunks": [{"type": "encoded_text", "tokens"}]},
        "sampling_params": {"max_tokens", "seed", "temperature", ...}, "num_samples"=1, and
        "base_model" | "model_path" | "sampling_session_id" + "seq_id", ...} -> {"request_id",
        "sample_sequence_ids"}; result {"type": "sample", "sequences": [{"stop_reason": "length",
        "tokens", "logprobs"}], "prompt_logprobs": null | [null, ...], "topk_prompt_logprobs": null}
        (tokens seeded by sampling_params.seed, else by the prompt: the same request, the same answer)
    POST stream_sample {"prompt": text or ModelInput, "max_tokens"=8 (or sampling_params.max_tokens),
        "error_at"=null, "delay"=0} (Accept must allow text/event-stream) -> SSE: "id: i" +
        data {"event_type": "token", "token": "tok<i>", "token_id": i, "index": i, "logprob": -0.5},
        then {"event_type": "done", "finish_reason": "length", "total_tokens"}; error_at=k ->
        "event: error" data {"event_type": "error", "message": "boom"} after k tokens
    /signed/<token>/archive, /signed/<token>/files/<relative path> ?expires=&n=&sig=
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

The export flow (what the current SDK does instead of .../archive for training checkpoints):
create_session -> weights_info -> create_model (future) -> load_weights (future) ->
save_weights_external "download" (future) -> external_weights_urls + signed downloads -> DELETE the
export -> unload_model (future) -> sessions/{id}/finish. A test asserts the cleanup with
``deleted_checkpoints == [export]``, ``models[0].unloaded`` and the session's ``finished``; with
``archive_mode = "export"`` the archive route answers 404 so a client must take this flow.

Demo data (demo_data=True; deterministic, fixed times from 2025-06-15T15:06:40Z; owner "mock-user"):
    runs run-001 .. run-045 (45: three pages of 20). run-i: base model Qwen/Qwen3-8B for odd i,
        meta-llama/Llama-3.1-8B for even i; lora_rank 8/16/32/64 for i % 4 = 0/1/2/3 (run-001: 16);
        run-013 corrupted; user_metadata {"project": "demo", "learning_rate": "1e-4"} on every fifth.
    checkpoints: run-i has 2 + i % 3 steps (run-001: 3, run-002: 4, run-003: 2), each a
        tinker://run-i/weights/step-0100 (-0200, ...) and a tinker://run-i/sampler_weights/step-0100
        (...), 1-8 MiB each; run-045 has none. Also tinker://run-001/weights/final (2 MiB, run-001's
        last_checkpoint) and tinker://run-001/external_weights/hf-export (5 files, 3 MiB + 512).
        run-002's sampler checkpoints are public; run-003's training checkpoints have expires_at.
        GET checkpoints lists 268, newest first (tinker://run-044/sampler_weights/step-0400).
    shared-001 .. shared-003 owned by "teammate" (access_scope=accessible only: 48 runs), each with
        weights/step-0100 and a public sampler_weights/step-0100.
    sessions session-001 .. session-030: session-k holds run-k (and run-(k+30) for k <= 15), sampler
        "session-k:sample:0" for odd k; finished "success" except errored 007, 014, 021; 028-030 open.
        New sessions continue at session-031.
    futures: "future-ok" (try_again active, try_again paused_capacity, then {"model_id": "run-001",
        "type": "create_model"}) and "future-failed" (try_again, then {"error": "out of memory while
        loading the model", "category": "server"}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._proxy import ForwardProxy, ProxyRequest
    from ._server import MockTinkerServer, serve
    from ._sessions import ModelRecord, SessionRecord
    from ._types import Fault, RecordedRequest

__all__ = [
    "Fault",
    "ForwardProxy",
    "MockTinkerServer",
    "ModelRecord",
    "ProxyRequest",
    "RecordedRequest",
    "SessionRecord",
    "serve",
]

# Lazy: importing the package must not load the server (http.server, threads) or tarfile.
_HOMES = {
    "Fault": "_types",
    "ForwardProxy": "_proxy",
    "MockTinkerServer": "_server",
    "ModelRecord": "_sessions",
    "ProxyRequest": "_proxy",
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
