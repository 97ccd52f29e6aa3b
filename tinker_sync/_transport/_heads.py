"""Request and response heads: http.client's own code, minus two costs it pays on every request.

On a kept-alive connection, most of a small request's CPU is spent on its heads:

1. **Response heads.** http.client hands every head to ``email.parser``, a feed parser built
   for MIME messages. A head whose every line is a plain ``Name: value`` line gives the
   same ``HTTPMessage`` by splitting its lines as the parser's ``compat32`` policy splits
   them. Any other head (a folded line, a bare CR, a line that is no header, a head cut
   short, a multipart or message content type, which the email parser reads further) goes
   to the email parser as before. Either way urllib3 sees the very message it always saw,
   defects included; the status line, the framing and the limits (``_read_headers``: 100
   lines of 64 KiB at most) stay http.client's, as its ``begin()`` runs unchanged.
2. **Request heads.** ``putheader`` encodes and checks each name and value again for every
   request, though a client sends the same dozen or so on each. A line it once built is
   reused for the same name and value (never a credential's: those are not kept). And a
   small body goes out in the same ``send`` as its head (urllib3 sends them apart): one
   segment on the wire instead of two, so the server wakes once.
"""

from __future__ import annotations

import email.parser
import http.client
import re
import types
from typing import Any

__all__ = ["HTTPResponse", "RequestHeads", "parse_headers", "plain_headers"]

# A header line as the email parser's ``headerRE`` reads one (a name of printable ASCII but
# ':'), with no CR or LF before its end: a bare CR would split the line there.
_PLAIN = re.compile(rb"([\x21-\x39\x3b-\x7e]+):([^\r\n]*)\r?\n")
_DEEPER = re.compile(rb"multipart|message", re.IGNORECASE)  # content types parsed past the head
COALESCE_MAX = 16 * 1024  # bodies up to this size go out with their head
_LINES_MAX = 512  # header lines kept for reuse (then forgotten all at once, and built again)
_lines: dict[tuple[Any, Any], bytes] = {}  # (name, value) -> the line http.client built for them
_SECRET = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})  # never kept


def plain_headers(lines: list[bytes], cls: type[http.client.HTTPMessage]) -> http.client.HTTPMessage | None:
    """The message of a head whose lines (the blank line last) are all plain, else None."""
    if lines[-1] not in (b"\r\n", b"\n"):
        return None
    message = cls()
    for line in lines[:-1]:
        match = _PLAIN.fullmatch(line)
        if match is None:
            return None
        name, value = match.groups()
        if len(name) == 12 and name.lower() == b"content-type" and _DEEPER.search(value):
            return None
        message.set_raw(name.decode("ascii"), value.lstrip(b" \t").decode("iso-8859-1"))
    message.set_payload("")  # what the email parser leaves: an empty body after the head
    return message


def parse_headers(fp: Any, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage) -> Any:
    """``http.client.parse_headers``, plain heads parsed without the email package."""
    lines = http.client._read_headers(fp)  # type: ignore[attr-defined]
    message = plain_headers(lines, _class)
    if message is not None:
        return message
    return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def _calling_our_parser(function: Any) -> Any:
    """``function``, http.client's own code, calling ``parse_headers`` above: every other line of
    it stays the running Python's (a Python without ``_read_headers`` keeps its own parser)."""
    if not hasattr(http.client, "_read_headers"):
        return function
    namespace = dict(function.__globals__, parse_headers=parse_headers)
    return types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
    )


class HTTPResponse(http.client.HTTPResponse):
    """http.client's response, its head read by ``parse_headers`` above."""

    begin = _calling_our_parser(http.client.HTTPResponse.begin)


class RequestHeads:
    """Mixed into urllib3's connections: header lines reused, a small body sent with its head."""

    response_class: type[http.client.HTTPResponse] = HTTPResponse
    _body: bytes | None = None  # a small body that may go out with the head
    _head: bytes | None = None  # the head, held until we see what urllib3 sends after it

    def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> None:
        self._body = body if type(body) is bytes and 0 < len(body) <= COALESCE_MAX else None
        try:
            super().request(method, url, body, *args, **kwargs)  # type: ignore[misc]
            if self._head is not None:  # nothing followed the head: it goes alone
                head, self._head = self._head, None
                super().send(head)  # type: ignore[misc]
        finally:
            self._body = self._head = None

    def send(self, data: Any) -> None:
        """The head waits for the next send: when that is the body itself (not chunk-framed, not
        cut), both go out in one; anything else follows the head as it would have."""
        if self._head is not None:
            head, body = self._head, self._body
            self._head = self._body = None
            if body is not None and data is body:
                data = head + body
            else:
                super().send(head)  # type: ignore[misc]
        elif self._body is not None and type(data) is bytes:  # the request's first send: its head
            self._head = data
            return
        super().send(data)  # type: ignore[misc]

    def putheader(self, header: Any, *values: Any) -> None:
        value = values[0] if len(values) == 1 else None
        key = (header, value) if type(header) is str and type(value) is str else None
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
        line = _lines.get(key) if key is not None else None
        if line is not None:
            buffer.append(line)  # what http.client's putheader appends, checked when first built
            return
        size = len(buffer)
        super().putheader(header, *values)  # type: ignore[misc]
        if key is not None and len(buffer) == size + 1 and header.lower() not in _SECRET:
            # one line added (urllib3 adds none for SKIP_HEADER); credentials are not kept around
            if len(_lines) >= _LINES_MAX:
                _lines.clear()
            _lines[key] = buffer[-1]
