"""``ServiceClient``: one session of training and sampling, and the threads that serve it.

On creation: ``client/config`` (the flags; a 404 keeps the SDK's defaults), then
``create_session``, then the heartbeat thread (``session_heartbeat`` every
``HEARTBEAT_INTERVAL`` seconds, one attempt each; a 410 means the session is gone
and stops it; failures are logged, a warning after two minutes of them).

Threads, bounded per ``ServiceClient`` whatever the number of futures: the heartbeat,
at most ``poll_workers`` pollers and ``submit_workers`` submitters (8 of each, more
only while the server's round trip calls for them: see ``_train_pace``). ``close()``
sends ``sessions/{id}/finish`` once, fails what is still pending, and joins every
thread. As a context manager it closes with ``success``, ``errored`` (an exception)
or ``interrupted`` (``KeyboardInterrupt`` or another ``BaseException``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from ._client import Client
from ._config import resolve_project_id
from ._exceptions import APIResponseValidationError, APIStatusError, NotFoundError
from ._sampling_client import SamplingClient
from ._sampling_holder import SampleDispatch, ShadowConfig
from ._train_engine import DEFAULT_POLL_TIMEOUT, Engine, QueueStateCallback, post_future
from ._train_future import DEFAULT_RESULT_TIMEOUT, Future, json_result, resolve
from ._train_pace import DEFAULT_POLL_WORKERS, DEFAULT_SUBMIT_WORKERS, check_workers
from ._train_types import (
    AdamOptimizerConfig,
    ClientConfigResponse,
    CreateSamplingSessionResponse,
    DimuonOptimizerConfig,
    GetInfoResponse,
    LoadWeightsResponse,
    OptimizerConfig,
    console_url,
)
from ._training_client import TrainingClient
from ._version import __version__
from .resources.types import CreateModelResponse, CreateSessionResponse, ServerCapabilities

__all__ = ["HEARTBEAT_INTERVAL", "ServiceClient"]

log = logging.getLogger("tinker_sync")
HEARTBEAT_INTERVAL = 10.0
HEARTBEAT_WARN_AFTER = 120.0
SDK_VERSION = f"tinker-sync/{__version__}"
Status = Literal["success", "errored", "interrupted"]


def _optimizer_config(optimizer: OptimizerConfig | Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer family as the SDK sends it (``{"type": "adamw"}``, ``{"type": "dimuon", "version": 1}``);
    a mapping with a ``type`` goes as it is (a family this version does not know)."""
    if isinstance(optimizer, AdamOptimizerConfig | DimuonOptimizerConfig):
        return dict(msgspec.to_builtins(optimizer))
    if isinstance(optimizer, Mapping) and isinstance(optimizer.get("type"), str):
        return dict(optimizer)
    raise TypeError(
        f"optimizer must be AdamOptimizerConfig(), DimuonOptimizerConfig() or a mapping with a 'type', got {optimizer!r}"
    )


