"""The handshake and auth of the official SDK: client config, JWT exchange, API-key metadata, telemetry.

Routes (relative to ``/api/v1``): ``POST client/config`` and ``POST client/dynamic_config``
(the flags in ``client_config`` / ``client_dynamic_config``, settable per test),
``POST auth/token`` (an API key exchanged for a signed JWT), ``GET|DELETE auth/apikey/me``
(the presented key's metadata; DELETE revokes it), ``POST telemetry`` (accepted and
counted, never a violation).

Rules:
1. ``authenticate`` runs before every ``/api/v1`` route. Without ``pjwt_auth_enabled`` an
   API key or a live JWT is accepted; with it, every route but ``client/config`` and
   ``auth/*`` wants a JWT, and a raw key there is a violation (the client ignored the flag).
2. A JWT that expired, was revoked (``revoke_tokens``) or does not verify is answered
   401 with ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750), never a
   violation: a client replaces it once and replays.
3. ``auth/token`` and ``auth/apikey/me`` take an API key, never a JWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import threading
import time
from typing import Any

import msgspec

from ._types import HTTPError, Request, ServerState
from ._validate import decode, method_not_allowed, violation

__all__ = ["CLAIMS", "Handshake", "INVALID_TOKEN"]

INVALID_TOKEN = ("WWW-Authenticate", 'Bearer error="invalid_token"')
CLAIMS: dict[str, str] = {  # who the mock's keys belong to (whoami reads these from the JWT)
    "sub": "tml:user:mock-user",
    "org_id": "mock-org",
    "email": "mock-user@example.com",
}
ORG_NAME = "Mock Org"


class ClientConfigRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``client/config`` and ``client/dynamic_config`` (the SDK's ClientConfigRequest)."""

    sdk_version: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Handshake:
    """Keys, JWTs and the telemetry count of one server."""

    ROUTES = ("client", "auth", "telemetry")

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.lock = threading.Lock()
        self.secret = secrets.token_bytes(32)
        self.keys: dict[str, int] = {}  # extra API keys -> key id
        self.revoked_keys: set[str] = set()
        self.revoked_before = 0.0  # JWTs issued before this (unix time) are refused
        self.ids = itertools.count(1)
        self.tokens_issued = 0
        self.refusals = 0  # JWTs still to refuse, whatever they are (refuse_jwt)
        self.telemetry: list[dict[str, Any]] = []

    # -- keys and tokens ---------------------------------------------------------------------------

    def is_key(self, key: str) -> bool:
        """Whether ``key`` is a live API key of this server."""
        with self.lock:
            if key in self.revoked_keys:
                return False
            return key == self.state.api_key or key in self.keys

    def add_key(self, key: str) -> None:
        """Accept ``key`` as another API key."""
        with self.lock:
            self.keys.setdefault(key, 1000 + len(self.keys))
            self.revoked_keys.discard(key)

    def mint(self, lifetime: float | None = None) -> str:
        """A JWT signed by this server (HS256), ``lifetime`` seconds long."""
        now = time.time()
        with self.lock:
            self.tokens_issued += 1
            jti = next(self.ids)
        claims = {
            **CLAIMS,
            "iss": "tinker-mock",
            "iat": now,
            "exp": now + (self.state.jwt_lifetime if lifetime is None else lifetime),
            "jti": jti,
        }
        header = _b64(msgspec.json.encode({"alg": "HS256", "typ": "JWT"}))
        payload = _b64(msgspec.json.encode(claims))
        signature = hmac.new(self.secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def check_jwt(self, token: str) -> None:
        """Raise 401 invalid_token unless ``token`` is a live JWT of this server."""
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self.secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(signature)):
                raise ValueError("bad signature")
            claims = msgspec.json.decode(_unb64(payload))
            issued, expires = float(claims["iat"]), float(claims["exp"])
        except (ValueError, KeyError, TypeError, msgspec.DecodeError):
            raise HTTPError(401, "the token does not verify", "invalid_token", [INVALID_TOKEN]) from None
        if time.time() >= expires:
            raise HTTPError(401, "the token expired", "invalid_token", [INVALID_TOKEN])
        with self.lock:
            revoked = issued < self.revoked_before
        if revoked:
            raise HTTPError(401, "the token was revoked", "invalid_token", [INVALID_TOKEN])

    def revoke_tokens(self) -> None:
        """Refuse every JWT issued so far (as a server whose signing key rotated would)."""
        with self.lock:
            self.revoked_before = time.time() + 1e-6

    def authenticate(self, request: Request, parts: list[str]) -> None:
        """Check the request's ``X-API-Key`` (an API key or a JWT) for the route ``parts``."""
        key = request.headers.get("x-api-key")
        if key is None:
            raise HTTPError(401, "missing X-API-Key", "authentication_error", violation=True)
        head = parts[0] if parts else ""
        is_jwt = key.startswith("eyJ") and key.count(".") == 2
        if head == "auth":
            if is_jwt:
                raise violation(
                    401, f"/{'/'.join(parts)} takes an API key, not a JWT", "authentication_error"
                )
            if not self.is_key(key):
                raise HTTPError(401, "invalid X-API-Key", "authentication_error")
            return
        if is_jwt:
            with self.lock:
                refuse, self.refusals = self.refusals > 0, max(0, self.refusals - 1)
            if refuse:
                raise HTTPError(401, "the token was rejected", "invalid_token", [INVALID_TOKEN])
            return self.check_jwt(key)
        if not self.is_key(key):
            raise HTTPError(401, "invalid X-API-Key", "authentication_error")
        if self.state.client_config.get("pjwt_auth_enabled") and parts[:2] != ["client", "config"]:
            raise violation(
                401,
                "JWT auth is enabled: exchange the API key at /api/v1/auth/token",
                "authentication_error",
            )

    # -- routes ------------------------------------------------------------------------------------

    def route(self, request: Request, parts: list[str]) -> None:
        """Answer ``client/...``, ``auth/...`` and ``telemetry``."""
        method = request.command
        if parts in (["client", "config"], ["client", "dynamic_config"]):
            if method != "POST":
                raise method_not_allowed(request, ["POST"])
            decode(request, ClientConfigRequest)
            flags = self.state.client_config if parts[1] == "config" else self.state.client_dynamic_config
            return request.send_json(200, dict(flags))
        if parts == ["auth", "token"]:
            if method != "POST":
                raise method_not_allowed(request, ["POST"])
            if request.json_body():
                raise violation(422, "auth/token takes an empty JSON object", "validation_error")
            return request.send_json(200, {"jwt": self.mint()})
        if parts == ["auth", "apikey", "me"]:
            return self._apikey_me(request)
        if parts == ["telemetry"]:
            if method != "POST":
                raise method_not_allowed(request, ["POST"])
            try:
                batch = msgspec.json.decode(request.body or b"{}")
            except msgspec.DecodeError:
                batch = {}
            with self.lock:
                self.telemetry.append(batch if isinstance(batch, dict) else {})
            return request.send_json(200, {"status": "accepted"})
        raise violation(404, f"no route for {method} {request.path}", "not_found")

    def _apikey_me(self, request: Request) -> None:
        key = request.headers["x-api-key"]
        if request.command == "DELETE":
            with self.lock:
                self.revoked_keys.add(key)
            return request.send_empty(204)
        if request.command != "GET":
            raise method_not_allowed(request, ["GET", "DELETE"])
        with self.lock:
            key_id = self.keys.get(key, 1)
        request.send_json(
            200,
            {
                "key_id": key_id,
                "name": f"mock-key-{key_id}",
                "note": "a key of the mock server",
                "details": {
                    "org_details": {"name": ORG_NAME},
                    "user_details": {"email": CLAIMS["email"]},
                },
            },
        )
