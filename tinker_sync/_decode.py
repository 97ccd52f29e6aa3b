"""What a body means: JSON decoded into a type (``decode_json``: a mismatch names the field and
shows the start of the body, secrets masked), a read response's value (``decode_body``), the
charset a ``Content-Type`` names (``charset``). No reading here: the body is already read."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from ._event_stream import json_decoder
from ._exceptions import APIResponseValidationError
from ._observe import redact

__all__ = ["ReadResponse", "charset", "decode_body", "decode_json"]


class ReadResponse(Protocol):
    """What ``decode_body`` reads: a response and its whole body (``StreamedResponse``)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def read(self) -> bytes:
        """The whole body."""

    def text(self) -> str:
        """The whole body as text."""


def decode_json(content: bytes | memoryview, cast_to: Any, response: Any = None) -> Any:
    """Decode JSON into ``cast_to``; a mismatch raises APIResponseValidationError naming the field
    (msgspec's ``$.path``) and showing the start of the body."""
    try:
        return json_decoder(cast_to).decode(content)
    except msgspec.ValidationError as exc:
        message = f"Response does not fit {getattr(cast_to, '__name__', cast_to)!s}: {exc}"
        raise APIResponseValidationError(
            f"{message}; the body starts with {_head(content, response)}", response
        ) from exc
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        message = f"Response is not valid JSON: {exc}"
        raise APIResponseValidationError(
            f"{message}; the body starts with {_head(content, response)}", response
        ) from exc


def _head(content: bytes | memoryview, response: Any = None, size: int = 200) -> str:
    """The start of a body, for a message (the request's secrets masked)."""
    head = f"{bytes(content[:size])!r}{'...' if len(content) > size else ''}"
    request = getattr(response, "request", None)
    return redact(head, request.headers, request.url) if request is not None else head


def charset(headers: Mapping[str, str], default: str = "utf-8") -> str:
    """The charset a ``Content-Type`` names (its codec's name), else ``default``."""
    for param in headers.get("content-type", "").split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            name = value.strip("\"' ")
            try:
                return codecs.lookup(name).name
            except LookupError:
                return default
    return default


def decode_body(response: ReadResponse, cast_to: Any) -> Any:
    """A read response's body: ``bytes``/``str`` as asked, JSON into ``cast_to``, else JSON or text."""
    content = response.read()
    if cast_to is bytes:
        return content
    if cast_to is str:
        return response.text()
    if cast_to is not None:
        return decode_json(content, cast_to, response)
    if not content:
        return None
    content_type = response.headers.get("content-type", "application/json").lower()
    if "json" not in content_type:
        return response.text()
    try:
        return msgspec.json.decode(content)
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise APIResponseValidationError(f"Response is not valid JSON: {exc}", response) from exc
