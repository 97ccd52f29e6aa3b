"""One checkpoint downloaded into its target directory: the flows behind ``client.checkpoints.download``.

Two flows, chosen by the path's kind (``tinker://RUN/KIND/NAME``):

* ``weights`` (archive flow): GET ``.../archive`` (redirects off) -> 302 to a
  signed URL -> the tar is streamed straight into ``_extract.extract_tar``.
  A broken transfer resumes with Range inside the same call; an expired
  signed URL is re-signed through the API and resumed at the same offset
  (``_archive``). A killed run cannot be resumed (the extractor's state died
  with it): the next run removes its leftovers and starts again. A server
  that answers the archive request 404, 405 or 501 (it no longer serves
  archives) gets the export flow instead (``_export``): the checkpoint is
  exported as temporary external weights, downloaded as below, and the
  export removed.
* ``external_weights``: GET ``.../external_weights_urls`` -> each file, in
  sorted order, through ``_download.download`` (atomic ``.part`` files),
  re-signed when the URLs are within 5 minutes of expiry. Files land in a
  temp directory with a stable name, ``.<target>.partial``, so a re-run
  after a kill (or a connection failure) resumes the ``.part`` files.

Rules:
1. All or nothing (``_target``): everything lands in a private temp directory
   beside the target and is renamed into place when complete; on failure
   the temp directory is removed and no target exists. (Only the
   external-weights ``.partial`` directory survives a connection failure or
   an interrupt, for the next run to resume; it is never the target.)
2. Signed URLs get no API key, no Tinker headers and none of the caller's extra
   headers or query, whatever their origin: their requests are built from
   ``RequestOptions.signed`` (``credentials=False``). Every API request of the
   call (signing, listing, the export flow) carries the caller's overrides.
3. The archive is never held in memory nor copied to a temp tar.
4. One run per target: ``<target>.lock``, the download module's lock (an
   ``flock`` the kernel drops when its holder dies, so a killed run's lock
   is simply reclaimed; a second run waits a few seconds, then fails).
5. A checkpoint with no files, or fewer bytes than its listing's
   ``size_bytes``, is refused before the target exists.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Protocol, Unpack

from .._base_client import BaseClient
from .._download import download as download_file
from .._exceptions import (
    APIResponseValidationError,
    APIStatusError,
    DownloadIntegrityError,
    UnsafeArchiveError,
)
from .._files import target_lock
from .._options import Overrides, RequestOptions
from .._retry import RetryBudget
from .._transport import Request
from ._archive import ARCHIVE_UNSUPPORTED, ArchiveSigner, BodyReader, Notify, is_compressed
from ._export import EXPORT_TTL, exported
from ._paths import TinkerPath
from ._target import check_target, install, private_dir, remove, remove_leftovers
from .types import Checkpoint, ExternalWeightsUrls

__all__ = ["CheckpointCalls", "CheckpointDownload", "notifier"]

log = logging.getLogger("tinker_sync")

# External-weights URLs are fetched again when this close to their expiry.
RESIGN_MARGIN = 300.0
# What may follow the tar's end-of-archive marker before we call the body malformed.
MAX_TRAILING_BYTES = 1 << 20


class CheckpointCalls(Protocol):
    """The API calls a download makes besides its transfers (``client.checkpoints`` implements them)."""

    def get(self, tinker_path: str, **overrides: Unpack[Overrides]) -> Checkpoint:
        """The checkpoint's listing entry (for its ``size_bytes``)."""
        ...

    def external_weights_urls(self, tinker_path: str, **overrides: Unpack[Overrides]) -> ExternalWeightsUrls:
        """The signed URL of each file of external weights."""
        ...

    def set_ttl(self, tinker_path: str, ttl_seconds: int | None, **overrides: Unpack[Overrides]) -> None:
        """Renew a temporary export's lifetime."""
        ...


