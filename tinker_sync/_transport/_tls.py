"""TLS: the one ``ssl.SSLContext`` of a client, built from ``Client(verify=...)``, and what urllib3 is told of it.

Rules:
1. No TLS work for plain HTTP: a client builds no context until an
   ``https://`` connection (or an https:// proxy) needs one.
2. One context per trust setting per process (``shared_context``): every
   client with the same ``verify`` and default CA locations shares it, so the
   CA files are loaded once, not once per client. A CA file or directory that
   changes on disk (its size or mtime) gets a new context. A CA path that does
   not exist or does not load is a ``TinkerError`` naming it.
3. ``verify=False`` connects without verification and without urllib3's
   per-request warning (the client gave its one warning already).
4. Every context is built inside the fork gate, and its sockets hold the gate
   in each OpenSSL call (``_fork_gate``): a forked child never finds one of
   OpenSSL's process-wide locks held by a thread of ours.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Hashable
from typing import Any

from urllib3.util.ssl_ import create_urllib3_context

from .._config import TLS, CALocations, Verify
from .._exceptions import TinkerError
from ._errors import one_line
from ._fork_gate import building_context, fork_safe

__all__ = ["check_path", "shared_context", "ssl_context", "tls_pool_options"]


def check_path(path: str, what: str) -> str:
    """``path``, or a TinkerError naming ``what`` when it does not exist."""
    if not os.path.exists(path):
        raise TinkerError(f"{what}: {path!r} does not exist")
    return path


def _load(context: ssl.SSLContext, path: str, what: str) -> None:
    """Trust the CAs in ``path``: a PEM file, or a directory of hashed certificates."""
    check_path(path, what)
    try:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TinkerError(f"{what}: cannot load CA certificates from {path!r}: {one_line(exc)}") from exc


def ssl_context(verify: Verify, ca: CALocations) -> ssl.SSLContext:
    """The one TLS context of a client, from ``Client(verify=...)``.

    ``True``: the default trust (``ca``: OpenSSL's default file and directory,
    or the environment's). A path: only the CAs there. ``TLS(extra_ca=...)``:
    the default trust and those CAs; ``TLS(system=True)``: the operating
    system's store (``truststore``). ``False``: no verification. An
    ``ssl.SSLContext``: used as it is. Its sockets hold the fork gate in
    every OpenSSL call (``_fork_gate.fork_safe``).

    Raises:
        TinkerError: a CA path that does not exist or does not load, or
            ``TLS(system=True)`` without the ``truststore`` package.
    """
    if isinstance(verify, ssl.SSLContext):
        return fork_safe(verify)
    with building_context():
        return fork_safe(_build(verify, ca))


def _build(verify: bool | str | os.PathLike[str] | TLS, ca: CALocations) -> ssl.SSLContext:
    if verify is False:
        context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True or isinstance(verify, TLS):
        tls = verify if isinstance(verify, TLS) else TLS()
        if tls.system:
            try:
                import truststore
            except ImportError:
                raise TinkerError(
                    "TLS(system=True) needs the truststore package: pip install 'tinker-sync[truststore]'"
                ) from None
            context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        else:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        locations = [(ca.cafile, ca.cafile_from), (ca.capath, ca.capath_from)]
        locations.append((ca.extra, "REQUESTS_CA_BUNDLE"))
        if tls.extra_ca is not None:
            locations.append((os.fspath(tls.extra_ca), "TLS(extra_ca=...)"))
        for path, source in locations:
            if not path or (source is None and (tls.system or not os.path.exists(path))):
                continue  # OpenSSL's compiled-in default: the OS store replaces it, or this system lacks it
            _load(context, path, source or "the default CA locations")
        return context
    path = os.fspath(verify)
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    _load(context, path, "verify")
    return context


# Contexts shared by every client of this process, by trust setting (see ``shared_context``); the
# oldest is dropped past _MAX_SHARED settings (a process rarely has more than two or three).
_MAX_SHARED = 16
_shared: dict[Hashable, ssl.SSLContext] = {}
_shared_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child builds contexts of its own, under a lock of its own: a parent's thread may
    have held the lock at the fork, or been mid-handshake on a shared context, holding OpenSSL's
    locks of that context and its certificate store, which the child would wait on for ever."""
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _stamp(path: str | os.PathLike[str] | None) -> tuple[str, int, int] | None:
    """What identifies a CA file or directory as loaded: its path, size and mtime."""
    if path is None:
        return None
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, st.st_size, st.st_mtime_ns)


def _setting(verify: bool | str | os.PathLike[str] | TLS, ca: CALocations) -> Hashable:
    """The trust setting ``verify`` and ``ca`` stand for, with the state of every CA path it loads."""
    if verify is False:
        return False
    if verify is True or isinstance(verify, TLS):
        tls = verify if isinstance(verify, TLS) else TLS()
        paths = (ca.cafile, ca.capath, ca.extra, tls.extra_ca)
        return (tls.system, ca, tuple(_stamp(path) for path in paths))
    return ("only", _stamp(verify))


def shared_context(verify: Verify, ca: CALocations) -> ssl.SSLContext:
    """The TLS context for ``verify`` and ``ca``, built once per process and trust setting.

    Thread-safe: the first caller builds it (loading the CA files), others
    wait for it and share it. An ``ssl.SSLContext`` is used as it is. Raises
    as ``ssl_context`` does (and nothing is kept then).
    """
    if isinstance(verify, ssl.SSLContext):
        return fork_safe(verify)
    key = _setting(verify, ca)
    with _shared_lock:
        context = _shared.get(key)
        if context is None:
            context = ssl_context(verify, ca)
            if len(_shared) >= _MAX_SHARED:
                del _shared[next(iter(_shared))]
            _shared[key] = context
        return context


def tls_pool_options(context: ssl.SSLContext) -> dict[str, Any]:
    """What urllib3 must be told of ``context`` (it sets the verify mode on it at each connect)."""
    options: dict[str, Any] = {"ssl_context": context, "cert_reqs": context.verify_mode}
    if not context.check_hostname:
        options["assert_hostname"] = False
    return options
