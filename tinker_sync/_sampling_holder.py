"""What the sampling clients of one process share, as the official SDK's ``InternalClientHolder``.

**Dispatch** (``SampleDispatch``; the SDK's ``sample_dispatch_rate_limit``): a sample is
being sent only within 400 sends at once and within the byte budget of ``client/config``'s
``sample_dispatch_bytes_semaphore_size`` (``DispatchBytes``, by ``dispatch_size``).

**Backpressure**: a 429 (or a 402 within the billing pause) from ``asample`` does not fail
the sample: it backs the whole holder off (``BACKOFF`` s, ``LARGE_BACKOFF`` s for a prompt
over ``LARGE_PROMPT`` estimated bytes), every sample waits it out in ``BACKOFF_STEP`` s steps,
and the same request is sent again. For ``THROTTLE_FOR`` s after a backoff ends, dispatch is
throttled further: ``THROTTLED_SENDS`` sends at once, each counting ``THROTTLE_BYTES`` times
its size (the SDK's ``internal_client_holder.py`` 492-532, ``sampling_client.py`` 374-420).

**Shadow holders**: a ``SamplingClient`` unpickled in another process samples through a
``ShadowService`` made from the ``ShadowConfig`` it carried (base URL, key, headers, the
server's flags, the engine's settings): no new session, no heartbeat of the session it does
not own; its own engine and dispatch. One per session and config per process, kept for the
life of the process (as the SDK's), its threads daemon threads; a forked child starts afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from ._client import Client
from ._config import DEFAULT_MAX_RESPONSE_SIZE, TLS, Timeout, cloudflare_headers
from ._observe import mask_url
from ._train_engine import Engine
from ._train_types import ClientConfigResponse
from .resources.types import EncodedTextChunk, ImageChunk, ModelInput
from .sse import DEFAULT_MAX_SIZE

__all__ = [
    "BACKOFF",
    "DispatchBytes",
    "SampleDispatch",
    "ShadowConfig",
    "ShadowService",
    "dispatch_size",
    "shadow_service",
]

SAMPLE_SENDS = 400  # samples being sent at once, at most
THROTTLED_SENDS = 10  # ... while throttled after a backoff
THROTTLE_BYTES = 20  # a throttled send counts this many times its size against the byte budget
THROTTLE_FOR = 10.0  # seconds after a backoff ends that dispatch stays throttled
BACKOFF = 1.0  # seconds of backoff after a 429
LARGE_BACKOFF = 5.0  # ... for a prompt over LARGE_PROMPT estimated bytes
LARGE_PROMPT = 128 * 1024
BACKOFF_STEP = 1.0  # a sample waiting out a backoff looks again after this many seconds


class DispatchBytes:
    """The session's sampling dispatch budget (``client/config``'s ``sample_dispatch_bytes_semaphore_size``,
    10 MiB): a sample is sent only while the samples being sent are within it, by their estimated
    size (10 bytes a token, an image's or audio's bytes). As the SDK's ``BytesSemaphore``, a send
    waits only while the budget is overdrawn, so one larger than the whole budget still goes."""

    def __init__(self, size: int) -> None:
        self.left = size
        self._cond = threading.Condition()

    def take(self, size: int) -> None:
        """Take ``size`` bytes of the budget, waiting while it is overdrawn (``give`` them back)."""
        with self._cond:
            while self.left < 0:
                self._cond.wait()
            self.left -= size

    def give(self, size: int) -> None:
        """Give back ``size`` bytes that ``take`` took."""
        with self._cond:
            self.left += size
            self._cond.notify_all()


def dispatch_size(prompt: ModelInput) -> int:
    """A prompt's size as the SDK counts it for the dispatch budget."""
    total = 0
    for chunk in prompt.chunks:
        if isinstance(chunk, EncodedTextChunk):
            total += 10 * len(chunk.tokens)
        else:
            total += len(chunk.data if isinstance(chunk, ImageChunk) else chunk.dmel)
    return total


