"""The SDK's exception for an error response (``status_error``): its body read, capped, and
summarised in the message; object stores' XML error documents (a signed URL's host) read too.

Rules:
1. An error body is read up to ``MAX_ERROR_BODY`` (the rest is discarded) and released: a
   broken or over-long one never hides the status it explains.
2. The message quotes at most ``MAX_MESSAGE_BODY`` bytes, the request's secrets masked;
   ``exc.body`` keeps the parsed whole (JSON decoded, XML fields, else text).
3. XML is read with a regular expression over the capped body, never an XML parser: no
   entities, no DTDs.
4. A proxy's own answer (it could not reach the API, or refused to) says so: the headers
   only a proxy puts on an answer of its own mark it (``proxy_answer``). Its class is
   still its status's (a 502 or 503 is retried as any other).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from ._exceptions import APIStatusError, status_error_class
from ._observe import redact
from ._transport import Request

__all__ = ["MAX_ERROR_BODY", "MAX_MESSAGE_BODY", "ErrorResponse", "proxy_answer", "status_error", "xml_error"]

# Error bodies are read for the exception, up to this size (the rest is discarded); its message
# quotes at most MAX_MESSAGE_BODY bytes of it (``.body`` keeps the parsed whole).
MAX_ERROR_BODY = 1 << 20
MAX_MESSAGE_BODY = 1024

# The simple elements of an XML error document (S3, GCS, Azure): <Error><Code>..</Code>...</Error>.
_XML_ELEMENT = re.compile(r"<([A-Za-z][\w.-]*)>([^<]*)</\1>")
_EXPIRED = re.compile(r"expir", re.IGNORECASE)


class ErrorResponse(Protocol):
    """What ``status_error`` reads: a response with its status, request and body (``StreamedResponse``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def request(self) -> Request: ...
    @property
    def headers(self) -> Mapping[str, str]: ...

    def read_capped(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body, then the connection released."""


def xml_error(content: bytes) -> dict[str, str] | None:
    """The fields of an object store's XML error document (``Code``, ``Message``, ``Details``, ...), or None.

    S3 answers ``<Error><Code>AccessDenied</Code><Message>Request has
    expired</Message>...``, GCS ``<Error><Code>ExpiredToken</Code>...``, Azure
    ``<Error><Code>AuthenticationFailed</Code>...``. Read with a regular
    expression over the (capped) body, never an XML parser: no entities, no DTDs.
    """
    text = content.decode("utf-8", errors="replace").lstrip()
    if not (text.startswith("<?xml") or text.startswith("<Error")) or "<Error>" not in text:
        return None
    fields = {name: html.unescape(value).strip() for name, value in _XML_ELEMENT.findall(text)}
    return fields if "Code" in fields else None


def _xml_summary(fields: Mapping[str, str]) -> str:
    """``signed URL expired: AccessDenied: Request has expired`` (the expiry said first, when it is one)."""
    code, message = fields.get("Code", ""), fields.get("Message", "")
    details = fields.get("Details") or fields.get("AuthenticationErrorDetail") or ""
    summary = f"{code}: {message}" if message else code
    if details and details not in message:
        summary += f" ({details})"
    if code == "ExpiredToken" or _EXPIRED.search(f"{message} {details}"):
        summary = f"signed URL expired: {summary}"
    return summary


def proxy_answer(headers: Mapping[str, str]) -> str | None:
    """The header that marks an answer as a proxy's own, not the API's, or None.

    Squid's error pages carry ``X-Squid-Error``; RFC 9209's ``Proxy-Status``
    with an ``error`` parameter is any proxy's "I could not forward this" (one
    without it describes a response the proxy forwarded).
    """
    squid = headers.get("X-Squid-Error")
    if squid:
        return f"X-Squid-Error: {squid}"
    status = headers.get("Proxy-Status")
    if status and re.search(r";\s*error\s*=", status):
        return f"Proxy-Status: {status}"
    return None


def status_error(response: ErrorResponse) -> APIStatusError:
    """The SDK's exception for an error response, its body read (capped) and released.

    A JSON body is kept as decoded JSON (``exc.body``); an object store's XML
    error document (a signed URL's host) is summarised as ``Code: Message``,
    its fields in ``exc.body``, and an expired signature says "signed URL expired".
    """
    content = response.read_capped(MAX_ERROR_BODY)
    body: Any
    try:
        body = msgspec.json.decode(content) if content else None
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        body = content.decode("utf-8", errors="replace")
    if not content:
        text = "(empty body)"
    elif isinstance(body, str) and (fields := xml_error(content)) is not None:
        body, text = fields, _xml_summary(fields)
    elif len(content) <= MAX_MESSAGE_BODY:
        text = content.decode("utf-8", errors="replace")
    else:
        text = content[:MAX_MESSAGE_BODY].decode("utf-8", errors="ignore") + f"... ({len(content)} bytes)"
    text = redact(text, response.request.headers, response.request.url)
    cls = status_error_class(response.status_code)
    mark = proxy_answer(response.headers)
    if mark is not None:
        mark = redact(" ".join(mark.split()), response.request.headers, response.request.url)
        text = f"the proxy answered, not the API ({mark}): {text}"
    return cls(f"Error code: {response.status_code} - {text}", response, body)
