"""Type variables shared by the client's modules, with the defaults PEP 696 gives them.

``T`` is what a plain call decodes into: ``Any`` when no ``cast_to`` is given.
``E`` is what an event stream yields: ``ServerSentEvent`` when no ``cast_to``
is given. mypy reads the defaults (``typing_extensions``, type checking only);
at run time they are plain type variables, so nothing is imported for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._events import ServerSentEvent

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    T = TypeVar("T", default=Any)
    E = TypeVar("E", default=ServerSentEvent)
else:
    from typing import TypeVar

    T = TypeVar("T")
    E = TypeVar("E")

__all__ = ["E", "T"]