@dataclass
class CheckpointDownload:
    """One ``client.checkpoints.download`` call, past its argument checks: ``run()`` fills
    ``target`` (all or nothing) under the target's lock."""

    calls: CheckpointCalls
    client: BaseClient
    path: TinkerPath
    target: Path
    force: bool
    prepare_timeout: float
    say: Notify
    budget: RetryBudget  # one for the whole checkpoint: every file and resume
    max_members: int | None
    max_total_size: int | None
    # The call's options: the archive's signing request with the caller's extra headers and query,
    # the call's timeout and retries, its ``file`` options (the whole checkpoint's progress, each
    # file's connections). Signed URLs get ``options.signed(url)``: none of the API's headers.
    options: RequestOptions
    overrides: Overrides  # the same overrides, for the API calls made through ``calls``

    def run(self) -> None:
        """Download into a temp directory and install it as the target."""
        target = self.target
        with target_lock(target.with_name(target.name + ".lock")):
            check_target(target, self.force)  # another run may have finished while we waited
            if self.path.kind == "weights":
                tmp = self._weights()
            else:
                tmp = self._external(self.path)
            try:
                install(tmp, target, self.force)
            except BaseException:
                remove(tmp)
                raise

    def _known_size(self, path: TinkerPath) -> int | None:
        """The checkpoint's ``size_bytes``, or None when the listing does not say (or cannot be read)."""
        try:
            size = self.calls.get(str(path), **self.overrides).size_bytes
        except (APIStatusError, LookupError) as exc:
            log.debug("Size of %s unknown: %s", path, exc)
            return None
        return size or None

    # -- archive flow (or the export flow, when the server has no archives) ---

    def _weights(self) -> Path:
        path = self.path
        signer = ArchiveSigner(self.client, path, self.prepare_timeout, self.say, self.budget, self.options)
        try:
            signer.sign()  # first: a missing checkpoint fails here, and a prepared one knows its size
        except APIStatusError as exc:
            if exc.status_code not in ARCHIVE_UNSUPPORTED:
                raise
            log.info("The archive of %s: HTTP %d; trying the export flow", path, exc.status_code)
            why = f"the server does not serve archives (HTTP {exc.status_code})"
            with exported(
                self.client, path, self.budget, self.prepare_timeout, self.say, why, self.overrides
            ) as export:
                return self._external(export, renew_ttl=EXPORT_TTL)
        return self._archive(signer)

    def _archive(self, signer: ArchiveSigner) -> Path:
        from .._extract import extract_tar  # lazy: imports tarfile

        target, progress = self.target, self.options.file.progress or _no_progress
        remove_leftovers(target)  # a killed archive run cannot resume: start again
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            limits = self.client.archive_limits
            known = self._known_size(signer.path)
            limit = next(
                (x for x in (self.max_total_size, limits.max_total_size, known) if x is not None), None
            )
            with signer.send(Request("GET", signer.url), self.options.signed(signer.url)) as response:
                total = response.total_size
                reader = BodyReader(response, progress, total)
                progress(0, total)
                if limit is None and total is not None and not is_compressed(reader.peek()):
                    limit = total  # a plain tar's size bounds its files' size
                result = extract_tar(
                    reader,
                    tmp,
                    max_members=self.max_members or limits.max_members,
                    max_total_size=limit,
                    max_name_length=limits.max_name_length,
                )
                reader.drain(MAX_TRAILING_BYTES)
            _check_whole(signer.path, result.files, result.total_size, reader.count, known)
            progress(reader.count, total if total is not None else reader.count)
        except BaseException:
            remove(tmp)
            raise
        return tmp

    # -- external-weights flow -------------------------------------------------

    def _urls(self, path: TinkerPath, renew_ttl: int | None) -> tuple[dict[str, str], float | None]:
        listing = self.calls.external_weights_urls(str(path), **self.overrides)
        if renew_ttl is not None:  # a temporary export outlives the URLs just signed
            self.calls.set_ttl(str(path), renew_ttl, **self.overrides)
        for rel in listing.urls:
            _check_relative(rel)
        expires = listing.expires
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return dict(listing.urls), None if expires is None else expires.timestamp()

    def _external(self, path: TinkerPath, renew_ttl: int | None = None) -> Path:
        client, target, say, budget = self.client, self.target, self.say, self.budget
        progress = self.options.file.progress or _no_progress
        partial = target.parent / f".{target.name}.partial"
        remove_leftovers(target, keep=partial.name)
        private_dir(partial)
        try:
            urls, expires = self._urls(path, renew_ttl)
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
                        urls, expires = self._urls(path, renew_ttl)
                    if rel not in urls:
                        raise APIResponseValidationError(
                            f"The new download URLs of {path} no longer list {rel!r}"
                        )
                    base = done

                    def file_progress(n: int, _total: int | None, base: int = base) -> None:
                        progress(base + n, total)

                    try:
                        file = replace(self.options.file, progress=file_progress)
                        options = self.options.signed(urls[rel]).replace(file=file)
                        download_file(client, options, dest, budget=budget)
                    except APIStatusError as exc:
                        if exc.status_code not in (401, 403):
                            raise
                        reason = f"the signed URL of {rel} was refused ({exc.status_code})"
                        request = (
                            exc.request if isinstance(exc.request, Request) else Request("GET", urls[rel])
                        )
                        if not client.backoff(budget, request, reason, progress=done + _part_size(dest)):
                            raise
                        say(f"Signed URL of {rel} refused ({exc.status_code}); fetching new URLs")
                        expires = 0.0  # fetch again, then resume the .part file
                        continue
                    break
                done += dest.stat().st_size
                progress(done, total)
            _check_whole(path, len(urls), done, done, total)
            progress(done, total if total is not None else done)
        except (DownloadIntegrityError, UnsafeArchiveError):  # verified bad: nothing in it to resume
            remove(partial)
            raise
        except APIStatusError as exc:
            if exc.status_code in (404, 410):  # the store says the file is gone: nothing to resume
                remove(partial)
            else:
                log.info("Keeping %s: a re-run resumes its partial files", partial)
            raise
        except BaseException:  # anything else (a broken pipe, Ctrl-C, a full disk, a bug): resumable
            log.info("Keeping %s: a re-run resumes its partial files", partial)
            raise
        return partial


def notifier(notify: Notify | None) -> Notify:
    """``notify``, with every message logged at INFO too."""

    def say(message: str) -> None:
        log.info("%s", message)
        if notify is not None:
            notify(message)

    return say


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


def _part_size(dest: Path) -> int:
    """Bytes already in ``dest``'s partial file (progress, for the retry budget)."""
    try:
        return os.stat(f"{dest}.part").st_size
    except OSError:
        return 0


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
