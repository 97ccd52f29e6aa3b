"""TLS: the one ``ssl.SSLContext`` of a client, built from ``Client(verify=...)``, and what urllib3 is told of it.

Rules:
1. One context per transport (so per client), built on first use; a CA path
   that does not exist or does not load is a ``TinkerError`` naming it.
2. ``verify=False`` connects without verification and without urllib3's
   per-request warning (the client gave its one warning already).
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from urllib3.util.ssl_ import create_urllib3_context

from .._config import TLS, CALocations, Verify
from .._exceptions import TinkerError
from ._errors import one_line

__all__ = ["check_path", "ssl_context", "tls_pool_options"]


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
    ``ssl.SSLContext``: used as it is.

    Raises:
        TinkerError: a CA path that does not exist or does not load, or
            ``TLS(system=True)`` without the ``truststore`` package.
    """
    if isinstance(verify, ssl.SSLContext):
        return verify
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


def tls_pool_options(context: ssl.SSLContext) -> dict[str, Any]:
    """What urllib3 must be told of ``context`` (it sets the verify mode on it at each connect)."""
    options: dict[str, Any] = {"ssl_context": context, "cert_reqs": context.verify_mode}
    if not context.check_hostname:
        options["assert_hostname"] = False
    return options
