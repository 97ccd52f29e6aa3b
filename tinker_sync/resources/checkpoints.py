"""Checkpoints: list, get, delete, publish, TTL, and download.

Download has two flows, chosen by the path's kind (``tinker://RUN/KIND/NAME``):

* ``weights`` (archive flow): GET ``.../archive`` (redirects off) -> 302 to a
  signed URL -> the tar is streamed straight into ``_extract.extract_tar``.
  A broken transfer resumes with Range inside the same call; an expired
  signed URL is re-signed through the API and resumed at the same offset.
  A killed run cannot be resumed (the extractor's state died with it): the
  next run removes its leftovers and starts again.
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
from datetime import UTC
from pathlib import Path
from urllib.parse import quote

from .._download import download as download_file
from .._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    UnsafeArchiveError,
)
from .._files import Progress, target_lock
from .._retry import RetryBudget
from .._transport import Request
from ._archive import ArchiveSigner, BodyReader, Notify, is_compressed
from ._paths import TinkerPath, parse_tinker_path
from ._resource import SyncAPIResource
from .types import Checkpoint, CheckpointList, ExternalWeightsUrls

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


class Checkpoints(SyncAPIResource):
    """``client.checkpoints``: checkpoint operations of the REST API."""

    # -- listing and management ------------------------------------------------

    def list(
        self, run_id: str | None = None, *, limit: int | None = None, offset: int | None = None
    ) -> CheckpointList:
        """The caller's checkpoints, newest first (paged), or all checkpoints of ``run_id``."""
        if run_id is not None:
            return self.list_for_run(run_id)
        return self._client.get(
            "/api/v1/checkpoints", params={"limit": limit, "offset": offset}, cast_to=CheckpointList
        )

    def list_for_run(self, run_id: str) -> CheckpointList:
        """Every checkpoint of one training run."""
        return self._client.get(
            f"/api/v1/training_runs/{quote(run_id, safe='')}/checkpoints", cast_to=CheckpointList
        )

    def get(self, tinker_path: str) -> Checkpoint:
        """The checkpoint at ``tinker_path`` (found in its run's list).

        Raises:
            NotFoundError: the run is unknown. LookupError: the run has no such checkpoint.
        """
        path = parse_tinker_path(tinker_path)
        for checkpoint in self.list_for_run(path.run).checkpoints:
            if checkpoint.checkpoint_id == path.checkpoint_id:
                return checkpoint
        raise LookupError(f"No checkpoint {tinker_path} in training run {path.run!r}")

    def delete(self, tinker_path: str) -> None:
        """Delete the checkpoint."""
        self._client.delete(parse_tinker_path(tinker_path).api_path)

    def publish(self, tinker_path: str) -> None:
        """Make the checkpoint public (ConflictError if it already is)."""
        self._client.post(parse_tinker_path(tinker_path).api_path + "/publish")

    def unpublish(self, tinker_path: str) -> None:
        """Make the checkpoint private again (ConflictError if it already is)."""
        self._client.delete(parse_tinker_path(tinker_path).api_path + "/publish")

    def set_ttl(self, tinker_path: str, ttl_seconds: int | None) -> None:
        """Expire the checkpoint ``ttl_seconds`` after its creation (None: never)."""
        self._client.put(parse_tinker_path(tinker_path).api_path + "/ttl", json={"ttl_seconds": ttl_seconds})

    # -- download --------------------------------------------------------------

    def download(
        self,
        tinker_path: str,
        output_dir: str | os.PathLike[str] = ".",
        *,
        force: bool = False,
        progress: Progress | None = None,
        prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT,
        notify: Notify | None = None,
        max_members: int | None = None,
        max_total_size: int | None = None,
    ) -> Path:
        """Download a checkpoint into ``<output_dir>/<RUN>_<KIND>_<NAME>`` and return that path.

        All or nothing: the directory appears, complete, only at the end. A
        broken transfer is resumed inside the call (Range; an expired signed
        URL is re-signed). Memory stays constant whatever the size.

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
                archive (409/503 with Retry-After, or slow headers).
            notify: called with a one-line message on notable events (the
                archive is being prepared, a transfer resumed, a URL re-signed);
                they are logged at INFO too.
            max_members, max_total_size: extraction limits; by default 100,000
                members and the checkpoint's ``size_bytes`` (when known).

        Raises:
            ValueError: not a downloadable ``tinker://`` path.
            FileExistsError: the target exists and ``force`` is false.
            DownloadLockedError: another run holds the target's lock (after a short wait).
            CheckpointNotReadyError: the archive was not prepared in time.
            UnsafeArchiveError: a refused archive member or relative path.
            APIStatusError, APIConnectionError: the API or the transfer failed.
        """
        path = parse_tinker_path(tinker_path)
        if path.kind == "sampler_weights":
            raise ValueError(
                f"Sampler weights cannot be downloaded ({tinker_path}); download the training "
                f"checkpoint instead: tinker://{path.run}/weights/{path.name}"
            )
        out = Path(os.fspath(output_dir))
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
                tmp = self._download_archive(
                    path, target, report, prepare_timeout, say, budget, max_members, max_total_size
                )
            else:
                tmp = self._download_external(path, target, report, say, budget)
            try:
                _install(tmp, target, force)
            except BaseException:
                _remove(tmp)
                raise
        return target

    def _known_size(self, path: TinkerPath) -> int | None:
        """The checkpoint's ``size_bytes``, or None when the listing does not say (or cannot be read)."""
        try:
            size = self.get(str(path)).size_bytes
        except (APIStatusError, LookupError) as exc:
            log.debug("Size of %s unknown: %s", path, exc)
            return None
        return size or None

    # -- archive flow ----------------------------------------------------------

    def _download_archive(
        self,
        path: TinkerPath,
        target: Path,
        progress: Progress,
        prepare_timeout: float,
        say: Notify,
        budget: RetryBudget,
        max_members: int | None,
        max_total_size: int | None,
    ) -> Path:
        from .._extract import DEFAULT_MAX_MEMBERS, extract_tar  # lazy: imports tarfile

        _remove_leftovers(target)  # a killed archive run cannot resume: start again
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            signer = ArchiveSigner(self._client, path, prepare_timeout, say, budget)
            signer.sign()  # first: a missing checkpoint fails here, and a prepared one knows its size
            limit = max_total_size if max_total_size is not None else self._known_size(path)
            with signer.send(Request("GET", signer.url)) as response:
                total = response.total_size
                reader = BodyReader(response, progress, total)
                progress(0, total)
                if limit is None and total is not None and not is_compressed(reader.peek()):
                    limit = total  # a plain tar's size bounds its files' size
                extract_tar(reader, tmp, max_members=max_members or DEFAULT_MAX_MEMBERS, max_total_size=limit)
                reader.drain(MAX_TRAILING_BYTES)
            progress(reader.count, total if total is not None else reader.count)
        except BaseException:
            _remove(tmp)
            raise
        return tmp

    # -- external-weights flow -------------------------------------------------

    def _external_urls(self, path: TinkerPath) -> tuple[dict[str, str], float | None]:
        listing = self._client.get(path.api_path + "/external_weights_urls", cast_to=ExternalWeightsUrls)
        for rel in listing.urls:
            _check_relative(rel)
        expires = listing.expires
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return dict(listing.urls), None if expires is None else expires.timestamp()

    def _download_external(
        self, path: TinkerPath, target: Path, progress: Progress, say: Notify, budget: RetryBudget
    ) -> Path:
        client = self._client
        partial = target.parent / f".{target.name}.partial"
        _remove_leftovers(target, keep=partial.name)
        _private_dir(partial)
        try:
            urls, expires = self._external_urls(path)
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
                        urls, expires = self._external_urls(path)
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
            progress(done, total if total is not None else done)
        except (APIConnectionError, KeyboardInterrupt):
            log.info("Keeping %s: a re-run resumes its partial files", partial)
            raise
        except BaseException:
            _remove(partial)
            raise
        return partial


# -- files and directories ---------------------------------------------------------


def _no_progress(downloaded: int, total: int | None) -> None:
    pass


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
