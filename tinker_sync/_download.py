"""File downloads: temp file -> verify -> rename, with progress and resume.

Files next to the target ``dest`` while a download runs:

    dest.part        the bytes received so far (renamed to ``dest`` when complete and verified)
    dest.part.json   sidecar: {"url", "validator" (ETag or Last-Modified), "total", "checksums"}
    dest.lock        holds an exclusive ``fcntl.flock`` while a download of ``dest`` runs;
                     its text names the holder ("pid@hostname")

Rules:
1. Nothing appears at ``dest`` until every byte arrived, the size and every
   checksum the server (or caller) offered matched, and the data was fsynced:
   then ``os.replace``. A failed, killed or interrupted download never leaves
   a file at ``dest``; an integrity failure removes ``.part`` and its sidecar.
2. A broken body resumes through the response's own machinery
   (``StreamedResponse.resume_with``; a 200 instead of 206 truncates and
   restarts from zero). Across runs, a ``.part`` whose sidecar names the same
   URL resumes with ``Range`` + ``If-Range``; anything that does not prove
   the bytes continue the same resource restarts from zero. Never a splice.
3. Memory is constant: chunks are handed to one thread per sink (the file and
   each hash), through bounded queues. hashlib and file writes release the
   GIL, so hashing and writing overlap the socket reads instead of halving
   their speed.

This module imports only ``_exceptions`` (it sits above ``_transport`` in the
module map): the client and the response are used through their methods.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import json
import logging
import os
import pathlib
import queue
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from ._exceptions import APIConnectionError, APIStatusError, DownloadIntegrityError, DownloadLockedError

__all__ = ["download", "stream_to_file", "target_lock"]

log = logging.getLogger("tinker_sync")

Progress = Callable[[int, "int | None"], None]

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
LOCK_SUFFIX = ".lock"
MAX_REDIRECTS = 10
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# How long a second download of the same target waits for the first to finish.
LOCK_WAIT = 5.0
LOCK_POLL = 0.05
# Progress is reported at most this often (seconds), or every 1% of the total.
PROGRESS_INTERVAL = 0.1
# Chunks queued per sink thread. read1 hands out at most 256 KiB, so each
# queue holds at most ~2 MiB (a caller's chunk_size raises that bound).
QUEUE_DEPTH = 8
# Read size when hashing the existing bytes of a partial file before resuming.
HASH_READ_SIZE = 1 << 20
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_ALGO_NAMES = {"md5": "MD5", "sha256": "SHA-256", "crc32c": "CRC32C"}


# -- public entry points ------------------------------------------------------------------------------


def stream_to_file(
    response: Any,
    path: str | os.PathLike[str],
    *,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    resume: bool = True,
) -> int:
    """Write an open response's body to ``path``: atomic, verified, in constant memory.

    The bytes go to ``path + ".part"`` and are renamed into place only when the
    body is complete and its size and the checksums the server sent
    (``x-goog-hash``, ``Content-Digest``/``Digest``, an MD5 ETag) match; the
    data is fsynced first. A broken body resumes in place with Range requests
    when ``resume`` (the default) and the response allows it; a server that
    answers the resume with the whole body restarts the file from zero.
    Unlike ``download``, this never resumes a ``.part`` left by an earlier
    run: the response was already requested from byte 0.

    Args:
        chunk_size: None (the default, and the fastest) writes data as it
            arrives; an int re-chunks to that size first.
        progress: ``progress(downloaded, total)``, called at most every 0.1 s
            or 1% of ``total`` while data arrives, and always once at the end.
        resume: False turns off the in-call resume (a broken body raises).

    Returns:
        The size of the final file.

    Raises:
        DownloadIntegrityError: size or checksum mismatch (nothing is left behind).
        APIConnectionError: the body broke and could not be resumed.
        OSError: not enough disk space (checked first when the size is known).
        DownloadLockedError: another download of ``path`` holds its lock.
    """
    dest = pathlib.Path(os.fspath(path))
    paths = _Paths(dest)
    with target_lock(paths.lock):
        _remove(paths.part, paths.sidecar)
        whole = response.status_code == 200
        checks = _checksums(response.headers) if whole else []
        total = response.total_size if whole else _int_header(response.headers.get("content-length"))
        reopen = response.reopener if resume else None
        try:
            return _receive(
                response, reopen, paths, 0, total, checks, progress=progress, chunk_size=chunk_size
            )
        finally:
            response.close()


def download(
    client: Any,
    url_or_path: str,
    dest: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    resume: bool = True,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    credentials: bool = True,
) -> pathlib.Path:
    """Download ``url_or_path`` to ``dest``: atomic, verified, resumable, safe to run twice.

    A GET with ``Accept-Encoding: identity``; redirects are followed here (up
    to 10), each hop built with ``client.build_request`` so the API key and
    Tinker headers only go to the API's origin (and never with
    ``credentials=False``, for signed URLs); https -> http is refused.
    While it runs, ``dest.part`` holds the data, ``dest.part.json`` the
    resume sidecar and ``dest.lock`` the lock (see the module docstring).
    A second download of the same ``dest`` waits up to ``LOCK_WAIT`` seconds
    for the first, then fails naming the PID holding the lock.

    Verified: the byte count against Content-Length / Content-Range and
    ``expected_size``; MD5, SHA-256 and CRC32C (only with ``google-crc32c``
    installed) from ``x-goog-hash``, ``Content-Digest``, ``Digest`` or an ETag
    that is a plain MD5; and ``expected_sha256``.

    Resumed: within the call through the response's resume machinery; across
    runs from a ``.part`` whose sidecar names the same URL, query aside (a
    signed URL is signed anew each time), pinned by ``If-Range`` to the
    same resource version. A changed resource restarts from zero. ``resume=False``
    always starts from zero.

    Returns:
        ``dest`` as a ``pathlib.Path``.

    Raises:
        DownloadIntegrityError: size or checksum mismatch (``.part`` and sidecar removed).
        APIStatusError: the server refused (404, 403 for an expired signed URL, ...).
        APIConnectionError: the connection failed beyond the retry budget, or a bad redirect.
        DownloadLockedError: another download of ``dest`` holds its lock (after ``LOCK_WAIT``).
        OSError: not enough disk space, or the file system failed.
    """
    dest = pathlib.Path(os.fspath(dest))
    paths = _Paths(dest)
    url = client.build_url(url_or_path)
    with target_lock(paths.lock):
        state = _load_state(paths, url) if resume else None
        if state is None:
            _remove(paths.part, paths.sidecar)
        for _ in range(3):
            offset = state["size"] if state else 0
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                headers["If-Range"] = state["validator"]  # type: ignore[index]
            try:
                response = _open(client, url, headers, credentials)
            except APIStatusError as exc:
                if exc.status_code != 416 or not state:
                    raise
                if _already_complete(paths, state, exc.response, expected_size, expected_sha256):
                    log.info("%s was already complete", paths.part)
                    return _finish(paths)
                log.warning("Range not satisfiable for %s; restarting from byte 0", paths.part)
                state = None
                _remove(paths.part, paths.sidecar)
                continue
            with response:
                problem = _continuation_problem(response, state, offset)
                if problem is not None:
                    log.warning("Restarting %s from byte 0: %s", dest, problem)
                    response.close()
                    state = None
                    _remove(paths.part, paths.sidecar)
                    continue
                if response.status_code == 200:
                    offset = 0
                    checks = _checksums(response.headers, expected_sha256)
                else:  # a verified continuation: the checksums are the ones saved with the .part
                    checks = _checksums(_headers_from(state["checksums"]), expected_sha256)  # type: ignore[index]
                reopen = client.range_reopener(response.request, response, None, None)
                _receive(
                    response,
                    reopen,
                    paths,
                    offset,
                    response.total_size,
                    checks,
                    url=url,
                    expected_size=expected_size,
                    expected_sha256=expected_sha256,
                    progress=progress,
                )
                return dest
        raise APIConnectionError(
            f"Could not download {_show(url)}: the server kept answering inconsistent ranges"
        )


# -- opening --------------------------------------------------------------------------------------


def _open(client: Any, url: str, headers: dict[str, str], credentials: bool = True) -> Any:
    """GET ``url``, following up to MAX_REDIRECTS redirects; each hop gets headers for its own origin."""
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request("GET", url, headers=headers, credentials=credentials)
        response = client.send(request)
        if response.status_code not in _REDIRECT_STATUSES:
            return response
        location = response.headers.get("location")
        response.close()
        if not location:
            raise APIConnectionError(
                f"Redirect {response.status_code} without a Location from {_show(url)}", request
            )
        target = urljoin(url, location.strip())
        check_redirect(url, target)
        log.info("Following redirect %d from %s to %s", response.status_code, _show(url), _show(target))
        url = target
    raise APIConnectionError(f"Too many redirects (more than {MAX_REDIRECTS}) downloading {_show(url)}")


def check_redirect(source: str, target: str) -> None:
    """Raise APIConnectionError unless a redirect from ``source`` to ``target`` may be followed.

    Only http(s) targets, and never from https down to plain http (the signed
    URL, and anything sent with it, would travel in the clear).
    """
    old, new = urlsplit(source).scheme.lower(), urlsplit(target).scheme.lower()
    if new not in ("http", "https"):
        raise APIConnectionError(f"Refusing redirect to a non-HTTP URL: {_show(target)}")
    if old == "https" and new == "http":
        raise APIConnectionError(
            f"Refusing redirect from https to plain http: {_show(source)} -> {_show(target)}"
        )


def _continuation_problem(response: Any, state: dict[str, Any] | None, offset: int) -> str | None:
    """Why ``response`` cannot be written at ``offset`` (None when it can)."""
    status = response.status_code
    if status == 200:
        return None  # a whole body: always usable (a resume attempt restarts from zero)
    if status != 206:
        raise APIConnectionError(
            f"Unexpected status {status} downloading {_show(response.url)}", response.request
        )
    if not offset or state is None:
        return "the server sent 206 Partial Content to a request without Range"
    if response.position != offset:
        return f"wrong Content-Range {response.headers.get('content-range')!r} for a resume at byte {offset}"
    if state.get("total") is not None and response.total_size != state["total"]:
        return f"the resource size changed from {state['total']} to {response.total_size}"
    if response.validator is not None and response.validator != state["validator"]:
        return f"the resource changed (validator {state['validator']!r} became {response.validator!r})"
    return None


# -- receiving ------------------------------------------------------------------------------------


def _receive(
    response: Any,
    reopen: Callable[[int, str], Any] | None,
    paths: _Paths,
    offset: int,
    total: int | None,
    checks: list[tuple[str, str, str]],
    *,
    url: str | None = None,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    progress: Progress | None = None,
    chunk_size: int | None = None,
) -> int:
    """Write the body at ``offset`` of ``paths.part``, verify, rename into place; return the size.

    With ``url`` (``download``) a sidecar is kept so that a later run can resume
    the ``.part``; without it (``stream_to_file``) a failure removes the ``.part``.
    """
    dest = paths.dest
    try:
        _check_size(dest, expected_size, total)
        if (total if total is not None else expected_size) is not None:
            _check_disk_space(dest, (total if total is not None else expected_size) - offset)  # type: ignore[operator]
        if url is not None and not offset:
            _save_state(paths, url, response)
        hashers = {algo: _new_hasher(algo) for algo in {c[0] for c in checks}}
        reporter = _Reporter(progress, total)
        restarted = [False]
        with open(paths.part, "r+b" if offset else "wb") as f:
            if offset:
                _hash_existing(f, offset, hashers.values())
                f.seek(offset)
                f.truncate()
            sinks = _Sinks(f, list(hashers.values()))

            def restart() -> None:
                # The server sent the whole body to a resume: truncate and start over.
                sinks.drain()
                f.seek(0)
                f.truncate()
                restarted[0] = True

            response.resume_with(reopen, on_restart=restart)  # type: ignore[arg-type]
            reporter.start(offset)
            try:
                for chunk in response.iter_bytes(chunk_size):
                    if restarted[0]:
                        # The resource may have changed: new size, checksums and sidecar.
                        restarted[0] = False
                        sinks.close()
                        total = response.total_size
                        _check_size(dest, expected_size, total)
                        checks = _checksums(response.headers, expected_sha256)
                        hashers = {algo: _new_hasher(algo) for algo in {c[0] for c in checks}}
                        sinks = _Sinks(f, list(hashers.values()))
                        reporter = _Reporter(progress, total)
                        reporter.start(0)
                        if url is not None:
                            _save_state(paths, url, response)
                    sinks.put(chunk)
                    reporter.add(len(chunk))
                sinks.drain()
            finally:
                sinks.close()
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        reporter.finish()
        _verify(dest, size, total, expected_size, checks, hashers)
    except DownloadIntegrityError:
        _remove(paths.part, paths.sidecar)
        raise
    except BaseException:
        if url is None or not paths.sidecar.exists():
            _remove(paths.part, paths.sidecar)
        raise
    _finish(paths)
    return size


def _check_size(dest: pathlib.Path, expected_size: int | None, total: int | None) -> None:
    if expected_size is not None and total is not None and expected_size != total:
        raise DownloadIntegrityError(
            f"Size mismatch for {dest}: expected {expected_size} bytes (expected_size), the server announces {total}"
        )


def _finish(paths: _Paths) -> pathlib.Path:
    """Rename the verified, fsynced ``.part`` into place and drop the sidecar."""
    os.replace(paths.part, paths.dest)
    _fsync_dir(paths.dest.parent)
    _remove(paths.sidecar)
    return paths.dest


def _verify(
    dest: pathlib.Path,
    size: int,
    total: int | None,
    expected_size: int | None,
    checks: list[tuple[str, str, str]],
    hashers: dict[str, Any],
) -> None:
    for want, source in ((total, "the server's Content-Length"), (expected_size, "expected_size")):
        if want is not None and size != want:
            raise DownloadIntegrityError(
                f"Size mismatch for {dest}: expected {want} bytes ({source}), received {size}"
            )
    for algo, expected, source in checks:
        actual = hashers[algo].digest().hex()
        if actual != expected:
            raise DownloadIntegrityError(
                f"{_ALGO_NAMES[algo]} mismatch for {dest}: expected {expected} ({source}), got {actual}"
            )


def _already_complete(
    paths: _Paths,
    state: dict[str, Any],
    response: Any,
    expected_size: int | None,
    expected_sha256: str | None,
) -> bool:
    """A 416 to ``Range: bytes=<part size>-``: is the ``.part`` the whole, verified resource?"""
    headers = getattr(response, "headers", None) or {}
    _, _, total = headers.get("content-range", "").partition("/")
    size = state["size"]
    if not total.strip().isdigit() or int(total) != size or state.get("total") not in (None, size):
        return False
    if expected_size is not None and expected_size != size:
        return False
    checks = _checksums(_headers_from(state["checksums"]), expected_sha256)
    if not checks:
        return False  # nothing proves the bytes are the resource's: download again
    hashers = {algo: _new_hasher(algo) for algo in {c[0] for c in checks}}
    with open(paths.part, "rb") as f:
        _hash_existing(f, size, hashers.values())
    try:
        _verify(paths.dest, size, None, None, checks, hashers)
    except DownloadIntegrityError:
        return False
    return True


# -- sinks: the file and the hashes, each in its own thread -----------------------------------------


class _Sinks:
    """Hand each chunk to the file writer and every hasher, each in its own thread.

    The queues are bounded (QUEUE_DEPTH), so memory stays constant and a slow
    disk slows the reader down. An error in a sink is raised in the reader
    at its next ``put`` or ``drain``.
    """

    def __init__(self, file: Any, hashers: list[Any]) -> None:
        self.hashers = hashers
        self._write = file.write
        self._queues: list[queue.Queue[bytes | None]] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._start(lambda chunk: self._write(chunk), "write")
        for index in range(len(hashers)):
            self._start(lambda chunk, i=index: self.hashers[i].update(chunk), f"hash{index}")

    def _start(self, consume: Callable[[bytes], Any], name: str) -> None:
        q: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        errors = self._errors

        def run() -> None:
            while True:
                chunk = q.get()
                try:
                    if chunk is None:
                        return
                    if not errors:
                        consume(chunk)
                except BaseException as exc:  # noqa: BLE001 - handed to the reader thread
                    errors.append(exc)
                finally:
                    q.task_done()

        thread = threading.Thread(target=run, name=f"tinker-sync-{name}", daemon=True)
        thread.start()
        self._queues.append(q)
        self._threads.append(thread)

    def put(self, chunk: bytes) -> None:
        if self._errors:
            raise self._errors[0]
        for q in self._queues:
            q.put(chunk)

    def drain(self) -> None:
        """Wait until every queued chunk was consumed; raise a sink's error."""
        for q in self._queues:
            q.join()
        if self._errors:
            raise self._errors[0]

    def close(self) -> None:
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()


