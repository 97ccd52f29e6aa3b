"""Checkpoint paths: ``tinker://RUN/KIND/NAME``, parsed once and encoded for the API.

The checkpoint id keeps its kind (``weights/NAME``): it holds a ``/``, so the
API path is built from percent-encoded components, never by string splicing.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

from .._exceptions import InvalidRequestError

__all__ = ["KINDS", "TinkerPath", "parse_tinker_path", "segment"]

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
        """The download directory's name: the path without ``tinker://``, ``/`` -> ``_``."""
        return f"{self.run}_{self.kind}_{self.name}"

    @property
    def api_path(self) -> str:
        """``/api/v1/training_runs/RUN/checkpoints/KIND/NAME``: RUN, KIND and NAME percent-encoded
        one by one, the ``/`` between KIND and NAME kept."""
        return (
            f"/api/v1/training_runs/{segment(self.run)}/checkpoints/{segment(self.kind)}/{segment(self.name)}"
        )

    def __str__(self) -> str:
        return f"tinker://{self.run}/{self.kind}/{self.name}"


def segment(value: str, what: str = "id") -> str:
    """``value`` as one percent-encoded path segment (``/``, ``%``, ``?``, ``#``, spaces, non-ASCII
    all encoded); an empty value is refused, as it would name another route."""
    if not value:
        raise ValueError(f"An empty {what} names no resource")
    return quote(value, safe="")


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
    for part in (run, name):
        if part in (".", "..") or "\\" in part or any(ord(c) < 32 or c == "\x7f" for c in part):
            raise InvalidRequestError(f"Invalid component {part!r} in checkpoint path {path!r}")
    return TinkerPath(run, kind, name)