class SampleDispatch:
    """The holder-wide limits of sending samples, and the backoff a 429 asks for (module docstring).

    The durations are attributes (the SDK's values by default) so that a test can stretch or
    shrink them instead of racing the clock.
    """

    def __init__(self, size: int) -> None:
        self.bytes = DispatchBytes(size)
        self.backoff_until: float | None = None  # time.monotonic() until which no sample is sent
        self.backoff, self.large_backoff, self.step = BACKOFF, LARGE_BACKOFF, BACKOFF_STEP
        self.throttle_for = THROTTLE_FOR
        self.backoffs = 0  # how many times a sample was refused (429 or 402) and backed off
        self._sends = threading.BoundedSemaphore(SAMPLE_SENDS)
        self._throttled = threading.BoundedSemaphore(THROTTLED_SENDS)
        self._count = threading.Lock()
        self.waiting = 0  # sends waiting for their turn (a slot or bytes)

    def throttled(self) -> bool:
        """Whether a backoff ended less than ``throttle_for`` seconds ago (or still lasts)."""
        until = self.backoff_until
        return until is not None and time.monotonic() - until < self.throttle_for

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Hold a send's turn while the block runs: a slot of 400, a throttled slot of 10 when
        ``throttled()``, and ``size`` bytes of the budget (20 times that when ``throttled()``).
        Plain acquires and releases (one is held per sample sent: an ``ExitStack`` of nested
        context managers cost several times as much)."""
        held: list[threading.BoundedSemaphore] = []
        taken = 0
        with self._count:
            self.waiting += 1
        try:
            try:
                self._sends.acquire()
                held.append(self._sends)
                if self.throttled():
                    self._throttled.acquire()
                    held.append(self._throttled)
                bytes_ = size * THROTTLE_BYTES if self.throttled() else size
                self.bytes.take(bytes_)
                taken = bytes_
            finally:
                with self._count:
                    self.waiting -= 1
            yield
        finally:
            if taken:
                self.bytes.give(taken)
            for semaphore in reversed(held):
                semaphore.release()

    def back_off(self, size: int) -> None:
        """A sample of ``size`` estimated bytes was refused (429, 402): every sample waits."""
        with self._count:
            self.backoffs += 1
        pause = self.backoff if size <= LARGE_PROMPT else self.large_backoff
        self.backoff_until = time.monotonic() + pause

    def wait_backoff(self, stopping: threading.Event) -> bool:
        """Wait while a backoff lasts, looking again every ``step`` seconds (as the SDK);
        False when ``stopping`` is set first (the client is closing)."""
        while (until := self.backoff_until) is not None and time.monotonic() < until:
            if stopping.wait(self.step):
                return False
        return True


@dataclasses.dataclass(frozen=True)
class ShadowConfig:
    """What a shadow holder is built from in another process (the SDK's ``_ShadowHolderConfig``).

    ``api_key`` travels in the pickle (a worker may have no credentials of its own) but
    never in a repr; the base URL's credentials are masked there too. So do the client's
    connection settings: a ``proxy=`` given to it (credentials included; a proxy from the
    environment is the worker's own to read, as ``trust_env`` says), ``proxy_tunnel``,
    ``verify`` (a path or ``TLS``; an ``ssl.SSLContext`` cannot travel: pickling refuses it
    rather than let a worker trust less or more than its parent) and the body limits.
    """

    session_id: str
    base_url: str
    api_key: str | None
    default_headers: dict[str, str]
    flags: dict[str, Any]  # the server's client/config, as the handshake got it
    handshake: bool
    cancel_enabled: bool
    timeout: Timeout
    max_retries: int
    result_timeout: float
    poll_timeout: float
    submit_workers: int
    poll_workers: int
    proxy: str | None = None
    proxy_tunnel: bool = False
    verify: bool | str = True  # a CA bundle path, or whether to verify
    tls: tuple[str | None, bool] | None = None  # verify=TLS(extra_ca, system)
    trust_env: bool = True
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    max_event_size: int = DEFAULT_MAX_SIZE

    def __repr__(self) -> str:
        return (
            f"ShadowConfig(session_id={self.session_id!r}, base_url={mask_url(self.base_url)!r}, "
            f"api_key={'***' if self.api_key else None!r}, headers={sorted(self.default_headers)!r}, "
            f"proxy={mask_url(self.proxy) if self.proxy else None!r})"
        )

    @classmethod
    def of(
        cls, session_id: str, client: Client, config: ClientConfigResponse, engine: Engine
    ) -> ShadowConfig:
        """The shadow config of a session sending through ``client`` with ``engine``."""
        secret = cloudflare_headers()  # from the environment: a worker reads its own
        known = client._auth._config or {}
        transport = client._transport
        verify = transport.verify
        if isinstance(verify, ssl.SSLContext):
            raise TypeError(
                "A SamplingClient whose Client verifies TLS with an ssl.SSLContext cannot be pickled "
                "(a context cannot travel to another process): give the Client verify= a CA bundle "
                "path or tinker_sync.TLS(...) instead"
            )
        given = dict(transport.proxies.sources).get("https") == "proxy="  # not the environment's
        return cls(
            session_id=session_id,
            base_url=client.base_url,
            api_key=client.api_key,
            default_headers={k: v for k, v in client.default_headers.items() if k not in secret},
            flags={**known, **msgspec.to_builtins(config)},
            handshake=client._auth.handshake,
            cancel_enabled=engine.cancel_enabled,
            timeout=client.timeout,
            max_retries=client.max_retries,
            result_timeout=engine.result_timeout,
            poll_timeout=engine.poll_timeout,
            submit_workers=engine.pace.cap,
            poll_workers=engine.poll_workers,
            proxy=transport.proxies.https if given else None,
            proxy_tunnel=transport.proxy_tunnel,
            verify=verify
            if isinstance(verify, bool)
            else True
            if isinstance(verify, TLS)
            else os.fspath(verify),
            tls=(_path(verify.extra_ca), verify.system) if isinstance(verify, TLS) else None,
            trust_env=client.trust_env,
            max_response_size=client.max_response_size,
            max_event_size=client.max_event_size,
        )

    def key(self) -> str:
        """What tells two configs apart (the cache's key)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=repr)


def _path(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


class ShadowService:
    """The holder of a session's sampling clients in a process that does not own the session:
    its own client, engine and dispatch, the session's flags; no session made, no heartbeat."""

    def __init__(self, config: ShadowConfig) -> None:
        self.session_id = config.session_id
        self._shadow = config
        self._config = msgspec.convert(config.flags, ClientConfigResponse)
        self._client = Client(
            config.api_key,
            config.base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
            default_headers=config.default_headers,
            pool_maxsize=config.submit_workers + config.poll_workers + 2,
            handshake=config.handshake,
            proxy=config.proxy,
            proxy_tunnel=config.proxy_tunnel,
            verify=config.verify if config.tls is None else TLS(*config.tls),
            trust_env=config.trust_env,
            max_response_size=config.max_response_size,
            max_event_size=config.max_event_size,
        )
        if config.handshake:  # the flags are known: no client/config again
            self._client._auth._config = dict(config.flags)
        self._engine = Engine(
            self._client,
            submit_workers=config.submit_workers,
            poll_workers=config.poll_workers,
            result_timeout=config.result_timeout,
            poll_timeout=config.poll_timeout,
        )
        self._engine.retrieve_futures = self._config.sample_use_retrieve_futures
        self._engine.billing.limit = self._config.billing_exception_max_pause_duration_sec
        self._engine.cancel_enabled = config.cancel_enabled
        self._sample_dispatch = SampleDispatch(self._config.sample_dispatch_bytes_semaphore_size)

    def __repr__(self) -> str:
        return f"<tinker_sync shadow holder of session_id={self.session_id!r}>"

    def _shadow_config(self) -> ShadowConfig:
        return self._shadow

    def close(self) -> None:
        """Fail what is pending, join the engine's threads, close the client; this process's
        next unpickled copy of the session's samplers makes a new holder."""
        key = (self.session_id, self._shadow.key())
        with _shadows_lock:
            if _shadows.get(key) is self:
                del _shadows[key]
        self._engine.close()
        self._client.close()


_shadows: dict[tuple[str, str], ShadowService] = {}
_shadows_lock = threading.Lock()


def shadow_service(config: ShadowConfig) -> ShadowService:
    """This process's shadow holder for ``config`` (made on first use, then shared)."""
    key = (config.session_id, config.key())
    with _shadows_lock:
        service = _shadows.get(key)
        if service is None:
            service = _shadows[key] = ShadowService(config)
        return service


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads: it makes its own shadow holders."""
    global _shadows_lock
    _shadows_lock = threading.Lock()
    _shadows.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
