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
from collections.abc import Callable, Iterator
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urljoin

from .._config import Timeout
from .._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    CheckpointNotReadyError,
    UnsafeArchiveError,
)
from .._retry import retry_delay
from .types import Checkpoint, CheckpointList, ExternalWeightsUrls

if TYPE_CHECKING:
    from .._client import Client
    from .._response import StreamedResponse

__all__ = ["DEFAULT_PREPARE_TIMEOUT", "Checkpoints", "TinkerPath", "parse_tinker_path"]

log = logging.getLogger("tinker_sync")

Progress = Callable[[int, "int | None"], None]
Notify = Callable[[str], None]

KINDS = ("weights", "sampler_weights", "external_weights")
# How long the server may take to prepare an archive (409/503 + Retry-After,
# or slow response headers) before CheckpointNotReadyError. Archives of big
# checkpoints are packed on demand; ten minutes covers the slow cases seen.
DEFAULT_PREPARE_TIMEOUT = 600.0
# External-weights URLs are fetched again when this close to their expiry.
RESIGN_MARGIN = 300.0
# An archive URL is re-signed before a resume when this close to its Expires.
ARCHIVE_RESIGN_MARGIN = 10.0
# Re-signing that makes no progress (the new URL is refused too) gives up after this many.
MAX_RESIGNS = 3
# What may follow the tar's end-of-archive marker before we call the body malformed.
MAX_TRAILING_BYTES = 1 << 20


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
        """``/api/v1/training_runs/RUN/checkpoints/KIND/NAME`` (components percent-encoded)."""
        return f"/api/v1/training_runs/{quote(self.run, safe='')}/checkpoints/{self.kind}/{quote(self.name, safe='')}"

    def __str__(self) -> str:
        return f"tinker://{self.run}/{self.kind}/{self.name}"


def parse_tinker_path(path: str) -> TinkerPath:
    """Parse ``tinker://RUN/KIND/NAME`` (KIND: weights, sampler_weights, external_weights).

    Raises:
        ValueError: anything else, with what was expected.
    """
    if not isinstance(path, str) or not path.startswith("tinker://"):
        raise ValueError(f"Not a checkpoint path: {path!r}; expected tinker://RUN/KIND/NAME")
    parts = path[len("tinker://"):].split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"Not a checkpoint path: {path!r}; expected tinker://RUN/KIND/NAME "
                         f"with KIND one of {', '.join(KINDS)}")  # fmt: skip
    run, kind, name = parts
    if kind not in KINDS:
        raise ValueError(f"Unknown checkpoint kind {kind!r} in {path!r}; expected one of {', '.join(KINDS)}")
    for part in (run, name):
        if part in (".", "..") or "\\" in part or "\x00" in part or any(ord(c) < 32 for c in part):
            raise ValueError(f"Invalid component {part!r} in checkpoint path {path!r}")
    return TinkerPath(run, kind, name)


