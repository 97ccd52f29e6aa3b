"""The base of every API resource, and how one method definition gives three views.

A resource is built in one of three modes, passed as an argument (never a
header on the wire): ``Parsed`` (``client.checkpoints``), ``Raw``
(``client.with_raw_response.checkpoints``) or ``Streamed``
(``client.with_streaming_response.checkpoints``). Each API method is written
once, as a call of ``_request``, which is the one place that acts on the mode:

* ``Parsed``: send, read, return the typed result;
* ``Raw``: send, read, release the connection, return an ``APIResponse[T]``;
* ``Streamed``: return a ``ResponseContextManager[T]`` that sends on entry and
  releases the connection on exit, the body unread in between.

``@endpoint`` only tells mypy what each view of the method returns (the mode is
the resource's type parameter). Helpers that are not one API call (``iter``,
``download``) declare ``self: X[Parsed]``, so only the plain resource has them.

Rule: a resource uses only the public (and ``_``-protected) methods of
``BaseClient``; it never reaches into the client's state.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

import msgspec

from .._api_response import APIResponse, ResponseContextManager
from .._base_client import BaseClient
from .._config import Timeout
from .._decode import decode_json
from .._exceptions import TinkerError
from .._options import RequestOptions
from .._response import StreamedResponse
from .._retry import RetryBudget

__all__ = [
    "Opener",
    "Parsed",
    "Parser",
    "Raw",
    "Streamed",
    "SyncAPIResource",
    "endpoint",
    "iterate_pages",
    "json_parser",
    "no_content",
    "view",
]

P = ParamSpec("P")
R = TypeVar("R")
X = TypeVar("X")

Parser = Callable[[StreamedResponse], R]
Opener = Callable[[RetryBudget, Timeout], StreamedResponse]


class Parsed:
    """The plain mode: a method returns its typed result."""


class Raw:
    """The raw view: a method returns an ``APIResponse[T]``, body read (``client.with_raw_response``)."""


class Streamed:
    """The streaming view: a method returns a ``with`` block whose ``APIResponse[T]`` body is unread."""


if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVar

    M = _TypeVar("M", default=Parsed)
else:
    M = TypeVar("M")


def json_parser(cast_to: type[X]) -> Parser[X]:
    """Decode the whole body as JSON into ``cast_to`` (APIResponseValidationError when it does not fit)."""

    def parse(response: StreamedResponse) -> X:
        result: X = decode_json(response.read(), cast_to, response)
        return result

    return parse


def no_content(response: StreamedResponse) -> None:
    """The result of a method whose answer has no body (204)."""
    response.read()


class SyncAPIResource(Generic[M]):
    """A group of API methods (``client.checkpoints``, ...) over one client, in one mode."""

    @overload
    def __init__(self: SyncAPIResource[Parsed], client: BaseClient) -> None: ...
    @overload
    def __init__(self, client: BaseClient, mode: type[M]) -> None: ...
    def __init__(self, client: BaseClient, mode: type[Any] = Parsed) -> None:
        self._client = client
        self._mode = mode

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({self._mode.__name__}) of {self._client!r}>"

    def _plain_only(self, name: str) -> None:
        """Refuse a helper that is not one API call (``iter``, ``download``) on a view (mypy does too)."""
        if self._mode is not Parsed:
            raise TypeError(
                f"{name}() has no {self._mode.__name__.lower()} view; call it on the plain resource"
            )

    def _request(
        self,
        options: RequestOptions,
        parse: Parser[X],
        overrides: Mapping[str, Any] | None = None,
        *,
        opener: Opener | None = None,
        lazy: Callable[[RequestOptions], X] | None = None,
    ) -> X:
        """Make the API call ``options`` describe in this resource's mode (see the module docstring).

        Args:
            parse: the typed result from the response (read it, or stream it).
            overrides: the method's per-call ``Overrides`` (``extra_headers``, ...), folded
                into ``options`` here.
            opener: replaces the plain send (a polled future, a signed archive).
            lazy: the plain mode's result instead of a call (a lazy event stream).
        """
        if overrides:
            options = options.overridden(overrides)
        if self._mode is Parsed and lazy is not None:
            return lazy(options)

        def call(read_body: bool) -> AbstractContextManager[StreamedResponse]:
            return self._client._call(options.replace(read_body=read_body), opener=opener)

        # The views' results are typed by @endpoint: mypy sees what each view returns.
        if self._mode is Streamed:
            return cast(X, ResponseContextManager(call(False), parse))
        start = time.monotonic()
        with call(True) as response:
            if self._mode is Parsed:
                return parse(response)
            response.read()  # the raw view: the body read, the connection released
        return cast(X, APIResponse(response, parse, elapsed=time.monotonic() - start))

    def _json(
        self, options: RequestOptions, cast_to: type[X], overrides: Mapping[str, Any] | None = None
    ) -> X:
        """``_request`` for the common case: a JSON answer decoded into ``cast_to``."""
        return self._request(options, json_parser(cast_to), overrides)


class endpoint(Generic[P, R]):
    """Marks an API method: one definition, whose raw and streaming views mypy sees precisely.

    On a ``Parsed`` resource the method returns ``R``; on a ``Raw`` one an
    ``APIResponse[R]``; on a ``Streamed`` one a ``ResponseContextManager[R]``.
    At run time it is the plain method: ``_request`` acts on the mode.
    """

    def __init__(self, func: Callable[Concatenate[Any, P], R]) -> None:
        self._func = func
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__wrapped__ = func

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> endpoint[P, R]: ...
    @overload
    def __get__(
        self, obj: SyncAPIResource[Raw], owner: type[Any] | None = None
    ) -> Callable[P, APIResponse[R]]: ...
    @overload
    def __get__(
        self, obj: SyncAPIResource[Streamed], owner: type[Any] | None = None
    ) -> Callable[P, ResponseContextManager[R]]: ...
    @overload
    def __get__(self, obj: SyncAPIResource[Parsed], owner: type[Any] | None = None) -> Callable[P, R]: ...
    @overload
    def __get__(self, obj: SyncAPIResource[Any], owner: type[Any] | None = None) -> Callable[P, Any]: ...
    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return types.MethodType(self._func, obj)


def view(mode: type[Any]) -> Any:
    """``with_raw_response`` / ``with_streaming_response`` of a resource: the same resource in
    another mode, built once per resource object. Annotate the attribute with its type::

        with_raw_response: TrainingRuns[Raw] = view(Raw)
    """
    return _View(mode)


class _View:
    def __init__(self, mode: type[Any]) -> None:
        self._mode = mode
        self._name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        made = obj.__dict__[self._name] = type(obj)(obj._client, self._mode)
        return made


def iterate_pages(
    fetch: Callable[[int, int], tuple[list[X], int | None, int | None]],
    *,
    limit: int,
    offset: int = 0,
    max_items: int | None = None,
) -> Iterator[X]:
    """Every item from ``offset`` on, one page request at a time, only as the consumer gets there.

    ``fetch(offset, limit)`` returns a page's items, the total count and the
    offset the page says it starts at (each None when the API does not say).
    Stops at the total, at an empty page, at a short page when there is no
    total (with one, a short page is a server capping its page size: go on),
    or after ``max_items`` items (the last page asks for no more than that).
    A server that ignores ``offset`` (a page whose cursor names another offset,
    or half a page of items already listed) raises ``TinkerError``; an item
    listed again because new ones pushed it down is not yielded twice.
    Arguments are checked now; nothing is sent before the first ``next()``.
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    if offset < 0 or (max_items is not None and max_items < 0):
        raise ValueError(f"offset and max_items must be >= 0, got {offset} and {max_items}")
    return _pages(fetch, limit, offset, max_items)