class ServiceClient:
    """The entry point of training and sampling: a session, its heartbeat, and the clients made in it.

    Args:
        api_key, base_url: as ``tinker_sync.Client`` (``TINKER_API_KEY``, ``TINKER_BASE_URL``).
        client: a ``tinker_sync.Client`` to send through (its retries, timeouts, hooks);
            not closed by ``close()``. By default one is made and owned.
        project_id, user_metadata, display_name: what the session is filed under
            (``project_id`` defaults to ``TINKER_PROJECT_ID``, as in the official SDK).
        on_queue_state: called ``(request_id, queue_state, reason)`` when a future's
            queue state changes (also logged at INFO).
        result_timeout: the deadline of every future, from submission (seconds).
        poll_timeout: one poll's read timeout (the server holds a poll ~30 s at most).
        submit_workers, poll_workers: the most submitter and poller threads (32 and 30); 8 of
            each run until the server's round trip calls for more (``_train_pace``).
        default_headers_overrides: headers for every request of the session (the SDK's), over
            the client's own.

    Every call returns a ``Future``: submit several, then wait. Code written for the
    official SDK ports by changing its import.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        client: Client | None = None,
        project_id: str | None = None,
        user_metadata: dict[str, str] | None = None,
        display_name: str | None = None,
        on_queue_state: QueueStateCallback | None = None,
        result_timeout: float = DEFAULT_RESULT_TIMEOUT,
        poll_timeout: float = DEFAULT_POLL_TIMEOUT,
        submit_workers: int = DEFAULT_SUBMIT_WORKERS,
        poll_workers: int = DEFAULT_POLL_WORKERS,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        default_headers_overrides: Mapping[str, str] | None = None,
    ) -> None:
        check_workers(submit_workers, poll_workers)  # before a session is made
        self._owns_client = client is None
        if client is None:
            size = submit_workers + poll_workers + 2
            client = Client(api_key, base_url, pool_maxsize=size, default_headers=default_headers_overrides)
        elif default_headers_overrides:
            client = client.with_options(default_headers=default_headers_overrides)
        self._client = client
        try:
            self._config = self._fetch_config()
            self.project_id = resolve_project_id(project_id)
            session = self._create_session(self.project_id, user_metadata, display_name)
        except BaseException:
            if self._owns_client:
                self._client.close()  # nothing was started: no thread, no session to finish
            raise
        self.session_id = session.session_id
        self._counter_lock = threading.Lock()
        self._model_seq = itertools.count(0)
        self._sampling_seq = itertools.count(0)
        self._closed: Status | None = None
        self._close_lock = threading.Lock()
        self._engine = Engine(
            self._client,
            submit_workers=submit_workers,
            poll_workers=poll_workers,
            result_timeout=result_timeout,
            poll_timeout=poll_timeout,
            on_queue_state=on_queue_state,
        )
        self._sample_dispatch = SampleDispatch(self._config.sample_dispatch_bytes_semaphore_size)
        self._engine.retrieve_futures = self._config.sample_use_retrieve_futures
        self._engine.billing.limit = self._config.billing_exception_max_pause_duration_sec
        self._engine.cancel_enabled = self._cancel_enabled()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(heartbeat_interval,), name="tinker-sync-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def __repr__(self) -> str:
        return f"<tinker_sync.ServiceClient session_id={self.session_id!r}>"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a ServiceClient cannot be pickled: it owns the session, its heartbeat and its threads, "
            "and stays in the main process; pass a SamplingClient to worker processes (it pickles)"
        )

    def _shadow_config(self) -> ShadowConfig:
        """What the copies of this session's sampling clients in other processes are built from."""
        return ShadowConfig.of(self.session_id, self._client, self._config, self._engine)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close("success")
        elif issubclass(exc_type, Exception):
            self.close("errored", repr(exc))
        else:
            self.close("interrupted", exc_type.__name__)

    # -- session ------------------------------------------------------------------------------------

    def _fetch_config(self) -> ClientConfigResponse:
        """The server's flags: the client's handshake already fetches them once (the official SDK
        sends client/config once a session too); a client made with ``handshake=False`` asks here."""
        client = self._client
        if client._auth.handshake:
            flags = client._auth.config(client._exchange())
            try:
                return msgspec.convert(flags, ClientConfigResponse)
            except msgspec.ValidationError as error:
                raise APIResponseValidationError(f"client/config: {error}") from None
        try:
            return client.post(
                "/api/v1/client/config", json={"sdk_version": SDK_VERSION}, cast_to=ClientConfigResponse
            )
        except NotFoundError:
            return ClientConfigResponse()

    def _cancel_enabled(self) -> bool:
        """``client/dynamic_config``'s ``sample_cancel_enabled`` (read once; a 404 or a failure: off)."""
        try:
            flags = self._client.post("/api/v1/client/dynamic_config", json={"sdk_version": SDK_VERSION})
        except Exception:
            return False
        return isinstance(flags, dict) and flags.get("sample_cancel_enabled") is True

    def _create_session(
        self, project_id: str | None, user_metadata: dict[str, str] | None, display_name: str | None
    ) -> CreateSessionResponse:
        body: dict[str, Any] = {
            "tags": [],
            "user_metadata": user_metadata or {},
            "sdk_version": SDK_VERSION,
            "type": "create_session",
        }
        if project_id is not None:
            body["project_id"] = project_id
        if display_name is not None:
            body["display_name"] = display_name
        session = self._client.post("/api/v1/create_session", json=body, cast_to=CreateSessionResponse)
        for level, message in (
            (logging.INFO, session.info_message),
            (logging.WARNING, session.warning_message),
            (logging.ERROR, session.error_message),
        ):
            if message:
                log.log(level, "%s", message)
        return session

    def _heartbeat_loop(self, interval: float) -> None:
        failing_since: float | None = None
        warned = False
        body = {"session_id": self.session_id, "type": "session_heartbeat"}
        while not self._stop.wait(interval):
            self._engine.check_pollers()
            try:
                self._client.post("/api/v1/session_heartbeat", json=body, max_retries=0, timeout=10.0)
                failing_since, warned = None, False
            except APIStatusError as error:
                if error.status_code == 410:
                    log.warning("Session %s is gone (410): heartbeat stopped", self.session_id)
                    return
                failing_since = failing_since or time.monotonic()
            except Exception as error:
                log.info("Heartbeat of session %s failed: %r", self.session_id, error)
                failing_since = failing_since or time.monotonic()
            if (
                failing_since is not None
                and not warned
                and time.monotonic() - failing_since > HEARTBEAT_WARN_AFTER
            ):
                log.warning(
                    "Session %s: heartbeats failing for %.0f s", self.session_id, HEARTBEAT_WARN_AFTER
                )
                warned = True

    def close(self, status: Status = "success", detail: str | None = None) -> None:
        """Finish the session (once, with ``status``), fail what is pending, join every thread."""
        with self._close_lock:
            if self._closed is not None:
                return
            self._closed = status
        self._stop.set()
        self._heartbeat.join()
        try:
            reason: dict[str, Any] = {"reason": {"type": status}}
            if detail is not None:
                reason["detail"] = detail
            self._client.post(f"/api/v1/sessions/{self.session_id}/finish", json=reason)
        finally:
            self._engine.close()
            if self._owns_client:
                self._client.close()

    def _compress(self, body: bytes) -> bytes:
        try:
            from compression import zstd  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            try:
                from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]
            except ImportError:
                raise RuntimeError(
                    "the server asks for zstd-compressed forward_backward bodies: install tinker-sync[compression]"
                ) from None
        return bytes(zstd.compress(body))

    def _next_sampling_seq(self) -> int:
        with self._counter_lock:
            return next(self._sampling_seq)

    def _in_pool(self, make: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                resolve(future, make())
            except BaseException as error:
                resolve(future, error=error)

        closed = RuntimeError("the ServiceClient was closed before this request was sent")
        self._engine.submit(run, drop=lambda: resolve(future, error=closed))
        return future

    def _wait(self, path: str, request_type: str, body: dict[str, Any], cast_to: type[Any]) -> Any:
        inner: Future[Any] = Future()
        post_future(self._engine, inner, path, request_type, json_result(cast_to), json=body)
        return inner.result()

    # -- clients ------------------------------------------------------------------------------------

    def _training_client(self, model_id: str, model_seq_id: int) -> TrainingClient:
        info = self._client.post(
            "/api/v1/get_info", json={"model_id": model_id, "type": "get_info"}, cast_to=GetInfoResponse
        )
        return TrainingClient(self, model_id, model_seq_id, info)

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: OptimizerConfig | Mapping[str, Any] | None = None,
    ) -> Future[TrainingClient]:
        """A new LoRA model of ``base_model`` to train (a ``Future`` of its ``TrainingClient``);
        ``optimizer``: its optimizer family (``AdamOptimizerConfig()``, the default, or
        ``DimuonOptimizerConfig()``), whose steps then take ``AdamParams`` or ``DimuonParams``."""
        with self._counter_lock:
            seq = next(self._model_seq)
        lora: dict[str, Any] = {
            "rank": rank,
            "train_unembed": train_unembed,
            "train_mlp": train_mlp,
            "train_attn": train_attn,
        }
        if seed is not None:
            lora["seed"] = seed
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "model_seq_id": seq,
            "base_model": base_model,
            "lora_config": lora,
            "optimizer_config": _optimizer_config(AdamOptimizerConfig() if optimizer is None else optimizer),
            "type": "create_model",
        }
        if user_metadata is not None:
            body["user_metadata"] = user_metadata

        def make() -> TrainingClient:
            created = self._wait("/api/v1/create_model", "CreateModel", body, CreateModelResponse)
            return self._training_client(created.model_id, seq)

        return self._in_pool(make)

    def create_training_client_from_state(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: OptimizerConfig | Mapping[str, Any] | None = None,
    ) -> Future[TrainingClient]:
        """A training client on the weights of a ``tinker://.../weights/NAME`` checkpoint, with a
        fresh optimizer (``optimizer``: its family, Adam by default).

        ``base_model`` overrides the checkpoint's (a compatible one: another context length, say);
        ``weights_access_token`` loads a checkpoint of another account."""
        config = None if optimizer is None else _optimizer_config(optimizer)
        return self._from_state(False, path, base_model, user_metadata, weights_access_token, config)

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> Future[TrainingClient]:
        """A training client on the weights and the optimizer state of a checkpoint (to resume
        training where it stopped); the arguments as ``create_training_client_from_state``'s."""
        return self._from_state(True, path, base_model, user_metadata, weights_access_token, None)

    def _from_state(
        self,
        optimizer: bool,
        path: str,
        base_model: str | None,
        user_metadata: dict[str, str] | None,
        weights_access_token: str | None,
        optimizer_config: dict[str, Any] | None,
    ) -> Future[TrainingClient]:
        with self._counter_lock:
            seq = next(self._model_seq)
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "model_seq_id": seq,
            "path": path,
            "optimizer": optimizer,
            "type": "load_weights",
        }
        for key, value in (
            ("optimizer_config", optimizer_config),
            ("base_model", base_model),
            ("user_metadata", user_metadata),
            ("weights_access_token", weights_access_token),
        ):
            if value is not None:
                body[key] = value

        def make() -> TrainingClient:
            loaded = self._wait("/api/v1/load_weights", "LoadWeights", body, LoadWeightsResponse)
            return self._training_client(loaded.model_id or f"{self.session_id}:train:{seq}", seq)

        return self._in_pool(make)

    def get_console_url(self) -> str:
        """The Tinker Console page of this session."""
        return console_url("sessions", self.session_id)

    def get_server_capabilities(self) -> ServerCapabilities:
        """The models the server can train and sample (``Client.server.capabilities()``)."""
        return self._client.server.capabilities()

    def copy_weights(
        self, path: str, *, ttl_seconds: int | None = None, weights_access_token: str | None = None
    ) -> Future[str]:
        """Copy weights (either kind) into this session's project: a ``Future`` of the copy's
        tinker path (``Client.checkpoints.copy``: shared storage, a run of its own that cannot
        be trained on; ``ttl_seconds`` its expiry, ``weights_access_token`` for another account's).

        Raises:
            ValueError: the session has no project (``project_id`` or ``TINKER_PROJECT_ID``).
        """
        if not self.project_id:
            raise ValueError(
                "copy_weights copies into the session's project: give project_id or set TINKER_PROJECT_ID"
            )
        project = self.project_id
        return self._in_pool(
            lambda: self._client.checkpoints.copy(
                path, project, ttl_seconds=ttl_seconds, weights_access_token=weights_access_token
            )
        )

    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        *,
        record_stability_info: bool = False,
    ) -> Future[SamplingClient]:
        """A ``SamplingClient`` on saved sampler weights (``model_path``) or a base model;
        ``record_stability_info``: the server records each sampled sequence's stability
        information (for StableReinforce training, by sequence id)."""
        if (model_path is None) == (base_model is None):
            raise ValueError("Pass exactly one of model_path and base_model")
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "sampling_session_seq_id": self._next_sampling_seq(),
            "type": "create_sampling_session",
        }
        if model_path is not None:
            body["model_path"] = model_path
        if base_model is not None:
            body["base_model"] = base_model

        def make() -> SamplingClient:
            session = self._client.post(
                "/api/v1/create_sampling_session", json=body, cast_to=CreateSamplingSessionResponse
            )
            base = base_model
            if base is None:
                sampler = self._client.get(f"/api/v1/samplers/{session.sampling_session_id}")
                base = str(sampler.get("base_model", "")) if isinstance(sampler, dict) else ""
            return SamplingClient(
                self,
                session.sampling_session_id,
                base,
                model_path,
                record_stability_info=record_stability_info,
            )

        return self._in_pool(make)
