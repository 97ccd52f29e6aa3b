"""Checkpoints: list, iterate, get, delete, publish, TTL, archive URLs and bodies, and download.

Download has two flows, chosen by the path's kind (``tinker://RUN/KIND/NAME``):

* ``weights`` (archive flow): GET ``.../archive`` (redirects off) -> 302 to a
  signed URL -> the tar is streamed straight into ``_extract.extract_tar``.
  A broken transfer resumes with Range inside the same call; an expired
  signed URL is re-signed through the API and resumed at the same offset.
  A killed run cannot be resumed (the extractor's state died with it): the
  next run removes its leftovers and starts again. A server that answers
  the archive request 404, 405 or 501 (it no longer serves archives) gets
  the export flow instead (``_export``): the checkpoint is exported as
  temporary external weights, downloaded as below, and the export removed.
* ``external_weights``: GET ``.../external_weights_urls`` -> each file, in
  sorted order, through ``_download.download`` (atomic ``.part`` files),
  re-signed when the URLs are within 5 minutes of expiry. Files land in a
  temp directory with a stable name, ``.<target>.partial``, so a re-run
  after a kill (or a connection failure) resumes the ``.part`` files.

Rules:
1. All or nothing: everything lands in a private (0o700) temp directory
   beside the target and is renamed into place when complete; on failure
   the temp directory is removed and no target exists. (Only the
   external-weights ``.partial`` directory survives a connection failure or
   an interrupt, for the next run to resume; it is never the target.)
2. Signed URLs get no API key and no Tinker headers, whatever their origin:
   their requests are built with ``credentials=False``.
3. The archive is never held in memory nor copied to a temp tar.
4. One run per target: ``<target>.lock``, the download module's lock (an
   ``flock`` the kernel drops when its holder dies, so a killed run's lock
   is simply reclaimed; a second run waits a few seconds, then fails).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urljoin

from .._config import Timeout
from .._download import download as download_file
from .._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    UnsafeArchiveError,
)
from .._files import Progress, directory, target_lock
from .._options import RequestOptions
from .._response import Connections, StreamedResponse, check_connections, decode_json
from .._retry import RetryBudget
from .._transport import Request
from ._archive import ARCHIVE_UNSUPPORTED, ArchiveSigner, BodyReader, Notify, http_date, is_compressed
from ._export import EXPORT_TTL, exported
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
from .types import Checkpoint, CheckpointArchiveUrl, CheckpointList, ExternalWeightsUrls, SyncReport

__all__ = ["DEFAULT_PREPARE_TIMEOUT", "Checkpoints", "TinkerPath", "parse_tinker_path"]

log = logging.getLogger("tinker_sync")


# How long the server may take to prepare an archive (409/503 + Retry-After,
# or slow response headers) before CheckpointNotReadyError. Archives of big
# checkpoints are packed on demand; ten minutes covers the slow cases seen.
DEFAULT_PREPARE_TIMEOUT = 600.0
# External-weights URLs are fetched again when this close to their expiry.
RESIGN_MARGIN = 300.0
# What may follow the tar's end-of-archive marker before we call the body malformed.
MAX_TRAILING_BYTES = 1 << 20


class Checkpoints(SyncAPIResource[M]):
    """``client.checkpoints``: checkpoint operations of the REST API. Every method takes
    ``tinker://RUN/KIND/NAME`` paths."""

    with_raw_response: Checkpoints[Raw] = view(Raw)
    with_streaming_response: Checkpoints[Streamed] = view(Streamed)

    # -- listing and management ------------------------------------------------

    @endpoint
    def list(
        self, run_id: str | None = None, *, limit: int | None = None, offset: int | None = None
    ) -> CheckpointList:
        """The caller's checkpoints, newest first (a page, with a cursor), or all checkpoints of ``run_id``."""
        if run_id is not None:
            return self._json(RequestOptions("GET", _run_checkpoints(run_id)), CheckpointList)
        params = {"limit": limit, "offset": offset}
        return self._json(RequestOptions("GET", "/api/v1/checkpoints", params=params), CheckpointList)

    @endpoint
    def list_for_run(self, run_id: str) -> CheckpointList:
        """Every checkpoint of one training run."""
        return self._json(RequestOptions("GET", _run_checkpoints(run_id)), CheckpointList)

    def iter(
        self: Checkpoints[Parsed], *, limit: int = 100, offset: int = 0, max_items: int | None = None
    ) -> Iterator[Checkpoint]:
        """Every checkpoint of the caller, newest first, lazily: one ``list`` request per ``limit``
        checkpoints, sent only when the loop gets there; stops at ``total_count`` or ``max_items``."""

        self._plain_only("iter")

        def fetch(offset: int, limit: int) -> tuple[list[Checkpoint], int | None]:
            page = self.list(limit=limit, offset=offset)
            return page.checkpoints, page.cursor.total_count if page.cursor is not None else None

        return iterate_pages(fetch, limit=limit, offset=offset, max_items=max_items)

    @endpoint
    def get(self, tinker_path: str) -> Checkpoint:
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

        return self._request(RequestOptions("GET", _run_checkpoints(path.run)), find)

    @endpoint
    def delete(self, tinker_path: str) -> None:
        """Delete the checkpoint."""
        return self._request(RequestOptions("DELETE", parse_tinker_path(tinker_path).api_path), no_content)

    @endpoint
    def publish(self, tinker_path: str) -> None:
        """Make the checkpoint public (ConflictError, at once, if it already is)."""
        path = parse_tinker_path(tinker_path).api_path + "/publish"
        return self._request(RequestOptions("POST", path, final=(409,)), no_content)

    @endpoint
    def unpublish(self, tinker_path: str) -> None:
        """Make the checkpoint private again (ConflictError, at once, if it already is)."""
        path = parse_tinker_path(tinker_path).api_path + "/publish"
        return self._request(RequestOptions("DELETE", path, final=(409,)), no_content)

    @endpoint
    def set_ttl(self, tinker_path: str, ttl_seconds: int | None) -> None:
        """Expire the checkpoint ``ttl_seconds`` from now (None: never)."""
        path = parse_tinker_path(tinker_path).api_path + "/ttl"
        return self._request(RequestOptions("PUT", path, json={"ttl_seconds": ttl_seconds}), no_content)

    # -- archives and signed URLs ----------------------------------------------

    @endpoint
    def archive_url(self, tinker_path: str) -> CheckpointArchiveUrl:
        """The signed URL of the checkpoint's tar archive and its expiry: the API's 302, not followed.

        The URL carries its own authorization: fetch it without the API key.
        """
        return self._request(
            RequestOptions("GET", parse_tinker_path(tinker_path).api_path + "/archive"), _archive_url
        )

    @endpoint
    def external_weights_urls(self, tinker_path: str) -> ExternalWeightsUrls:
        """The signed URL of each file of an ``external_weights`` checkpoint, and their expiry."""
        path = parse_tinker_path(tinker_path)
        if path.kind != "external_weights":
            raise ValueError(f"Only external_weights checkpoints have download URLs, not {tinker_path}")
        return self._json(
            RequestOptions("GET", path.api_path + "/external_weights_urls"), ExternalWeightsUrls
        )

    @endpoint
    def archive(self, tinker_path: str, *, prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT) -> bytes:
        """The checkpoint's tar archive: the body at its signed URL (fetched without the API key).

        The plain call reads it all into memory; for a large one use the
        streaming view, which writes it in constant memory, resumed (re-signed
        when the URL expires), verified and atomic::

            with client.with_streaming_response.checkpoints.archive(path) as response:
                response.stream_to_file("model.tar")

        Waits up to ``prepare_timeout`` while the server prepares the archive.
        A server that no longer serves archives answers 404 (NotFoundError):
        ``download()`` then takes the export flow.
        """
        path = parse_tinker_path(tinker_path)
        client = self._client

        def opener(budget: RetryBudget, timeout: Timeout) -> StreamedResponse:
            signer = ArchiveSigner(client, path, prepare_timeout, _notifier(None), budget)
            signer.sign()
            return signer.send(Request("GET", signer.url), timeout=timeout, budget=budget)

        return self._request(RequestOptions("GET", path.api_path + "/archive"), _read, opener=opener)

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
            max_members, max_total_size: extraction limits for this call; by
                default the client's ``archive_limits`` (10,000 members; the
                checkpoint's ``size_bytes`` when known).
            connections: connections per file of external weights (and of an
                export), as ``Client.download``; an archive streams into its
                extraction in order, over one connection.

        Raises:
            ValueError: not a downloadable ``tinker://`` path.
            FileExistsError: the target exists and ``force`` is false.
            DownloadLockedError: another run holds the target's lock (after a short wait).
            CheckpointNotReadyError: the archive was not prepared in time.
            RequestFailedError: the export flow's server-side step failed.
            UnsafeArchiveError: a refused archive member or relative path.
            APIStatusError, APIConnectionError: the API or the transfer failed.
        """
        self._plain_only("download")
        check_connections(connections)
        path = parse_tinker_path(tinker_path)
        if path.kind == "sampler_weights":
            raise ValueError(
                f"Sampler weights cannot be downloaded ({tinker_path}); download the training "
                f"checkpoint instead: tinker://{path.run}/weights/{path.name}"
            )
        out = directory(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        target = out / path.dir_name
        _check_target(target, force)
        say = _notifier(notify)
        report = progress or _no_progress
        client = self._client
        budget = client._budget(client.timeout, None)  # one for the whole checkpoint: every file and resume
        with target_lock(target.with_name(target.name + ".lock")):
            _check_target(target, force)  # another run may have finished while we waited
            if path.kind == "weights":
                tmp = self._download_weights(
                    path,
                    target,
                    report,
                    prepare_timeout,
                    say,
                    budget,
                    max_members,
                    max_total_size,
                    connections,
                )
            else:
                tmp = self._download_external(path, target, report, say, budget, connections)
            try:
                _install(tmp, target, force)
            except BaseException:
                _remove(tmp)
                raise
        return target

    def _known_size(self: Checkpoints[Parsed], path: TinkerPath) -> int | None:
        """The checkpoint's ``size_bytes``, or None when the listing does not say (or cannot be read)."""
        try:
            size = self.get(str(path)).size_bytes
        except (APIStatusError, LookupError) as exc:
            log.debug("Size of %s unknown: %s", path, exc)
            return None
        return size or None

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

        Returns:
            A ``SyncReport``: ``status`` ``"nothing to do"``, ``"synced"``, ``"partial failure"``
            or ``"locked"``, and the checkpoints downloaded, failed, current, gone and pruned.

        Raises:
            ValueError: an unknown or undownloadable kind, ``latest`` not a positive integer,
                ``since`` a string that is not an ISO 8601 time.
            TypeError: ``since`` of another type.
            APIStatusError, APIConnectionError: the run's checkpoints could not be listed.
        """
        self._plain_only("sync")
        check_connections(connections)

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
            )

        return mirror(
            run_id,
            output_dir,
            listing=lambda run: self.list_for_run(run).checkpoints,
            download=download,
            kinds=kinds,
            latest=latest,
            since=since,
            prune=prune,
            progress=progress,
            notify=notify,
            lock_wait=lock_wait,
        )

    # -- archive flow (or the export flow, when the server has no archives) ---

    def _download_weights(
        self: Checkpoints[Parsed],
        path: TinkerPath,
        target: Path,
        progress: Progress,
        prepare_timeout: float,
        say: Notify,
        budget: RetryBudget,
        max_members: int | None,
        max_total_size: int | None,
        connections: Connections,
    ) -> Path:
        signer = ArchiveSigner(self._client, path, prepare_timeout, say, budget)
        try:
            signer.sign()  # first: a missing checkpoint fails here, and a prepared one knows its size
        except APIStatusError as exc:
            if exc.status_code not in ARCHIVE_UNSUPPORTED:
                raise
            log.info("The archive of %s: HTTP %d; trying the export flow", path, exc.status_code)
            why = f"the server does not serve archives (HTTP {exc.status_code})"
            with exported(self._client, path, budget, prepare_timeout, say, why) as export:
                return self._download_external(
                    export, target, progress, say, budget, connections, renew_ttl=EXPORT_TTL
                )
        return self._download_archive(signer, target, progress, max_members, max_total_size)

    def _download_archive(
        self: Checkpoints[Parsed],
        signer: ArchiveSigner,
        target: Path,
        progress: Progress,
        max_members: int | None,
        max_total_size: int | None,
    ) -> Path:
        from .._extract import extract_tar  # lazy: imports tarfile

        _remove_leftovers(target)  # a killed archive run cannot resume: start again
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            limits = self._client.archive_limits
            known = self._known_size(signer.path)
            limit = next((x for x in (max_total_size, limits.max_total_size, known) if x is not None), None)
            with signer.send(Request("GET", signer.url)) as response:
                total = response.total_size
                reader = BodyReader(response, progress, total)
                progress(0, total)
                if limit is None and total is not None and not is_compressed(reader.peek()):
                    limit = total  # a plain tar's size bounds its files' size
                result = extract_tar(
                    reader,
                    tmp,
                    max_members=max_members or limits.max_members,
                    max_total_size=limit,
                    max_name_length=limits.max_name_length,
                )
                reader.drain(MAX_TRAILING_BYTES)
            _check_whole(signer.path, result.files, result.total_size, reader.count, known)
            progress(reader.count, total if total is not None else reader.count)
        except BaseException:
            _remove(tmp)
            raise
        return tmp

    # -- external-weights flow -------------------------------------------------

    def _external_urls(
        self: Checkpoints[Parsed], path: TinkerPath, renew_ttl: int | None = None
    ) -> tuple[dict[str, str], float | None]:
        listing = self.external_weights_urls(str(path))
        if renew_ttl is not None:  # a temporary export outlives the URLs just signed
            self.set_ttl(str(path), renew_ttl)
        for rel in listing.urls:
            _check_relative(rel)
        expires = listing.expires
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return dict(listing.urls), None if expires is None else expires.timestamp()

    def _download_external(
        self: Checkpoints[Parsed],
        path: TinkerPath,
        target: Path,
        progress: Progress,
        say: Notify,
        budget: RetryBudget,
        connections: Connections,
        renew_ttl: int | None = None,
    ) -> Path:
        client = self._client
        partial = target.parent / f".{target.name}.partial"
        _remove_leftovers(target, keep=partial.name)
        _private_dir(partial)
        try:
            urls, expires = self._external_urls(path, renew_ttl)
            total = self._known_size(path)
            progress(0, total)
            done = 0
            for rel in sorted(urls):
                dest = partial.joinpath(*rel.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_file() and not dest.is_symlink():
                    done += dest.stat().st_size  # completed by an earlier, killed run
                    progress(done, total)
                    continue
                while True:
                    if expires is not None and time.time() > expires - RESIGN_MARGIN:
                        say(f"Download URLs expire soon; fetching new ones for {path}")
                        urls, expires = self._external_urls(path, renew_ttl)
                    if rel not in urls:
                        raise APIResponseValidationError(
                            f"The new download URLs of {path} no longer list {rel!r}"
                        )
                    base = done

                    def file_progress(n: int, _total: int | None, base: int = base) -> None:
                        progress(base + n, total)

                    try:
                        download_file(
                            client,
                            urls[rel],
                            dest,
                            resume=True,
                            credentials=False,
                            budget=budget,
                            progress=file_progress,
                            connections=connections,
                        )
                    except APIStatusError as exc:
                        if exc.status_code not in (401, 403):
                            raise
                        reason = f"the signed URL of {rel} was refused ({exc.status_code})"
                        request = (
                            exc.request if isinstance(exc.request, Request) else Request("GET", urls[rel])
                        )
                        if not client._backoff(budget, request, reason, progress=done + _size(dest)):
                            raise
                        say(f"Signed URL of {rel} refused ({exc.status_code}); fetching new URLs")
                        expires = 0.0  # fetch again, then resume the .part file
                        continue
                    break
                done += dest.stat().st_size
                progress(done, total)
            _check_whole(path, len(urls), done, done, total)
            progress(done, total if total is not None else done)
        except (APIConnectionError, KeyboardInterrupt):
            log.info("Keeping %s: a re-run resumes its partial files", partial)
            raise
        except BaseException:
            _remove(partial)
            raise
        return partial


# -- parsers and paths ------------------------------------------------------------


def _run_checkpoints(run_id: str) -> str:
    return f"/api/v1/training_runs/{segment(run_id, 'training run id')}/checkpoints"


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


# -- files and directories ---------------------------------------------------------


def _no_progress(downloaded: int, total: int | None) -> None:
    pass


def _check_whole(path: TinkerPath, files: int, size: int, received: int, known: int | None) -> None:
    """Refuse a checkpoint that is no checkpoint: no files at all, or fewer bytes than its listing's
    ``size_bytes`` (neither the bytes received nor the bytes extracted reach it). Before the target
    exists: a download never installs an empty or short directory as a success."""
    if not files:
        raise UnsafeArchiveError(f"malformed archive: {path} holds no files (received {received} bytes)")
    if known is not None and max(size, received) < known:
        raise UnsafeArchiveError(
            f"malformed archive: {path} is smaller than its listing says: {received} bytes received, "
            f"{size} bytes of files, size_bytes {known}"
        )


def _size(dest: Path) -> int:
    """Bytes already in ``dest``'s partial file (progress, for the retry budget)."""
    try:
        return os.stat(f"{dest}.part").st_size
    except OSError:
        return 0