def _pages(
    fetch: Callable[[int, int], tuple[list[X], int | None, int | None]],
    limit: int,
    offset: int,
    max_items: int | None,
) -> Iterator[X]:
    given = 0
    seen: set[int] = (
        set()
    )  # a hash of each item yielded: an item moved down by an insert is not yielded twice
    while max_items is None or given < max_items:
        size = limit if max_items is None else min(limit, max_items - given)
        items, total, answered = fetch(offset, size)
        if answered is not None and answered != offset:
            raise TinkerError(
                f"The server ignores offset: asked for the page at offset {offset}, it answered the page "
                f"at offset {answered}; stopping rather than listing items again"
            )
        keys = [hash(msgspec.json.encode(item)) for item in items]
        repeated = sum(key in seen for key in keys)
        if (
            repeated and 2 * repeated >= size
        ):  # a few: items moved down by new ones; half a page: offset ignored
            raise TinkerError(
                f"The server ignores offset: the page at offset {offset} repeats {repeated} of its "
                f"{len(items)} items; stopping rather than listing items again"
            )
        page = [item for item, key in zip(items, keys, strict=True) if key not in seen]
        page = page if max_items is None else page[: max_items - given]
        seen.update(keys)
        yield from page
        given += len(page)
        offset += len(items)
        if not items or (offset >= total if total is not None else len(items) < size):
            return
