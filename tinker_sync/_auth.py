"""The official client's handshake and auth: client config once, then an API key or short-lived JWTs.

Rules:
1. Lazily, once per client (its ``with_options`` copies share the result), the
   first API request is preceded by ``POST client/config``, as the official SDK
   does. A 404 means the defaults (an older server). Any other failure fails the
   request that needed it and is not remembered: the next API request asks again.
   It is sent by the client whose call needs it, with that call's timeout and
   retries (a 5xx, a connection error or a timeout is retried like any call), so
   it is bounded as the call is. An answer that is not a JSON object is an error
   (not a Tinker API). Signed download URLs and paths outside ``/api/`` never
   trigger it. ``Client(handshake=False)`` opts out: the flags are the defaults
   and the key is sent as is.
2. When the server sets ``pjwt_auth_enabled``, the credential (an API key, or what
   ``TINKER_CREDENTIAL_CMD`` prints, run for each exchange) is exchanged at
   ``auth/token`` for a JWT, sent as ``X-API-Key`` from then on. It is replaced
   before it expires (at half its life, or with 60 s or less left) when a request
   needs it, with no background thread; a request answered 401 ``invalid_token``
   is replayed once with a new one (``replace``).
3. A JWT is a secret like the key: never in a log, a message or ``repr``.
4. Requests go through an ``Exchange``, a callable the client hands in with each
   call that may need one, which sends with the credential given and never asks
   this module for a header (no recursion, no lock held by another thread's
   request).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ._config import CredentialSource, check_api_key
from ._credentials import run_credential_command
from ._exceptions import APIStatusError, AuthenticationError, TinkerError

__all__ = ["REFRESH_MARGIN", "Auth", "Exchange", "is_invalid_token", "jwt_claims"]

log = logging.getLogger("tinker_sync")

REFRESH_MARGIN = 60.0  # a JWT with this many seconds or fewer left is replaced before use
Exchange = Callable[[str, str, dict[str, Any]], Any]  # (path, credential, JSON body) -> decoded JSON


def is_invalid_token(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a response refuses the request's token itself (401, ``error="invalid_token"``, RFC 6750)."""
    return status == 401 and 'error="invalid_token"' in headers.get("www-authenticate", "")


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without verifying it (it came from the server over TLS).

    Raises:
        ValueError: not a JWT (the message never holds the token).
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise ValueError("not a JWT: its claims do not decode") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: its claims are not an object")
    return claims


def _note_handshake(error: TinkerError) -> None:
    """Say in ``error`` (a note, shown with its traceback) that the handshake failed, not the call."""
    log.info("The handshake (POST client/config) failed; the next API request asks again: %s", error)
    error.add_note(
        "while fetching the server's flags (POST client/config) before the first API request; "
        "the next API request asks again (Client(handshake=False) skips it)"
    )


class _Token:
    """A JWT and when to replace it (times from its own claims, so clock skew cannot shorten it)."""

    __slots__ = ("expires", "refresh_at", "value")

    def __init__(self, value: str) -> None:
        self.value = value
        now = time.time()
        try:
            claims = jwt_claims(value)
            expires, issued = float(claims["exp"]), float(claims.get("iat", now))
        except (ValueError, KeyError, TypeError):
            expires, issued = now + 2 * REFRESH_MARGIN, now  # no expiry to read: replace soon
        self.expires = expires
        self.refresh_at = min(now + max(expires - issued, 0.0) / 2, expires - REFRESH_MARGIN)

    def __repr__(self) -> str:
        return "<JWT ***>"

    def fresh(self) -> bool:
        return time.time() < self.refresh_at

    def alive(self) -> bool:
        return time.time() < self.expires


