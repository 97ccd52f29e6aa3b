"""Checks of a request against the API's shapes: query parameters, JSON bodies, methods.

Rule: every failure here is a client mistake, so each raises ``HTTPError``
with ``violation=True`` (the server answers the JSON error and appends the
message to ``violations``). A missing resource is not a mistake: routes answer
it 404 themselves, without a violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec

from ._types import HTTPError, Request, ServerState

__all__ = ["decode", "method_not_allowed", "query_choice", "query_int", "violation"]

T = TypeVar("T")

_decoders: dict[type, msgspec.json.Decoder[object]] = {}


def violation(status: int, message: str, type: str = "invalid_request_error") -> HTTPError:
    """An HTTPError for a client mistake."""
    return HTTPError(status, message, type, violation=True)


def method_not_allowed(request: Request, allowed: Sequence[str]) -> HTTPError:
    """405 with ``Allow``, for a known path asked with another method."""
    return HTTPError(
        405,
        f"method {request.command} not allowed on {request.path} (allowed: {', '.join(allowed)})",
        "method_not_allowed",
        [("Allow", ", ".join(allowed))],
        violation=True,
    )


def page_size(state: ServerState, limit: int) -> int:
    """The ``limit`` a list answers: capped at ``max_page_size`` when set, as real APIs cap pages
    (the cursor then says the capped limit, and ``total_count`` how many there are)."""
    cap = state.max_page_size
    return limit if cap is None else min(limit, cap)


def query_int(
    request: Request, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    """Query parameter ``name`` as an int in [minimum, maximum]; ``default`` when absent."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise violation(400, f"query parameter {name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise violation(400, f"query parameter {name} must be {bound}, got {value}")
    return value


def query_choice(request: Request, name: str, allowed: Sequence[str], default: str) -> str:
    """Query parameter ``name``, one of ``allowed``; ``default`` when absent."""
    value = request.query.get(name, default)
    if value not in allowed:
        raise violation(400, f"query parameter {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def decode(request: Request, cls: type[T]) -> T:
    """The JSON body decoded as ``cls`` (a msgspec Struct): 400 if not JSON, 422 if the shape is wrong.

    An empty body decodes as ``{}``, so a Struct with a required field answers 422 naming it.
    """
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.json.Decoder(cls)
    try:
        value = decoder.decode(request.body or b"{}")
    except msgspec.ValidationError as error:
        raise violation(422, f"{request.command} {request.path}: {error}", "validation_error") from None
    except msgspec.DecodeError as error:
        raise violation(400, f"{request.command} {request.path}: invalid JSON body: {error}") from None
    return value  # type: ignore[return-value]
