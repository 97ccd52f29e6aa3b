"""A real squid for tests, from Debian's STOCK configuration: ``Squid`` starts one, ``squid_or_skip``
finds the binary (under ``CI`` a missing squid fails the test, it never skips it).

The stock ``/etc/squid/squid.conf`` is copied with only its paths changed: the port (``http_port
127.0.0.1:PORT``: a free one, so that test workers run side by side), the pid file, the logs and the
core dump directory (in a directory of the test's own). The access rules stay the stock ones:
``http_access allow localhost``, ``CONNECT`` to ``SSL_ports`` (443) only, ``Safe_ports``. So a
tunnel to the mock server's ephemeral port is refused, as a stock squid refuses it in production,
and a tunnel that must succeed goes to a server on port 443 of a loopback address of its own
(``port_443_address``).

The access log (``Squid.log``) is how a test sees what squid did: one line per transaction,
``... TCP_MISS/200 ... GET http://127.0.0.1:PORT/path ...`` (absolute form) or
``... TCP_TUNNEL/200 ... CONNECT 127.0.0.9:443 ...``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

STOCK_CONFIG = Path("/etc/squid/squid.conf")


def squid_or_skip() -> str:
    """The squid binary; without one, skip (locally) or fail (under ``CI``: no suite is skipped there)."""
    found = shutil.which("squid") or shutil.which("squid", path="/usr/sbin:/usr/local/sbin")
    if found is not None and STOCK_CONFIG.is_file():
        return found
    reason = f"squid (with its stock {STOCK_CONFIG}) is not installed: apt-get install -y squid"
    if os.environ.get("CI"):
        pytest.fail(reason + " (.ci/run installs it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stock_config(port: int, home: Path) -> str:
    """The stock configuration with only the port and the paths moved to ``home``; the rules unchanged."""
    lines = []
    for line in STOCK_CONFIG.read_text().splitlines():
        if line.strip() == "http_port 3128":
            line = f"http_port 127.0.0.1:{port}"
        elif line.startswith("coredump_dir "):
            line = f"coredump_dir {home}"
        lines.append(line)
    assert f"http_port 127.0.0.1:{port}" in lines, "the stock configuration has no 'http_port 3128' line"
    lines += [
        f"pid_filename {home}/squid.pid",
        f"access_log stdio:{home}/access.log",
        f"cache_log {home}/cache.log",
        f"netdb_filename stdio:{home}/netdb.state",
    ]
    return "\n".join(lines) + "\n"


class Squid:
    """A squid process from the stock configuration, on 127.0.0.1; a context manager.

    ``url``: ``http://127.0.0.1:PORT``. ``log()``: the access log's lines so far;
    ``wait_for_log(n)``: until it has ``n`` lines (squid writes a line once a transaction ends,
    which may be just after the client has its answer).
    """

    def __init__(self) -> None:
        self.binary = squid_or_skip()
        # Started as root, squid runs as the ``proxy`` user, which must reach its directory and write
        # its logs there: one right under the temporary directory (pytest's are private), removed on stop.
        self.home = Path(tempfile.mkdtemp(prefix="tinker-sync-squid-"))
        self.home.chmod(0o777)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Squid:
        for _ in range(5):  # a free port may be taken by another worker before squid binds it
            if self._start():
                return self
        output = self._output()
        self.stop()
        raise RuntimeError(f"squid did not start: {output}")

    def _output(self) -> str:
        parts = [
            p.read_text(errors="replace")[-2000:]
            for p in (self.home / "out", self.home / "cache.log")
            if p.exists()
        ]
        return "\n".join(parts)

    def _start(self) -> bool:
        self.port = _free_port()
        config = self.home / "squid.conf"
        config.write_text(stock_config(self.port, self.home))
        for stale in ("squid.pid", "cache.log", "access.log"):
            (self.home / stale).unlink(missing_ok=True)
        with open(self.home / "out", "wb") as out:
            # A session of its own: the pinger helper is killed with it (os.killpg in stop).
            self.process = subprocess.Popen(
                [self.binary, "-N", "-f", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    if "Accepting HTTP Socket connections" in self._output():
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"squid did not start listening within 60 s: {self._output()}")

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill squid and its helpers (its own process group), at once: nothing to flush."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            self.process.wait(30)
        shutil.rmtree(self.home, ignore_errors=True)

    def log(self) -> list[str]:
        """The access log's lines of requests (not of the start-up probe's empty connection)."""
        path = self.home / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line for line in lines if "NONE_NONE/000" not in line]

    def wait_for_log(self, count: int, timeout: float = 30) -> list[str]:
        """The access log once it holds at least ``count`` lines (or as it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(lines := self.log()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return lines

    @staticmethod
    def entries(lines: list[str]) -> list[tuple[str, str, str]]:
        """(result/status, method, URL) of each access log line: ``("TCP_MISS/200", "GET", "http://...")``."""
        fields = [line.split() for line in lines]
        # "NONE_NONE/000 ... -": a connection that sent no request (the start-up probe's).
        return [(f[3], f[5], f[6]) for f in fields if len(f) > 6 and f[5] != "-"]


def port_443_address() -> str:
    """A loopback address whose port 443 is free (127.x.y.z picked at random, so that test workers
    side by side never meet): where a server must listen for squid's stock rules to let a
    ``CONNECT`` through. Binding port 443 needs root (or CAP_NET_BIND_SERVICE): without it, skip
    (locally) or fail (under ``CI``)."""
    for _ in range(20):
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, 443))
            except PermissionError:
                reason = "binding port 443 (squid's stock rules tunnel to 443 only) needs root"
                if os.environ.get("CI"):
                    pytest.fail(reason)
                pytest.skip(reason)
            except OSError:
                continue
            return address
    raise RuntimeError("no loopback address with a free port 443")