class Checkpoints:
    """``client.checkpoints``: checkpoint operations of the REST API."""

    def __init__(self, client: Client) -> None:
        self._client = client

    # -- listing and management ------------------------------------------------

    def list(self, run_id: str | None = None, *, limit: int | None = None, offset: int | None = None) -> CheckpointList:
        """The caller's checkpoints, newest first (paged), or all checkpoints of ``run_id``."""
        if run_id is not None:
            return self.list_for_run(run_id)
        return self._client.get("/api/v1/checkpoints", params={"limit": limit, "offset": offset}, cast_to=CheckpointList)

    def list_for_run(self, run_id: str) -> CheckpointList:
        """Every checkpoint of one training run."""
        return self._client.get(f"/api/v1/training_runs/{quote(run_id, safe='')}/checkpoints", cast_to=CheckpointList)

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
        from .._download import target_lock  # lazy: flock, released by the kernel even after kill -9

        with target_lock(target.with_name(target.name + ".lock")):
            _check_target(target, force)  # another run may have finished while we waited
            if path.kind == "weights":
                tmp = self._download_archive(path, target, report, prepare_timeout, say, max_members, max_total_size)
            else:
                tmp = self._download_external(path, target, report, say)
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

    def _download_archive(self, path: TinkerPath, target: Path, progress: Progress, prepare_timeout: float,
                          say: Notify, max_members: int | None, max_total_size: int | None) -> Path:  # fmt: skip
        from .._extract import DEFAULT_MAX_MEMBERS, extract_tar  # lazy: imports tarfile

        _remove_leftovers(target)  # a killed archive run cannot resume: start again
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            signer = _ArchiveSigner(self._client, path, prepare_timeout, say)
            signer.sign()  # first: a missing checkpoint fails here, and a prepared one knows its size
            limit = max_total_size if max_total_size is not None else self._known_size(path)
            response = signer.open(0, None)
            with response:
                total = response.total_size
                response.resume_with(signer.reopener(response, total))
                reader = _BodyReader(response.iter_bytes(), progress, total)
                progress(0, total)
                if limit is None and total is not None and not _compressed(reader.peek()):
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
        listing: ExternalWeightsUrls = self._client.get(path.api_path + "/external_weights_urls",
                                                        cast_to=ExternalWeightsUrls)  # fmt: skip
        for rel in listing.urls:
            _check_relative(rel)
        expires = listing.expires
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return dict(listing.urls), None if expires is None else expires.timestamp()

    def _download_external(self, path: TinkerPath, target: Path, progress: Progress, say: Notify) -> Path:
        from .._download import download as download_file  # lazy: the download module is optional here

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
                resigns = 0
                while True:
                    if expires is not None and time.time() > expires - RESIGN_MARGIN:
                        say(f"Download URLs expire soon; fetching new ones for {path}")
                        urls, expires = self._external_urls(path)
                    if rel not in urls:
                        raise APIResponseValidationError(f"The new download URLs of {path} no longer list {rel!r}")
                    base = done
                    try:
                        download_file(self._client, urls[rel], dest, resume=True, credentials=False,
                                      progress=lambda n, _t, base=base: progress(base + n, total))  # fmt: skip
                    except APIStatusError as exc:
                        if exc.status_code not in (401, 403) or resigns >= MAX_RESIGNS:
                            raise
                        resigns += 1
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


# -- the archive's signed URL ----------------------------------------------------


class _ArchiveSigner:
    """Gets (and renews) the archive's signed URL, and opens it at an offset."""

    def __init__(self, client: Client, path: TinkerPath, prepare_timeout: float, say: Notify) -> None:
        self.client = client
        self.path = path
        self.prepare_timeout = prepare_timeout
        self.say = say
        self.url = ""
        self.expires: float | None = None
        self._told = False

    def sign(self) -> str:
        """GET ``.../archive`` until it redirects, waiting while the server prepares the archive."""
        client = self.client
        start = time.monotonic()
        deadline = start + self.prepare_timeout
        transient = 0
        waits = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckpointNotReadyError(
                    f"The archive of {self.path} was not ready after {self.prepare_timeout:g} s; try again later")
            request = client.build_request("GET", self.path.api_path + "/archive")
            # Slow headers count as preparation: wait for them up to the deadline.
            timeout = Timeout(connect=client.timeout.connect, read=max(1.0, remaining))
            headers: Any = None
            try:
                response = client.send(request, timeout=timeout, max_retries=0)
            except APITimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise CheckpointNotReadyError(
                        f"The archive of {self.path} was not ready after {self.prepare_timeout:g} s "
                        f"(no answer): {exc}", request) from exc  # fmt: skip
                transient += 1
                if transient > client.max_retries:
                    raise
            except APIStatusError as exc:
                if exc.status_code in (409, 503):
                    self._preparing()
                    headers = exc.response.headers if exc.response is not None else None
                    waits += 1
                elif exc.status_code in (408, 429) or exc.status_code >= 500:
                    transient += 1
                    if transient > client.max_retries:
                        raise
                    headers = exc.response.headers if exc.response is not None else None
                else:
                    raise
            except APIConnectionError:
                transient += 1
                if transient > client.max_retries:
                    raise
            else:
                with response:
                    location = response.headers.get("location")
                    if response.status_code == 202:
                        self._preparing()
                        headers = response.headers
                        waits += 1
                    elif 300 <= response.status_code < 400 and location:
                        self.url = urljoin(request.url, location)
                        self.expires = _http_date(response.headers.get("expires"))
                        if waits:
                            log.info("The archive of %s is ready after %.1f s", self.path, time.monotonic() - start)
                        return self.url
                    else:
                        raise APIResponseValidationError(
                            f"Expected a redirect to the archive of {self.path}, got {response.status_code}"
                            f"{'' if location else ' without a Location header'}", response)  # fmt: skip
            wait = retry_delay(min(waits, 2) if headers is not None else transient - 1, headers)
            if time.monotonic() + wait > deadline:
                wait = max(0.0, deadline - time.monotonic())
            client._sleep(wait)

    def _preparing(self) -> None:
        if not self._told:
            self._told = True
            self.say(f"The server is preparing the archive of {self.path}; waiting up to "
                     f"{self.prepare_timeout:g} s")  # fmt: skip

    def open(self, offset: int, validator: str | None) -> StreamedResponse:
        """GET the signed URL from ``offset``; a refused (expired) URL is re-signed and tried again."""
        for attempt in range(MAX_RESIGNS + 1):
            if self.expires is not None and time.time() > self.expires - ARCHIVE_RESIGN_MARGIN:
                self.say(f"The archive URL of {self.path} expires; signing it again")
                self.sign()
            try:
                headers = {"Range": f"bytes={offset}-", "If-Range": validator or ""} if offset else {}
                request = self.client.build_request("GET", self.url, headers=headers, credentials=False)
                return self.client.send(request)
            except APIStatusError as exc:
                if exc.status_code not in (401, 403) or attempt == MAX_RESIGNS:
                    raise
                self.say(f"The archive URL of {self.path} was refused ({exc.status_code}); signing it again")
                self.sign()
        raise AssertionError("unreachable")

    def reopener(self, response: StreamedResponse, total: int | None) -> Callable[[int, str], StreamedResponse | None]:
        """``reopen(offset, validator)`` for ``resume_with``: the retry budget renews whenever bytes arrive."""
        state = {"offset": -1, "failures": 0}
        of = f" of {total}" if total is not None else ""

        def reopen(offset: int, validator: str) -> StreamedResponse | None:
            if offset != state["offset"]:
                state["offset"], state["failures"] = offset, 0
            if state["failures"] >= self.client.max_retries:
                return None
            wait = retry_delay(state["failures"])
            state["failures"] += 1
            self.say(f"Connection broke at byte {offset}{of}; resuming in {wait:.1f} s")
            self.client._sleep(wait)
            try:
                return self.open(offset, validator)
            except APIConnectionError as exc:
                log.info("Resume at byte %d failed: %s", offset, exc)
                return reopen(offset, validator)

        return reopen


