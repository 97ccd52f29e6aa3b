"""Checkpoint paths: ``tinker://RUN/KIND/NAME``, parsed once and encoded for the API.

The checkpoint id keeps its kind (``weights/NAME``): it holds a ``/``, so the
API path is built from percent-encoded components, never by string splicing.

Rule: no id reaches another route. Every id that goes into a path passes
``check_id`` first: an id that is empty, ``.`` or ``..``, holds a ``/`` or
``\\``, or becomes one of those once percent-decoded (any number of times) or
NFKC-normalised, is refused with ``InvalidRequestError`` before anything is
sent; a URL normaliser (ours, a proxy's or the server's) would collapse or
split it and the API key would reach the route it names instead.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import quote, unquote

from .._exceptions import InvalidRequestError

__all__ = ["KINDS", "TinkerPath", "check_id", "parse_tinker_path", "segment"]

KINDS = ("weights", "sampler_weights", "external_weights")


class TinkerPath(NamedTuple):
    """A parsed ``tinker://RUN/KIND/NAME``."""

    run: str
    kind: str
    name: str

    @property
    def checkpoint_id(self) -> str:
        """The API's checkpoint id, which keeps the kind: ``weights/NAME``."""
        return f"{self.kind}/{self.name}"

    @property
    def dir_name(self) -> str:
        """The download directory's name, ``RUN_KIND_NAME``: one name per path, never another's.

        Injective: the run's ``_`` is written ``%5F`` (so its first ``_`` ends it, and no kind is
        a prefix of another), a leading ``.`` of the run ``%2E`` and the ``.`` of a name's final
        ``.lock`` ``%2E`` too, so no checkpoint's directory is another's lock (``X.lock``) or
        temporary (``.X.partial``) file; a ``%`` that would read as one of these escapes is
        ``%25``. Every other id reads as it is (``run-1_weights_step 10``, ``r_weights_100%``).
        """
        lock = len(self.name) - len(".lock") if self.name.endswith(".lock") else -1
        run = _escaped(self.run, lambda i, c: c == "_" or (i == 0 and c == "."))
        name = _escaped(self.name, lambda i, c: i == lock)
        return f"{run}_{self.kind}_{name}"

    @property
    def api_path(self) -> str:
        """``/api/v1/training_runs/RUN/checkpoints/KIND/NAME``: RUN, KIND and NAME percent-encoded
        one by one, the ``/`` between KIND and NAME kept."""
        return (
            f"/api/v1/training_runs/{segment(self.run)}/checkpoints/{segment(self.kind)}/{segment(self.name)}"
        )

    def __str__(self) -> str:
        return f"tinker://{self.run}/{self.kind}/{self.name}"


_ESCAPES = {"%": "%25", "_": "%5F", ".": "%2E"}


def _escaped(text: str, special: Callable[[int, str], bool]) -> str:
    """``text`` with the characters ``special(index, char)`` picks written as ``_ESCAPES`` say, and
    each ``%`` that starts one of those escapes written ``%25``: read left to right, one text only."""
    out = []
    for i, c in enumerate(text):
        if c == "%" and text[i + 1 : i + 3].upper() in ("25", "5F", "2E"):
            out.append("%25")
        elif special(i, c):
            out.append(_ESCAPES[c])
        else:
            out.append(c)
    return "".join(out)


def _readings(value: str) -> set[str]:
    """``value`` as the layers between us and the route handler may read it: percent-decoded
    again and again until it stops changing, each reading also NFKC-normalised."""
    readings = {value}
    while (decoded := unquote(value)) != value:
        readings.add(value := decoded)
    return readings | {unicodedata.normalize("NFKC", r) for r in readings}


def check_id(value: str, what: str = "id") -> str:
    """``value`` unchanged if it names one resource and nothing else.

    Raises:
        InvalidRequestError: an empty id, ``.``, ``..``, a ``/`` or ``\\``, or any of those
            once percent-decoded or normalised (``%2e%2e``, ``%252E``, ``a%2F..``, ``．．``).
    """
    if not isinstance(value, str):
        raise InvalidRequestError(f"A {what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidRequestError(f"An empty {what} names no resource")
    for reading in _readings(value):
        if reading in (".", "..") or "/" in reading or "\\" in reading:
            raise InvalidRequestError(
                f"Invalid {what} {value!r}: a URL normaliser would read it as {reading!r}, "
                "which names another route"
            )
    return value


def segment(value: str, what: str = "id") -> str:
    """``value`` as one percent-encoded path segment (``%``, ``?``, ``#``, spaces, non-ASCII
    all encoded), after ``check_id`` (so it cannot name another route)."""
    return quote(check_id(value, what), safe="")


def parse_tinker_path(path: str) -> TinkerPath:
    """Parse ``tinker://RUN/KIND/NAME`` (KIND: weights, sampler_weights, external_weights).

    Raises:
        InvalidRequestError: anything else, with what was expected (a ``ValueError`` too);
            before anything is sent.
    """
    if not isinstance(path, str) or not path.startswith("tinker://"):
        raise InvalidRequestError(f"Not a checkpoint path: {path!r}; expected tinker://RUN/KIND/NAME")
    parts = path[len("tinker://") :].split("/")
    if len(parts) != 3 or not all(parts):
        raise InvalidRequestError(
            f"Not a checkpoint path: {path!r}; expected tinker://RUN/KIND/NAME "
            f"with KIND one of {', '.join(KINDS)}"
        )
    run, kind, name = parts
    if kind not in KINDS:
        raise InvalidRequestError(
            f"Unknown checkpoint kind {kind!r} in {path!r}; expected one of {', '.join(KINDS)}"
        )
    for part, what in ((run, "training run id"), (name, "checkpoint name")):
        if any(ord(c) < 32 or c == "\x7f" for c in part):
            raise InvalidRequestError(f"Invalid component {part!r} in checkpoint path {path!r}")
        try:
            check_id(part, what)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{exc} (in checkpoint path {path!r})") from None
    return TinkerPath(run, kind, name)
