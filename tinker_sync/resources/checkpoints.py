"""Checkpoints: list, iterate, get, delete, publish, TTL, copy, archive URLs and bodies, download and sync.

Each method is typed here; the download flows (archive, export, external weights: all or nothing,
resumable) are in ``_checkpoint_download``, mirroring a run in ``_sync``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Unpack
from urllib.parse import urljoin

from .._config import Timeout, project_id_from_env
from .._decode import decode_json
from .._exceptions import APIResponseValidationError
from .._files import directory
from .._options import BodyOverrides, Connections, FileOptions, Overrides, RequestOptions, check_connections
from .._receiver import Progress
from .._response import StreamedResponse
from .._retry import RetryBudget
from .._transport import Request
from ._archive import ArchiveSigner, Notify, http_date
from ._checkpoint_download import CheckpointDownload, notifier
from ._paths import TinkerPath, parse_tinker_path, segment
from ._resource import (
    M,
    Parsed,
    Raw,
    Streamed,
    SyncAPIResource,
    endpoint,
    iterate_pages,
    no_content,
    view,
)
from ._sync import SyncProgress
from ._sync import sync as mirror
from ._target import check_target
from .types import (
    Checkpoint,
    CheckpointArchiveUrl,
    CheckpointList,
    CopyWeightsResponse,
    ExternalWeightsUrls,
    SyncReport,
)

__all__ = ["DEFAULT_PREPARE_TIMEOUT", "Checkpoints", "TinkerPath", "parse_tinker_path"]

# How long the server may take to prepare an archive (409/503 + Retry-After,
# or slow response headers) before CheckpointNotReadyError. Archives of big
# checkpoints are packed on demand; ten minutes covers the slow cases seen.
DEFAULT_PREPARE_TIMEOUT = 600.0
# Carries copy_weights' access token (a secret: masked in logs and dumps, as the key is).
WEIGHTS_TOKEN_HEADER = "X-Tinker-Weights-Access-Token"


class Checkpoints(SyncAPIResource[M]):
    """``client.checkpoints``: checkpoint operations of the REST API. Every method takes
    ``tinker://RUN/KIND/NAME`` paths."""

    with_raw_response: Checkpoints[Raw] = view(Raw)
    with_streaming_response: Checkpoints[Streamed] = view(Streamed)

    # -- listing and management ------------------------------------------------

    @endpoint
    def list(
        self,
        run_id: str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        **overrides: Unpack[Overrides],
    ) -> CheckpointList:
        """The caller's checkpoints, newest first (a page, with a cursor), or all checkpoints of ``run_id``.

        ``limit`` and ``offset`` default to the official SDK's (100, 0), sent as it sends them."""
        if run_id is not None:
            return self._json(RequestOptions("GET", _run_checkpoints(run_id)), CheckpointList, overrides)
        options = RequestOptions("GET", "/api/v1/checkpoints", params={"limit": limit, "offset": offset})
        return self._json(options, CheckpointList, overrides)

    @endpoint
    def list_for_run(self, run_id: str, **overrides: Unpack[Overrides]) -> CheckpointList:
        """Every checkpoint of one training run."""
        return self._json(RequestOptions("GET", _run_checkpoints(run_id)), CheckpointList, overrides)

    def iter(
        self: Checkpoints[Parsed],
        *,
        limit: int = 100,
        offset: int = 0,
        max_items: int | None = None,
        **overrides: Unpack[Overrides],
    ) -> Iterator[Checkpoint]:
        """Every checkpoint of the caller, newest first, lazily: one ``list`` request per ``limit``
        checkpoints, sent only when the loop gets there; stops at ``total_count`` or ``max_items``.
        ``overrides`` apply to every page's request."""

        self._plain_only("iter")

        def fetch(offset: int, limit: int) -> tuple[list[Checkpoint], int | None, int | None]:
            page = self.list(limit=limit, offset=offset, **overrides)
            if page.cursor is None:
                return page.checkpoints, None, None
            return page.checkpoints, page.cursor.total_count, page.cursor.offset

        return iterate_pages(fetch, limit=limit, offset=offset, max_items=max_items)

    @endpoint
    def get(self, tinker_path: str, **overrides: Unpack[Overrides]) -> Checkpoint:
        """The checkpoint at ``tinker_path`` (found in its run's list).

        Raises:
            NotFoundError: the run is unknown. LookupError: the run has no such checkpoint.
        """
        path = parse_tinker_path(tinker_path)

        def find(response: StreamedResponse) -> Checkpoint:
            listing: CheckpointList = decode_json(response.read(), CheckpointList, response)
            for checkpoint in listing.checkpoints:
                if checkpoint.checkpoint_id == path.checkpoint_id:
                    return checkpoint
            raise LookupError(f"No checkpoint {tinker_path} in training run {path.run!r}")

        return self._request(RequestOptions("GET", _run_checkpoints(path.run)), find, overrides)

    @endpoint
    def delete(self, tinker_path: str, **overrides: Unpack[Overrides]) -> None:
        """Delete the checkpoint."""
        options = RequestOptions("DELETE", parse_tinker_path(tinker_path).api_path)
        return self._request(options, no_content, overrides)

    @endpoint
    def publish(self, tinker_path: str, **overrides: Unpack[BodyOverrides]) -> None:
        """Make the checkpoint public (ConflictError, at once, if it already is)."""
        path = parse_tinker_path(tinker_path).api_path + "/publish"
        return self._request(RequestOptions("POST", path, final=(409,)), no_content, overrides)

    @endpoint
    def unpublish(self, tinker_path: str, **overrides: Unpack[Overrides]) -> None:
        """Make the checkpoint private again (ConflictError, at once, if it already is)."""
        path = parse_tinker_path(tinker_path).api_path + "/publish"
        return self._request(RequestOptions("DELETE", path, final=(409,)), no_content, overrides)

    @endpoint
    def set_ttl(self, tinker_path: str, ttl_seconds: int | None, **overrides: Unpack[BodyOverrides]) -> None:
        """Expire the checkpoint ``ttl_seconds`` from now (None: never)."""
        path = parse_tinker_path(tinker_path).api_path + "/ttl"
        options = RequestOptions("PUT", path, json={"ttl_seconds": ttl_seconds})
        return self._request(options, no_content, overrides)

    @endpoint
    def copy(
        self,
        tinker_path: str,
        destination_project_id: str | None = None,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
        **overrides: Unpack[BodyOverrides],
    ) -> str:
        """Copy the checkpoint into a project; the copy's tinker path (the SDK's ``copy_weights``).

        The copy shares the source's storage (no bytes duplicated), keeps its kind and belongs
        to a new training run that cannot be trained on. ``destination_project_id`` defaults to
        ``TINKER_PROJECT_ID``; ``ttl_seconds`` (1 hour to 10 years) is the copy's own expiry;
        ``weights_access_token`` lets you copy weights another account shares with you (sent as
        a header, masked like the key).

        Raises:
            ValueError: no destination project, given or in ``TINKER_PROJECT_ID`` (nothing sent).
        """
        parse_tinker_path(tinker_path)  # a malformed path is refused here, before anything is sent
        project = project_id_from_env() if destination_project_id is None else destination_project_id
        if not project:
            raise ValueError("Give destination_project_id or set TINKER_PROJECT_ID")
        body: dict[str, object] = {"source_path": tinker_path, "destination_project_id": project}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        headers = None if weights_access_token is None else {WEIGHTS_TOKEN_HEADER: weights_access_token}
        options = RequestOptions("POST", "/api/v1/copy_weights", headers=headers, json=body)
        return self._request(options, _copied_path, overrides)

    # -- archives and signed URLs ----------------------------------------------

    @endpoint
    def archive_url(self, tinker_path: str, **overrides: Unpack[Overrides]) -> CheckpointArchiveUrl:
        """The signed URL of the checkpoint's tar archive and its expiry: the API's 302, not followed.

        The URL carries its own authorization: fetch it without the API key.
        """
        options = RequestOptions("GET", parse_tinker_path(tinker_path).api_path + "/archive")
        return self._request(options, _archive_url, overrides)

    @endpoint
    def external_weights_urls(self, tinker_path: str, **overrides: Unpack[Overrides]) -> ExternalWeightsUrls:
        """The signed URL of each file of an ``external_weights`` checkpoint, and their expiry."""
        path = parse_tinker_path(tinker_path)
        if path.kind != "external_weights":
            raise ValueError(f"Only external_weights checkpoints have download URLs, not {tinker_path}")
        options = RequestOptions("GET", path.api_path + "/external_weights_urls")
        return self._json(options, ExternalWeightsUrls, overrides)

    @endpoint
    def archive(
        self,
        tinker_path: str,
        *,
        prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT,
        **overrides: Unpack[Overrides],
    ) -> bytes:
        """The checkpoint's tar archive: the body at its signed URL (fetched without the API key).

        The plain call reads it all into memory; for a large one use the
        streaming view, which writes it in constant memory, resumed (re-signed
        when the URL expires), verified and atomic::

            with client.with_streaming_response.checkpoints.archive(path) as response:
                response.stream_to_file("model.tar")

        Waits up to ``prepare_timeout`` while the server prepares the archive. The overrides'
        headers and query go with the signing request (the API's), never to the signed URL.
        A server that no longer serves archives answers 404 (NotFoundError):
        ``download()`` then takes the export flow.
        """
        path = parse_tinker_path(tinker_path)
        client = self._client

        options = RequestOptions("GET", path.api_path + "/archive").overridden(overrides)

        def opener(budget: RetryBudget, timeout: Timeout) -> StreamedResponse:
            signer = ArchiveSigner(client, path, prepare_timeout, notifier(None), budget, options)
            signer.sign()
            return signer.send(Request("GET", signer.url), options.replace(timeout=timeout), budget)

        return self._request(options, _read, opener=opener)

    # -- download --------------------------------------------------------------

    def download(
        self: Checkpoints[Parsed],
        tinker_path: str,
        output_dir: str | os.PathLike[str] = ".",
        *,
        force: bool = False,
        progress: Progress | None = None,
        prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT,
        notify: Notify | None = None,
        max_members: int | None = None,
        max_total_size: int | None = None,
        connections: Connections = "auto",
        **overrides: Unpack[Overrides],
    ) -> Path:
        """Download a checkpoint into ``<output_dir>/<RUN>_<KIND>_<NAME>`` and return that path.

        All or nothing: the directory appears, complete, only at the end. A
        broken transfer is resumed inside the call (Range; an expired signed
        URL is re-signed). Memory stays constant whatever the size. A server
        that answers the archive request 404, 405 or 501 gets the export flow:
        the checkpoint is exported as temporary external weights (through a
        session), downloaded, and the export, model and session cleaned up
        whatever happens.

        Args:
            tinker_path: ``tinker://RUN/weights/NAME`` (a tar archive, extracted
                with hardened streaming extraction) or
                ``tinker://RUN/external_weights/NAME`` (a set of files).
            output_dir: created if missing.
            force: replace an existing target (only once the new one is complete).
            progress: ``progress(downloaded, total)`` for the whole checkpoint,
                in bytes received; ``total`` is None when unknown. Called at
                the start, as bytes arrive, and at the end.
            prepare_timeout: how long to wait for the server to prepare the
                archive (409/503 with Retry-After, or slow headers), or for each
                step of an export.
            notify: called with a one-line message on notable events (the
                archive is being prepared, a transfer resumed, a URL re-signed);
                they are logged at INFO too.
            max_members: the most archive members to extract in this call; by default
                the client's ``archive_limits`` (10,000).
            max_total_size: the most bytes to extract in this call; by default the
                client's ``archive_limits`` (the checkpoint's ``size_bytes`` when known).
            connections: connections per file of external weights (and of an
                export), as ``Client.download``; an archive streams into its
                extraction in order, over one connection.
            overrides: ``extra_headers`` and ``extra_query`` go with every API request of the
                download (signing the archive, listing, the export flow), never to a signed URL;
                ``timeout`` and ``max_retries`` are the whole download's (one deadline, one retry
                budget over every file and resume).

        Raises:
            ValueError: not a downloadable ``tinker://`` path.
            TypeError: an unknown override.
            FileExistsError: the target exists and ``force`` is false.
            DownloadLockedError: another run holds the target's lock (after a short wait).
            CheckpointNotReadyError: the archive was not prepared in time.
            RequestFailedError: the export flow's server-side step failed.
            UnsafeArchiveError: a refused archive member or relative path.
            APIStatusError, APIConnectionError: the API or the transfer failed.
        """
        self._plain_only("download")
        file = FileOptions(progress=progress, connections=connections)
        path = parse_tinker_path(tinker_path)
        if path.kind == "sampler_weights":
            raise ValueError(
                f"Sampler weights cannot be downloaded ({tinker_path}); download the training "
                f"checkpoint instead: tinker://{path.run}/weights/{path.name}"
            )
        options = RequestOptions("GET", path.api_path + "/archive", file=file).overridden(overrides)
        out = directory(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        target = out / path.dir_name
        check_target(target, force)
        client = self._client
        CheckpointDownload(
            calls=self,
            client=client,
            path=path,
            target=target,
            force=force,
            prepare_timeout=prepare_timeout,
            say=notifier(notify),
            budget=client._budget(options),  # one for the whole checkpoint: every file and resume
            max_members=max_members,
            max_total_size=max_total_size,
            options=options,
            overrides=overrides,
        ).run()
        return target

    # -- mirroring a run -----------------------------------------------------------

    def sync(
        self: Checkpoints[Parsed],
        run_id: str,
        output_dir: str | os.PathLike[str],
        *,
        kinds: Collection[str] | None = None,
        latest: int | None = None,
        since: datetime | date | str | None = None,
        prune: bool = False,
        progress: SyncProgress | None = None,
        notify: Notify | None = None,
        connections: Connections = "auto",
        lock_wait: float = 0.0,
        **overrides: Unpack[Overrides],
    ) -> SyncReport:
        """Mirror the checkpoints of training run ``run_id`` into ``output_dir``; safe to start from
        cron every minute.

        Downloads each selected checkpoint not yet complete there (as ``download`` does, into
        ``output_dir/RUN_KIND_NAME``, with every guarantee of it), oldest first, and returns what
        changed. ``output_dir/.tinker-sync.json`` (written atomically after each checkpoint)
        lists what is complete and verified; ``output_dir/.tinker-sync.lock`` keeps overlapping
        syncs apart: one that finds it held (after ``lock_wait`` seconds) does nothing and reports
        ``"locked"``. A killed sync's next run downloads only what is missing. A checkpoint that
        fails is reported and the others go on. Nothing is deleted locally unless ``prune``: then
        the checkpoints this mirror holds that the server no longer lists.

        Args:
            kinds: the kinds to mirror (``weights``, ``external_weights``; a list, or one kind as a
                string); by default both
                (``sampler_weights`` cannot be downloaded).
            latest: only the ``latest`` newest of them.
            since: only those saved at or after this time: a ``datetime``, a ``date`` or an ISO
                8601 string (``"2025-06-15T12:00:00Z"``); without a zone, UTC.
            prune: remove local copies of checkpoints the server deleted.
            progress: ``progress(tinker_path, downloaded, total)`` while a checkpoint downloads.
            notify: one-line notes (archive being prepared, resumed, re-signed).
            connections: per file, as ``download``.
            overrides: for the listing and each checkpoint's ``download`` (see there): extra
                headers and query with every API request, never to a signed URL; ``timeout`` and
                ``max_retries`` per checkpoint.

        Returns:
            A ``SyncReport``: ``status`` ``"nothing to do"``, ``"synced"``, ``"partial failure"``
            or ``"locked"``, and the checkpoints downloaded, failed, current, gone and pruned.

        Raises:
            ValueError: an unknown or undownloadable kind, ``latest`` not a positive integer,
                ``since`` a string that is not an ISO 8601 time.
            TypeError: ``since`` of another type, or an unknown override.
            APIStatusError, APIConnectionError: the run's checkpoints could not be listed.
        """
        self._plain_only("sync")
        check_connections(connections)
        RequestOptions("GET", "").overridden(overrides)  # an unknown override: now, before any work

        def download(
            tinker_path: str,
            output_dir: str | os.PathLike[str] = ".",
            *,
            force: bool = False,
            progress: Progress | None = None,
            notify: Notify | None = None,
        ) -> Path:
            return self.download(
                tinker_path,
                output_dir,
                force=force,
                progress=progress,
                notify=notify,
                connections=connections,
                **overrides,
            )

        return mirror(
            run_id,
            output_dir,
            listing=lambda run: self.list_for_run(run, **overrides).checkpoints,
            download=download,
            kinds=kinds,
            latest=latest,
            since=since,
            prune=prune,
            progress=progress,
            notify=notify,
            lock_wait=lock_wait,
        )


# -- parsers and paths ------------------------------------------------------------


def _run_checkpoints(run_id: str) -> str:
    return f"/api/v1/training_runs/{segment(run_id, 'training run id')}/checkpoints"


def _copied_path(response: StreamedResponse) -> str:
    copied: CopyWeightsResponse = decode_json(response.read(), CopyWeightsResponse, response)
    return copied.tinker_path


def _read(response: StreamedResponse) -> bytes:
    return response.read()


def _archive_url(response: StreamedResponse) -> CheckpointArchiveUrl:
    location = response.headers.get("location")
    if not 300 <= response.status_code < 400 or not location:
        raise APIResponseValidationError(
            f"Expected a redirect to the archive, got {response.status_code}"
            f"{'' if location else ' without a Location header'}",
            response,
        )
    expires = http_date(response.headers.get("expires"))
    return CheckpointArchiveUrl(
        url=urljoin(response.url, location),
        expires=None if expires is None else datetime.fromtimestamp(expires, UTC),
    )
