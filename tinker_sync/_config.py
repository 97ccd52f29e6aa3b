"""Configuration: environment variables, base URL, API-key check, timeouts, proxies, TLS trust.

Rules:
1. Everything a user can set by environment is read here, once, when a
   ``Client`` is built; nothing else in the package reads ``os.environ`` for
   client settings.
2. Proxies and CA locations come from the environment only under
   ``trust_env`` (the default, as in requests, httpx, curl and
   huggingface_hub); ``Client(trust_env=False)`` reads none of them.
3. Proxy selection is decided here (which proxy, if any, for a scheme, host
   and port: ``ProxyRules.select``, with the usual ``NO_PROXY`` rules);
   ``_transport`` only connects through what it is given.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import time
from dataclasses import dataclass

from ._exceptions import mask_credentials

__all__ = [
    "ArchiveLimits",
    "CredentialSource",
    "DEFAULT_BASE_URL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_READ_TIMEOUT",
    "TLS",
    "CALocations",
    "ProxyRules",
    "Timeout",
    "Verify",
    "bypasses_proxy",
    "ca_locations",
    "check_api_key",
    "cloudflare_headers",
    "dump_headers_default",
    "max_retries_from_env",
    "project_id_from_env",
    "proxy_rules",
    "resolve_api_key",
    "resolve_credentials",
    "resolve_base_url",
    "tags_from_env",
]

DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 10
# The most bytes a non-streamed call (a typed or JSON answer) reads into memory. The largest real
# page (a list of 1,000 checkpoints with metadata) is well under 1 MiB: 64 MiB leaves room for any
# real answer and stops a hostile or broken server (an endless chunked body) long before memory runs
# out. Bodies meant to be large are streamed (``stream``, ``download``) and never meet this bound.
DEFAULT_MAX_RESPONSE_SIZE = 64 << 20
API_KEY_PREFIXES = ("tml-", "eyJ")


@dataclass(frozen=True)
class Timeout:
    """Timeouts in seconds.

    Args:
        connect: to open the TCP (and TLS) connection.
        read: the longest wait for the next bytes; applied between chunks, so
            a stream that keeps sending is never cut by it.
        total: an overall deadline for the whole call, body included (for a
            stream: until its body ends), or None.
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT
    read: float | None = DEFAULT_READ_TIMEOUT
    total: float | None = None

    def __post_init__(self) -> None:
        # At once, naming the field: not a ValueError from inside urllib3 at the first send.
        for name in ("connect", "read", "total"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(
                    f"Timeout {name} must be a positive number of seconds or None, not {value!r}"
                )

    def within(self, deadline: float | None) -> Timeout:
        """This timeout with connect and read each capped to the time left before ``deadline``
        (``time.monotonic()``; at least a millisecond), or as it is without one.

        The one deadline rule for every layer that waits (the transport, futures, ranged
        fetchers): no single wait runs past the call's deadline.
        """
        if deadline is None:
            return self
        left = max(deadline - time.monotonic(), 0.001)
        connect = left if self.connect is None else min(self.connect, left)
        read = left if self.read is None else min(self.read, left)
        return Timeout(connect=connect, read=read, total=self.total)

    @classmethod
    def coerce(cls, value: float | Timeout | None) -> Timeout:
        """A Timeout from a float (read timeout; connect at most 5 s, as in the SDK), a Timeout or None (none)."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(connect=None, read=None)
        value = float(value)
        return cls(connect=min(DEFAULT_CONNECT_TIMEOUT, value), read=value)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what extracting one checkpoint archive may create (``Client(archive_limits=...)``).

    A checkpoint holds a handful of files; these bounds stop a hostile or
    broken archive early, in seconds and bounded memory, before it fills a
    disk or an inode table.

    Args:
        max_members: most members (files and directories). 10,000 leaves room
            for sharded, per-tensor layouts; a million-member archive is
            refused after 10,000, within a second or two.
        max_total_size: most bytes of file data; None means the checkpoint's
            ``size_bytes`` when the API lists it (or, for a plain tar, the
            archive's own size).
        max_name_length: the longest member name, in encoded bytes.
    """

    max_members: int = 10_000
    max_total_size: int | None = None
    max_name_length: int = 4096


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


@dataclass(frozen=True)
class CredentialSource:
    """Where a client's credential comes from, decided once when it is built.

    ``key``: a static key (the argument, ``TINKER_API_KEY`` or the credentials
    file's default), or None; ``command``: ``TINKER_CREDENTIAL_CMD``, run for each
    token exchange; ``origin`` names the source in messages (never the key).
    """

    key: str | None
    command: str | None
    origin: str

    def __repr__(self) -> str:
        return f"CredentialSource(origin={self.origin!r})"


def check_api_key(key: str, origin: str = "the API key") -> str:
    """``key`` if it can be a Tinker key (``tml-...`` or a JWT, ``eyJ...``) sent in a header.

    Raises:
        TinkerError: it cannot; the message shows at most its first 4 characters.
    """
    from ._exceptions import TinkerError

    if not key.startswith(API_KEY_PREFIXES):
        raise TinkerError(
            f"Invalid API key from {origin}: Tinker keys start with 'tml-' (or 'eyJ' for a JWT); "
            f"got {key[:4]!r}..."
        )
    if not key.isprintable() or any(c.isspace() for c in key):
        # e.g. a trailing newline pasted into the variable: no header may carry it
        raise TinkerError(f"Invalid API key from {origin}: it contains whitespace or control characters")
    if not key.isascii():
        # a typographic quote or dash pasted with it: no HTTP header can carry it
        raise TinkerError(f"Invalid API key from {origin}: it contains non-ASCII characters")
    return key


def resolve_credentials(api_key: str | None, credentials_path: str | None = None) -> CredentialSource:
    """The credential source, in the official SDK's order: the argument, ``TINKER_API_KEY``,
    ``TINKER_CREDENTIAL_CMD``, then the default key of ``~/.tinker/credentials.json``.

    Raises:
        TinkerError: none of them, a key of the wrong format, or a credentials file
            others can read.
    """
    from pathlib import Path

    from ._credentials import default_credentials_path, read_default_key
    from ._exceptions import TinkerError

    command = _env("TINKER_CREDENTIAL_CMD")
    if api_key:
        return CredentialSource(check_api_key(api_key, "the api_key argument"), command, "argument")
    key = _env("TINKER_API_KEY")
    if key:
        return CredentialSource(check_api_key(key, "TINKER_API_KEY"), command, "TINKER_API_KEY")
    if command:
        return CredentialSource(None, command, "TINKER_CREDENTIAL_CMD")
    path = Path(credentials_path) if credentials_path else default_credentials_path()
    stored = read_default_key(path)
    if stored:
        return CredentialSource(check_api_key(stored, str(path)), None, str(path))
    raise TinkerError(
        "No API key: pass Client(api_key=...), set the TINKER_API_KEY environment variable "
        "(or TINKER_CREDENTIAL_CMD), or store one with `tinker-sync auth login`."
    )


def resolve_api_key(api_key: str | None) -> str:
    """A static API key from the argument or ``TINKER_API_KEY``, checked for its format.

    Raises:
        TinkerError: no key, or one that does not start with ``tml-`` (or ``eyJ``, a JWT).
    """
    from ._exceptions import TinkerError

    key = api_key or _env("TINKER_API_KEY")
    if not key:
        raise TinkerError(
            "No API key: pass Client(api_key=...) or set the TINKER_API_KEY environment variable."
        )
    return check_api_key(key)


def project_id_from_env() -> str | None:
    """``TINKER_PROJECT_ID``: the project a new session is attached to, or None."""
    return _env("TINKER_PROJECT_ID")


def tags_from_env() -> list[str]:
    """``TINKER_TAGS``: comma-separated tags of a new session (empty ones dropped)."""
    return [tag for tag in (_env("TINKER_TAGS") or "").split(",") if tag]


def resolve_base_url(base_url: str | None) -> str:
    """The base URL from the argument, ``TINKER_BASE_URL`` or the default, without a trailing '/'."""
    url = base_url or _env("TINKER_BASE_URL") or DEFAULT_BASE_URL
    return url.rstrip("/")


def resolve_project_id(project_id: str | None) -> str | None:
    """A training session's project: the argument, else ``TINKER_PROJECT_ID`` (empty: none), as the SDK."""
    return project_id if project_id is not None else _env("TINKER_PROJECT_ID")


def dump_headers_default() -> bool:
    """``TINKER_SYNC_DUMP_HEADERS``: anything but empty, ``0`` or ``false`` turns header dumps on."""
    return os.environ.get("TINKER_SYNC_DUMP_HEADERS", "").strip().lower() not in ("", "0", "false")


def cloudflare_headers() -> dict[str, str]:
    """Optional Cloudflare Access headers from ``CLOUDFLARE_ACCESS_CLIENT_ID`` / ``_SECRET``."""
    headers = {}
    client_id = _env("CLOUDFLARE_ACCESS_CLIENT_ID")
    secret = _env("CLOUDFLARE_ACCESS_CLIENT_SECRET")
    if client_id:
        headers["CF-Access-Client-Id"] = client_id
    if secret:
        headers["CF-Access-Client-Secret"] = secret
    return headers


def max_retries_from_env() -> int | None:
    """``TINKER_MAX_RETRIES`` as a non-negative int, or None when unset or empty.

    Raises:
        TinkerError: a value that is not a non-negative integer.
    """
    from ._exceptions import TinkerError

    value = _env("TINKER_MAX_RETRIES")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise TinkerError(f"TINKER_MAX_RETRIES must be a non-negative integer, got {value!r}")
    return int(value)


# -- TLS --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLS:
    """TLS trust beyond ``verify=True | False | path | ssl.SSLContext``.

    ``Client(verify=TLS(extra_ca="corp-ca.pem"))`` trusts the default CAs
    (the system's, and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` /
    ``REQUESTS_CA_BUNDLE`` under ``trust_env``) *and* the CAs in
    ``extra_ca``: for a private CA (a TLS-inspecting corporate proxy, an
    in-house S3) without losing the public ones. ``verify="ca.pem"``, by
    contrast, trusts *only* ``ca.pem``, as in requests.

    Args:
        extra_ca: a PEM file or a directory of hashed certificates (``c_rehash``), trusted
            in addition to the default trust.
        system: trust the operating system's store (Keychain, Windows, or the system
            OpenSSL files on Linux) through the ``truststore`` package
            (``pip install 'tinker-sync[truststore]'``) instead of OpenSSL's default files.
    """

    extra_ca: str | os.PathLike[str] | None = None
    system: bool = False


# What ``Client(verify=...)`` accepts.
Verify = bool | str | os.PathLike[str] | ssl.SSLContext | TLS


@dataclass(frozen=True)
class CALocations:
    """Where the default trust comes from: a CA file and a CA directory, each OpenSSL's
    compiled-in default or what an environment variable puts in its place, and
    ``REQUESTS_CA_BUNDLE``; ``*_from`` names the variable (None for OpenSSL's default, which
    a system may lack: then it is skipped, while a path the environment names must exist)."""

    cafile: str | None
    capath: str | None
    extra: str | None = None
    cafile_from: str | None = None
    capath_from: str | None = None


def ca_locations(trust_env: bool) -> CALocations:
    """The default trust's CA file and directory.

    Under ``trust_env``, OpenSSL's own rule: ``SSL_CERT_FILE`` takes the place
    of its default file and ``SSL_CERT_DIR`` of its default directory; and
    ``REQUESTS_CA_BUNDLE`` (a file or a directory, as requests reads it) is
    trusted as well, so that every CA the environment names is trusted.
    Without ``trust_env`` only OpenSSL's compiled-in defaults count.
    """
    paths = ssl.get_default_verify_paths()
    cafile, capath = paths.openssl_cafile or None, paths.openssl_capath or None
    cafile_from = capath_from = extra = None
    if trust_env:
        if env_file := _env("SSL_CERT_FILE"):
            cafile, cafile_from = env_file, "SSL_CERT_FILE"
        if env_dir := _env("SSL_CERT_DIR"):
            capath, capath_from = env_dir, "SSL_CERT_DIR"
        extra = _env("REQUESTS_CA_BUNDLE")
    return CALocations(cafile, capath, extra, cafile_from, capath_from)


# -- proxies ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyRules:
    """The proxy (a URL string, credentials included) for each scheme, and what bypasses it.

    Attributes:
        http, https: the proxy for that scheme's URLs, or None.
        no_proxy: the ``NO_PROXY`` value (see ``bypasses_proxy``).
        sources: where each proxy came from (``"HTTPS_PROXY"``, ``"proxy="``), for messages.
    """

    http: str | None = None
    https: str | None = None
    no_proxy: str = ""
    sources: tuple[tuple[str, str], ...] = ()

    def select(self, scheme: str, host: str, port: int) -> str | None:
        """The proxy for a request to ``scheme://host:port``, or None to connect directly."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or bypasses_proxy(host, port, self.no_proxy, scheme):
            return None
        return proxy

    def source(self, scheme: str) -> str:
        """Where the proxy for ``scheme`` came from: an environment variable or ``proxy=``."""
        return dict(self.sources).get(scheme, "proxy=")

    def __repr__(self) -> str:
        shown = {
            k: None if v is None else mask_credentials(v)
            for k, v in (("http", self.http), ("https", self.https))
        }
        return (
            f"ProxyRules(http={shown['http']!r}, https={shown['https']!r}, no_proxy={self.no_proxy!r}, "
            f"sources={self.sources!r})"
        )


def _proxy_env(name: str) -> tuple[str | None, str]:
    """``name`` (e.g. ``https_proxy``) from the environment, lower case first; (value, variable).

    A set but empty lower-case variable hides the upper-case one. ``HTTP_PROXY``
    is ignored in a CGI request (``REQUEST_METHOD`` set): there it may come
    from a client's ``Proxy:`` header ("httpoxy"), as curl and Python ignore it.
    """
    if name in os.environ:
        return os.environ[name].strip() or None, name
    upper = name.upper()
    if upper == "HTTP_PROXY" and "REQUEST_METHOD" in os.environ:
        return None, upper
    return (os.environ.get(upper) or "").strip() or None, upper


def _with_scheme(url: str) -> str:
    """``host:3128`` -> ``http://host:3128`` (curl and requests read a bare host:port so)."""
    return url if "://" in url else f"http://{url}"


def proxy_rules(proxy: str | None, trust_env: bool) -> ProxyRules:
    """The proxies a client uses: ``proxy`` for every request when given, else (under
    ``trust_env``) ``HTTP_PROXY`` / ``HTTPS_PROXY``, with ``ALL_PROXY`` for a scheme
    without its own; ``NO_PROXY`` applies under ``trust_env`` in both cases."""
    no_proxy = ""
    if trust_env:
        no_proxy = _proxy_env("no_proxy")[0] or ""
    if proxy:
        url = _with_scheme(proxy.strip())
        return ProxyRules(url, url, no_proxy, (("http", "proxy="), ("https", "proxy=")))
    if not trust_env:
        return ProxyRules()
    all_proxy, all_name = _proxy_env("all_proxy")
    found: dict[str, str] = {}
    sources = []
    for scheme in ("http", "https"):
        value, name = _proxy_env(f"{scheme}_proxy")
        if value is None and all_proxy is not None:
            value, name = all_proxy, all_name
        if value is not None:
            found[scheme] = _with_scheme(value)
            sources.append((scheme, name))
    return ProxyRules(found.get("http"), found.get("https"), no_proxy, tuple(sources))


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def bypasses_proxy(host: str, port: int, no_proxy: str, scheme: str | None = None) -> bool:
    """Whether ``NO_PROXY`` sends a request to ``host:port`` around the proxy.

    The rules curl, requests, httpx and Go share: entries are separated by
    commas (or spaces) and compared case-insensitively; ``*`` alone matches
    every host; a domain matches itself and its subdomains (``example.com``,
    ``.example.com`` and ``*.example.com`` all match ``example.com`` and
    ``a.example.com``, never ``badexample.com``); an entry with ``:PORT``
    matches that port only (``[::1]:8080`` for IPv6); an IP address matches
    that address and a CIDR block (``10.0.0.0/8``, ``fd00::/8``) the addresses
    in it. Names are not resolved: an IP entry never matches a host name.
    An entry may start with a scheme, as httpx allows (``http://example.com``):
    it then matches URLs of that ``scheme`` only.
    """
    host = host.strip("[]").rstrip(".").lower()
    host_ip = _ip(host.partition("%")[0])
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_scheme, sep, rest = entry.partition("://")
        if sep:
            if scheme is not None and entry_scheme != scheme.lower():
                continue
            entry = rest.rstrip("/")
        entry_port: int | None = None
        if entry.startswith("["):  # [v6] or [v6]:port
            address, _, rest = entry[1:].partition("]")
            entry = address
            if rest.startswith(":") and rest[1:].isdigit():
                entry_port = int(rest[1:])
        elif entry.count(":") == 1:  # host:port or v4:port (a bare v6 address has several colons)
            name, _, number = entry.partition(":")
            if not number.isdigit():
                continue
            entry, entry_port = name, int(number)
        if entry_port is not None and entry_port != port:
            continue
        if host_ip is not None:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if host_ip.version == network.version and host_ip in network:
                return True
            continue
        domain = entry.removeprefix("*").removeprefix(".").rstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False