# Every live credential, so that a forked child frees each one's lock before it sends anything.
_auths: weakref.WeakSet[Auth] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for auth in list(_auths):
        auth.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Auth:
    """The credential of one client (and its copies): the handshake's flags, the key or JWT to send."""

    def __init__(self, source: CredentialSource, sdk_version: str, *, handshake: bool = True) -> None:
        self.source = source
        self._sdk_version = sdk_version
        self.handshake = handshake  # whether this client fetches the server's flags (client/config)
        self._lock = threading.Lock()
        # Without the handshake the flags are the defaults from the start: the key, never a JWT.
        self._config: dict[str, Any] | None = None if handshake else {}
        self._token: _Token | None = None
        self._fetcher: int | None = None  # the thread sending a handshake request (it holds the lock)
        _auths.add(self)

    def forked(self) -> None:
        """In a forked child: a free lock (a parent's thread may have held it, mid-handshake, at
        the fork; its exchange is not the child's). What was fetched is kept."""
        self._lock = threading.Lock()
        self._fetcher = None

    def __repr__(self) -> str:
        return f"<Auth source={self.source.origin}>"

    def credential(self) -> str:
        """The credential to present (the key, or a fresh run of the credential command)."""
        if self.source.command is not None and (
            self.source.key is None
            or (self._config or {}).get("credential_default_source") == "credential_cmd"
        ):
            return check_api_key(run_credential_command(self.source.command), "TINKER_CREDENTIAL_CMD")
        assert self.source.key is not None
        return self.source.key

    def config(self, exchange: Exchange) -> dict[str, Any]:
        """The server's client flags, fetched once with ``exchange`` (``{}`` from a server without
        the route). A failure raises and is not remembered (see the module docstring)."""
        config = self._config
        if config is None:
            with self._lock:
                config = self._fetch_config(exchange)
        return config

    def _fetch_config(self, exchange: Exchange) -> dict[str, Any]:
        if self._config is None:
            key = self.source.key if self.source.key is not None else self.credential()
            self._fetcher = threading.get_ident()
            try:
                answer = exchange("client/config", key, {"sdk_version": self._sdk_version})
            except APIStatusError as error:
                if error.status_code != 404:
                    _note_handshake(error)
                    raise
                log.debug("The server has no client/config: default flags")
                answer = {}
            except TinkerError as error:
                _note_handshake(error)
                raise
            finally:
                self._fetcher = None
            if not isinstance(answer, dict):
                raise TinkerError(
                    f"client/config answered {type(answer).__name__}, not a JSON object: is the base URL "
                    "a Tinker API? (Client(handshake=False) skips this request)"
                )
            self._config = answer
        return self._config

    def uses_jwt(self, exchange: Exchange) -> bool:
        """Whether requests carry a JWT from ``auth/token`` (the server's ``pjwt_auth_enabled``)."""
        return bool(self.config(exchange).get("pjwt_auth_enabled"))

    def header(self, exchange: Exchange, *, handshake: bool = True) -> str:
        """The ``X-API-Key`` of the next API request: the key, or a JWT with time left.

        ``exchange`` sends the handshake's requests if they are due. ``handshake=False`` (a path
        outside ``/api/``) sends what is at hand without a handshake.
        """
        if not handshake and self._config is None:
            token = self._token
            return token.value if token is not None else self.source.key or self.credential()
        if not self.uses_jwt(exchange):
            if self.source.key is None:
                raise TinkerError(
                    "TINKER_CREDENTIAL_CMD needs a server with JWT auth; this one takes API keys only: "
                    "set TINKER_API_KEY"
                )
            return self.source.key
        token = self._token
        if token is not None and token.fresh():
            return token.value
        with self._lock:
            token = self._token
            if token is not None and token.fresh():
                return token.value
            try:
                return self._fetch_token(exchange)
            except AuthenticationError:
                raise  # the credential itself was refused: the cached JWT cannot be renewed
            except TinkerError as error:
                if token is None or not token.alive():
                    raise
                log.warning("Replacing the JWT failed, using the current one until it expires: %s", error)
                return token.value

    def replace(self, rejected: str, exchange: Exchange) -> str | None:
        """A JWT other than ``rejected`` (answered 401 invalid_token), or None without JWT auth.

        None too for the handshake's own requests (they run with the lock held): they are not replayed.
        """
        config = self._config
        if not config or not config.get("pjwt_auth_enabled") or self._fetcher == threading.get_ident():
            return None
        with self._lock:
            token = self._token
            if token is not None and token.value != rejected:
                return token.value  # another request already replaced it
            return self._fetch_token(exchange)

    def _fetch_token(self, exchange: Exchange) -> str:
        self._fetcher = threading.get_ident()
        try:
            answer = exchange("auth/token", self.credential(), {})
        finally:
            self._fetcher = None
        jwt = answer.get("jwt") if isinstance(answer, dict) else None
        if not isinstance(jwt, str) or not jwt:
            raise TinkerError("auth/token answered no JWT")
        self._token = _Token(check_api_key(jwt, "auth/token"))
        return jwt

    def jwt(self, exchange: Exchange) -> str | None:
        """The current JWT (exchanged now if needed), or None without JWT auth."""
        return self.header(exchange) if self.uses_jwt(exchange) else None