def _hash_existing(f: Any, size: int, hashers: Any) -> None:
    """Feed the first ``size`` bytes of ``f`` to ``hashers`` (resuming: hash what is there first)."""
    hashers = list(hashers)
    if not hashers:
        return
    f.seek(0)
    remaining = size
    while remaining > 0:
        data = f.read(min(HASH_READ_SIZE, remaining))
        if not data:
            break
        remaining -= len(data)
        for h in hashers:
            h.update(data)


class _Reporter:
    """Calls ``progress(downloaded, total)`` at most every PROGRESS_INTERVAL s or 1%, and at the end."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self._next_bytes = 0
        self._next_time = 0.0
        self._step = max(1, total // 100) if total else 1 << 62

    def start(self, done: int) -> None:
        self.done = done
        self._report()

    def add(self, n: int) -> None:
        if self.progress is None:
            return
        self.done += n
        if self.done >= self._next_bytes or time.monotonic() >= self._next_time:
            self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self._next_bytes = self.done + self._step
            self._next_time = time.monotonic() + PROGRESS_INTERVAL
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)


# -- checksums ------------------------------------------------------------------------------------


def _new_hasher(algo: str) -> Any:
    if algo == "crc32c":
        import google_crc32c  # only offered by _checksums when importable

        return google_crc32c.Checksum()
    return hashlib.new(algo)


def _have_crc32c() -> bool:
    try:
        import google_crc32c  # noqa: F401
    except ImportError:
        return False
    return True


def _b64_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value.strip().strip(":"), validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _checksums(headers: Any, expected_sha256: str | None = None) -> list[tuple[str, str, str]]:
    """(algorithm, expected hex digest, where it came from) for every checksum on offer."""
    found: list[tuple[str, str, str]] = []
    for item in _split(headers.get("x-goog-hash")):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name in ("md5", "crc32c"):
            digest = _b64_hex(value)
            if digest is not None:
                found.append((name, digest, f"x-goog-hash {name}"))
    for header in ("content-digest", "digest"):
        for item in _split(headers.get(header)):
            name, _, value = item.partition("=")
            algo = {"sha-256": "sha256", "md5": "md5"}.get(name.strip().lower())
            if algo is not None:
                digest = _b64_hex(value)
                if digest is not None:
                    found.append((algo, digest, f"{header.title()} {name.strip().lower()}"))
    etag = (headers.get("etag") or "").strip()
    if (
        not any(algo == "md5" for algo, _, _ in found)
        and _HEX32.match(etag.strip('"'))
        and not etag.startswith("W/")
    ):
        found.append(("md5", etag.strip('"').lower(), "ETag"))
    if expected_sha256 is not None:
        value = expected_sha256.strip().lower()
        if not _HEX64.match(value):
            raise ValueError(f"expected_sha256 must be 64 hex digits, got {expected_sha256!r}")
        found.append(("sha256", value, "expected_sha256"))
    if any(algo == "crc32c" for algo, _, _ in found) and not _have_crc32c():
        log.debug("Skipping the crc32c check: google-crc32c is not installed")
        found = [c for c in found if c[0] != "crc32c"]
    return found


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part.strip()]


_CHECKSUM_HEADERS = ("x-goog-hash", "content-digest", "digest", "etag")


def _headers_from(saved: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in saved.items()}


# -- the sidecar ----------------------------------------------------------------------------------


class _Paths:
    def __init__(self, dest: pathlib.Path) -> None:
        self.dest = dest
        self.part = pathlib.Path(f"{dest}{PART_SUFFIX}")
        self.sidecar = pathlib.Path(f"{dest}{SIDECAR_SUFFIX}")
        self.lock = pathlib.Path(f"{dest}{LOCK_SUFFIX}")


def _same_resource(state: dict[str, Any], url: str) -> bool:
    """Whether a sidecar is for ``url``'s resource.

    The query may differ (a signed URL is signed anew each time) when the
    resume is pinned by an ETag, which names one version of one resource; a
    Last-Modified date could match another resource's, so then the whole URL must.
    """
    saved = state.get("url")
    if not isinstance(saved, str):
        return False
    if saved == url:
        return True
    return saved.partition("?")[0] == url.partition("?")[0] and state["validator"].startswith('"')


def _save_state(paths: _Paths, url: str, response: Any) -> None:
    """Write the sidecar for a ``.part`` starting at byte 0 of ``response``'s resource.

    Atomic (temp file + os.replace). Without a validator there is nothing to
    pin a later resume to, so there is no sidecar (and the ``.part`` is
    removed on failure).
    """
    validator = response.validator
    if validator is None:
        _remove(paths.sidecar)
        return
    headers = response.headers
    state = {
        "url": url,
        "validator": validator,
        "total": response.total_size,
        "checksums": {name: headers[name] for name in _CHECKSUM_HEADERS if headers.get(name)},
    }
    tmp = pathlib.Path(f"{paths.sidecar}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, paths.sidecar)


def _load_state(paths: _Paths, url: str) -> dict[str, Any] | None:
    """The sidecar of a resumable ``.part`` for ``url`` (with its current ``size``), else None."""
    try:
        state = json.loads(paths.sidecar.read_text())
        size = paths.part.stat().st_size
    except (OSError, ValueError):
        return None
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("validator"), str)
        or not _same_resource(state, url)
    ):
        log.info("Not resuming %s: its sidecar is for another URL or incomplete", paths.part)
        return None
    total = state.get("total")
    if total is not None and (not isinstance(total, int) or size > total):
        return None
    if not isinstance(state.get("checksums"), dict):
        state["checksums"] = {}
    state["size"] = size
    return state if size > 0 else None


# -- the lock -------------------------------------------------------------------------------------


@contextlib.contextmanager
def target_lock(path: pathlib.Path) -> Iterator[None]:
    """Hold ``path`` (``dest.lock``) exclusively for the block.

    An ``fcntl.flock`` on the lock file: the kernel drops it when its holder
    exits, even after ``kill -9``, so a lock file left by a dead process is
    simply reclaimed. The file's text ("pid@hostname") names the holder in
    the error a second download gets after waiting ``LOCK_WAIT`` seconds.
    The file is removed on release; a waiter that then locks the removed
    file notices (its inode is no longer at ``path``) and tries again.
    """
    import fcntl  # POSIX only; imported here so the module imports anywhere

    deadline = time.monotonic() + LOCK_WAIT
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise DownloadLockedError(
                    f"{path} is held by another download ({holder}); waited {LOCK_WAIT:g} s"
                ) from None
            time.sleep(LOCK_POLL)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder had just removed: try the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}@{socket.gethostname()}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


# -- small helpers --------------------------------------------------------------------------------


def _check_disk_space(dest: pathlib.Path, needed: int) -> None:
    directory = dest.parent if str(dest.parent) else pathlib.Path(".")
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"Not enough disk space for {dest}: need {needed} bytes, {free} free "
            f"(short by {needed - free} bytes)",
        )


def _fsync_dir(directory: pathlib.Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(*paths: pathlib.Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _int_header(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _show(url: str) -> str:
    """A URL for messages: the query (a signed URL's signature) left out."""
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")
