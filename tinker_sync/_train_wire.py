"""The training engine's hot path: the small JSON POSTs it sends by the thousand (``asample``, ``retrieve_future``).

A thousand samples in flight are two thousand requests (a submission and a poll
each), and the client's generic path (``Client.request`` / ``stream``) spends
most of a sample's client CPU on them: it builds every request from scratch (the
URL checks, the Tinker headers, the key), runs hooks and retries, and wraps every
body in a ``StreamedResponse``. ``Wire.post`` sends the same request with less:

- the headers of each path are built by the client's own ``build_request`` (the
  same names and values, the key included) and kept ``TEMPLATE_TTL`` seconds, so a
  renewed JWT goes out within that; each request adds a fresh idempotency key and
  its own headers;
- one attempt through the client's transport (its pools, proxy, TLS and error
  mapping), the body read whole (compressed when the server likes: ``Accept-Encoding``
  as the client's plain calls send it);
- errors are the client's: connection errors and timeouts as the transport maps
  them, a status >= 400 the ``APIStatusError`` that ``status_error`` makes;
- the client's guarantees hold: the body is read within ``max_response_size``
  (``ResponseTooLargeError`` past it), and a 401 ``invalid_token`` (a JWT refused
  before its expiry) is sent once more, with a new JWT, through the generic path.

Nothing is hidden from an observer: when the client has event hooks or dumps
headers, every request takes the generic path instead, so the hooks see each.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from ._auth import is_invalid_token
from ._base_client import BaseClient
from ._config import Timeout
from ._options import RequestOptions
from ._response import StreamedResponse
from ._status_errors import status_error
from ._transport import Request

__all__ = ["TEMPLATE_TTL", "Wire", "new_key"]

TEMPLATE_TTL = 5.0  # seconds a path's headers are reused before the client builds them again


def new_key() -> str:
    """A fresh idempotency key, a ``uuid4`` as the SDK sends (``os.urandom``: a forked child never
    repeats its parent's)."""
    return str(uuid.uuid4())


class Wire:
    """One POST, one attempt, the answer read whole: (content type, body)."""

    def __init__(self, client: BaseClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._templates: dict[str, tuple[float, str, dict[str, str], dict[str, str]]] = {}

    @property
    def fast(self) -> bool:
        """Whether requests skip the generic path: only when nothing observes them."""
        return not self.client.dump_headers and not any(self.client.event_hooks.values())

    def _template(self, path: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """The path's URL, headers, and their names by lower case."""
        now = time.monotonic()
        with self._lock:
            cached = self._templates.get(path)
        if cached is not None and now - cached[0] < TEMPLATE_TTL:
            return cached[1], cached[2], cached[3]
        built = self.client.build_request(RequestOptions("POST", path, None, None, {}, read_body=True))
        headers = {name: value for name, value in built.headers.items() if name != "X-Idempotency-Key"}
        names = {name.lower(): name for name in headers}
        with self._lock:
            self._templates[path] = (now, built.url, headers, names)
        return built.url, headers, names

    def post(
        self,
        path: str,
        body: Any,
        headers: Mapping[str, str],
        timeout: float | Timeout,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[str, bytes]:
        """POST ``body`` as JSON to ``path`` once: the answer's content type and body.

        Raises:
            APIStatusError: a status >= 400 (its subclass for the status).
            APIConnectionError, APITimeoutError: as the client raises them.
        """
        timeouts = Timeout.coerce(timeout)
        if not self.fast or timeouts.total is not None:  # a deadline needs the watchdog's care: generic
            return self._generic(path, body, headers, timeouts, idempotency_key)
        url, template, names = self._template(path)
        key = idempotency_key or new_key()
        own = {"X-Idempotency-Key": key, "x-stainless-retry-count": "0"}
        if timeouts.read is not None:
            own["x-stainless-read-timeout"] = f"{timeouts.read:g}"
        fields = _merged(template, names, headers, own)
        request = Request("POST", url, fields, msgspec.json.encode(body))
        response = StreamedResponse(
            self.client._transport.send(request, timeouts), request, sender=self.client
        )
        if is_invalid_token(response.status_code, response.headers):
            response.close()  # the template's JWT was refused before its expiry: a new one, and one replay
            with self._lock:
                self._templates.pop(path, None)
            self.client._auth.replace(
                fields.get(names.get("x-api-key", "X-API-Key"), ""), self.client._exchange()
            )
            return self._generic(path, body, headers, timeouts, key)
        if response.status_code >= 400:
            raise status_error(response)
        return response.headers.get("content-type", ""), response.read_bounded(self.client.max_response_size)

    def _generic(
        self, path: str, body: Any, headers: Mapping[str, str], timeouts: Timeout, key: str | None
    ) -> tuple[str, bytes]:
        """The same POST through the client's generic path (hooks, dumps, deadline, JWT replay), one attempt."""
        sent = dict(headers)
        if key is not None:
            sent["X-Idempotency-Key"] = key
        options = RequestOptions("POST", path, None, sent, body, None, timeouts, 0, read_body=True)
        with self.client._call(options) as response:
            return response.headers.get("content-type", ""), response.read()


def _merged(
    template: Mapping[str, str], names: Mapping[str, str], *layers: Mapping[str, str]
) -> dict[str, str]:
    """``template`` (``names``: its names by their lower case) with each layer's headers over it,
    later names winning case-insensitively (as ``Headers`` would), in a plain dict: urllib3 copies
    and walks it for each request, and a dict costs a fraction of a case-insensitive ``Headers``."""
    fields = dict(template)
    lowered: dict[str, str] | None = None
    for layer in layers:
        for name, value in layer.items():
            if name not in fields:
                if lowered is None:
                    lowered = dict(names)
                other = lowered.get(name.lower())
                if other is not None:
                    del fields[other]
                lowered[name.lower()] = name
            fields[name] = value
    return fields
