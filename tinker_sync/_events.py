"""The one event type both SSE decoders produce.

Rule: events are small, immutable and compare by value, so the pure-Python and
the Cython decoder can be checked against each other with ``==``.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["ServerSentEvent"]

_json_decode = msgspec.json.decode


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched Server-Sent Event.

    Attributes:
        event: the event type; ``"message"`` when the stream named none.
        data: the data lines joined with ``"\\n"``.
        id: the last event ID in force when this event was dispatched:
            ``None`` until the stream sent an accepted ``id`` field.
        retry: the valid ``retry`` value (milliseconds) sent in this
            event's own block, else ``None``.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """Decode ``data`` as JSON (msgspec)."""
        return _json_decode(self.data)
