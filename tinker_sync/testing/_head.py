"""The request's header fields, read without the ``email`` package for the usual request.

``http.server`` hands every header block to ``email.feedparser``: about half the mock's
CPU per request (the official SDK sends 18 fields). ``read_fields`` reads the block as
``http.client.parse_headers`` does (the same line and count limits, the same errors)
and parses the usual shape itself: every line ``Name: value`` in printable ASCII. Any
other block (a folded line, a line without a colon, a byte above 0x7e, a missing
terminator) goes to the stdlib's parser whole, so every request gets exactly the
fields the stdlib would give it (``tests/test_testing_head.py`` compares both).

Rules: stdlib only; the fields come back as an ``HTTPMessage`` (what
``BaseHTTPRequestHandler.headers`` is) and as the ``(name, value)`` list it holds.
"""

from __future__ import annotations

import email.parser
import http.client
import io
import re

__all__ = ["MAX_FIELDS", "MAX_LINE", "read_fields"]

MAX_LINE = 65536  # http.client's limit on one header line (LineTooLong beyond)
MAX_FIELDS = 100  # http.client's limit on the lines of a block, its blank line included

Fields = list[tuple[str, str]]

# A line email's compat32 parser takes as one field with no change but these: the value
# loses its leading blanks and its line end. Name characters are exactly its headerRE's.
_NAME = r"[\x21-\x39\x3b-\x7e]+"
_VALUE = r"[\t\x20-\x7e]*"
_FIELDS = re.compile(rf"^({_NAME}):[ \t]*({_VALUE})\r?\n", re.MULTILINE)  # each match: one whole line
_END = (b"\r\n", b"\n", b"")


class _Parsed(http.client.HTTPMessage):
    """An ``HTTPMessage`` holding fields parsed here, as the email parser would have stored them."""

    def __init__(self, fields: Fields) -> None:
        super().__init__()
        self._headers = fields  # compat32 keeps (name, value) pairs, as set_raw appends them


def read_fields(rfile: io.BufferedIOBase) -> tuple[http.client.HTTPMessage, Fields]:
    """Read one header block through its blank line: the message and its ``(name, value)`` fields
    in order. Raises ``http.client.LineTooLong`` / ``HTTPException`` as ``parse_headers`` does."""
    block, count = _buffered_block(rfile)
    if not block:
        lines = []
        while True:
            line = rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                raise http.client.LineTooLong("header line")
            lines.append(line)
            if len(lines) > MAX_FIELDS:
                raise http.client.HTTPException(f"got more than {MAX_FIELDS} headers")
            if line in _END:
                break
        block, count = b"".join(lines), len(lines)
    text = block.decode("iso-8859-1")
    fields: Fields = _FIELDS.findall(text)
    if len(fields) == count - 1:  # every line but the last (blank, or b"" at EOF) is a field
        return _Parsed(fields), fields
    message = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)
    return message, message.items()


def _buffered_block(rfile: io.BufferedIOBase) -> tuple[bytes, int]:
    """The whole block and its line count when it is already in ``rfile``'s buffer and within the
    limits (it usually came in the request line's segment): one read instead of one per line.
    ``(b"", 0)`` otherwise, and nothing is consumed."""
    if not isinstance(rfile, io.BufferedReader):
        return b"", 0
    buffered = rfile.peek(MAX_LINE)  # what the buffer holds (one read of the socket if it is empty)
    if buffered[:1] == b"\n" or buffered[:2] == b"\r\n":  # no fields at all
        end = buffered.index(b"\n") + 1
    else:  # through the first blank line: after a line end, a line that is only a line end
        ends = [i for i in (buffered.find(b"\n\n"), buffered.find(b"\n\r\n")) if i >= 0]
        if not ends:
            return b"", 0
        end = buffered.index(b"\n", min(ends) + 1) + 1
    block = buffered[:end]
    count = block.count(b"\n")
    if end > MAX_LINE or count > MAX_FIELDS:
        return b"", 0  # the line by line read raises as parse_headers does
    rfile.read(end)
    return block, count