class _BodyReader:
    """``read(n)`` over a body's chunks, for the extractor; counts received bytes for progress."""

    def __init__(self, chunks: Iterator[bytes], progress: Progress, total: int | None) -> None:
        self._chunks = chunks
        self._progress = progress
        self._total = total
        self._chunk = b""
        self._pos = 0
        self.count = 0

    def _fill(self) -> bool:
        while self._pos >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._chunk, self._pos = chunk, 0
            self.count += len(chunk)
            self._progress(self.count, self._total)
        return True

    def peek(self) -> bytes:
        """The next bytes without consuming them (empty at the end)."""
        return self._chunk[self._pos:] if self._fill() else b""

    def read(self, n: int = -1) -> bytes:
        if not self._fill():
            return b""
        chunk, pos = self._chunk, self._pos
        if pos == 0 and (n < 0 or n >= len(chunk)):
            self._pos = len(chunk)
            return chunk  # the common case: no copy
        end = len(chunk) if n < 0 else min(len(chunk), pos + n)
        self._pos = end
        return chunk[pos:end]

    def drain(self, limit: int) -> None:
        """Read to the end of the body (so it completes, and its connection is reused)."""
        extra = 0
        while data := self.read(1 << 20):
            extra += len(data)
            if extra > limit:
                raise UnsafeArchiveError(f"malformed archive: more than {limit} bytes after the end of the archive")


def _compressed(head: bytes) -> bool:
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


# -- files and directories ---------------------------------------------------------


def _no_progress(downloaded: int, total: int | None) -> None:
    pass


def _notifier(notify: Notify | None) -> Notify:
    def say(message: str) -> None:
        log.info("%s", message)
        if notify is not None:
            notify(message)

    return say


def _check_target(target: Path, force: bool) -> None:
    if os.path.lexists(target) and not force:
        raise FileExistsError(errno.EEXIST, f"{target} already exists (use force=True, or --force, to replace it)",
                              str(target))  # fmt: skip


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
        raise FileExistsError(errno.EEXIST, f"{path} exists and is not a private directory of ours", str(path))
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