def _notifier(notify: Notify | None) -> Notify:
    def say(message: str) -> None:
        log.info("%s", message)
        if notify is not None:
            notify(message)

    return say


def _check_target(target: Path, force: bool) -> None:
    if os.path.lexists(target) and not force:
        raise FileExistsError(
            errno.EEXIST, f"{target} already exists (use force=True, or --force, to replace it)", str(target)
        )


def _check_relative(rel: str) -> None:
    """Refuse a relative path that could leave the target directory."""
    reason = None
    if not rel:
        reason = "empty path"
    elif "\x00" in rel:
        reason = "contains a NUL byte"
    elif "\\" in rel:
        reason = "contains a backslash"
    elif rel.startswith("/"):
        reason = "absolute path"
    elif len(rel) >= 2 and rel[1] == ":" and rel[0].isalpha():
        reason = "Windows drive letter"
    else:
        parts = rel.split("/")
        if ".." in parts:
            reason = "'..' component"
        elif any(part in ("", ".") for part in parts):
            reason = "empty or '.' component"
        elif any(part.endswith((".part", ".lock")) for part in parts):
            reason = "reserved suffix"
    if reason is not None:
        raise UnsafeArchiveError(f"refusing external weights path {rel!r}: {reason}")


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove_leftovers(target: Path, keep: str | None = None) -> None:
    """Remove temp directories of killed runs (we hold the lock, so none is live)."""
    prefixes = (f".{target.name}.tmp-", f".{target.name}.old-", f".{target.name}.partial")
    for entry in target.parent.iterdir():
        if entry.name != keep and entry.name.startswith(prefixes):
            log.info("Removing %s, left by an interrupted download", entry)
            _remove(entry)


def _private_dir(path: Path) -> None:
    """Create ``path`` 0o700, or accept an existing one only if it is ours, private and not a link."""
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise FileExistsError(
            errno.EEXIST, f"{path} exists and is not a private directory of ours", str(path)
        )
    log.info("Resuming the partial download in %s", path)


def _install(tmp: Path, target: Path, force: bool) -> None:
    """Rename the complete ``tmp`` to ``target``; with ``force`` an old target goes only after that."""
    os.chmod(tmp, 0o777 & ~_umask())  # private while filled; an ordinary directory once done
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if not force:
        _check_target(target, force)
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    moved = old / "previous"
    os.rename(target, moved)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(moved, target)
        _remove(old)
        raise
    _remove(old)
