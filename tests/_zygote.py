"""``python -m tinker_sync ARGS`` as a real process without an interpreter start and imports each.

A zygote process (this file, run by ``sys.executable``) imports ``tinker_sync.cli`` once, then forks
one child per command: the child is a real process of its own (its own pid, environment, working
directory, stdin/stdout/stderr pipes, exit status or signal, interpreter shutdown) that runs what
``python -m tinker_sync`` runs, ``sys.exit(main())``. A CLI run then costs ~0.02 CPU-s instead of
~0.2 (the suite runs hundreds). ``run`` gives what ``subprocess.run(..., capture_output=True,
text=True)`` gives.

What a fresh interpreter reads before ``main`` runs cannot differ: a command whose environment sets
a ``PYTHON*`` or ``TINKER_SYNC_*`` variable the zygote was not started with (``TINKER_SYNC_NO_EXTENSIONS``
picks the decoder at import) gets a fresh interpreter instead, and so does every command where a
zygote cannot fork safely (a thread running in it, no ``os.fork``, a zygote that died).

One zygote per test process, started on first use; it exits when that process closes its end of
the control socket, at its exit, and is waited for then.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

_lock = threading.Lock()
_zygote: tuple[subprocess.Popen[bytes], socket.socket, dict[str, str]] | None = None
_broken = False


def _import_sensitive(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(("PYTHON", "TINKER_SYNC_"))}


def _base_env() -> dict[str, str]:
    """The zygote's environment: this process's, the checkout first on the path (as ``cli_env``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINKER_", "CLOUDFLARE_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def _start(base_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], socket.socket, dict[str, str]] | None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # a message is one packet
    try:
        proc = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=base_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    ready = ours.makefile("r").readline()
    if ready.strip() != "ready":  # it could not import, or found a thread running: never fork it
        ours.close()
        proc.wait()
        return None
    atexit.register(_stop, proc, ours)
    return proc, ours, _import_sensitive(base_env)


def _stop(proc: subprocess.Popen[bytes], control: socket.socket) -> None:
    """At this process's exit: the zygote goes (its end of the socket closes) and is waited for, so
    that no process is left behind and its CPU time (its children's too) counts as this process's."""
    control.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(
    args: list[str], env: dict[str, str], cwd: Path | str | None, timeout: float, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python -m tinker_sync ARGS`` with ``env`` in ``cwd``; stdout and stderr captured as text."""
    global _zygote, _broken
    with _lock:
        if _zygote is None and not _broken and hasattr(os, "fork"):
            _zygote = _start(_base_env())
            _broken = _zygote is None
        zygote = _zygote
        if zygote is None or _import_sensitive(env) != zygote[2] or zygote[0].poll() is not None:
            return _fresh(args, env, cwd, timeout, stdin)
        return _forked(zygote[1], args, env, cwd, timeout, stdin)


def _fresh(
    args: list[str], env: dict[str, str], cwd: Path | str | None, timeout: float, stdin: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinker_sync", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _forked(
    control: socket.socket,
    args: list[str],
    env: dict[str, str],
    cwd: Path | str | None,
    timeout: float,
    stdin: str,
) -> subprocess.CompletedProcess[str]:
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    request = {"args": args, "env": env, "cwd": str(cwd or os.getcwd())}
    try:
        socket.send_fds(control, [json.dumps(request).encode() + b"\n"], [in_r, out_w, err_w])
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    reply = control.makefile("r")
    pid = int(reply.readline())
    with open(in_w, "wb") as child_in:
        try:
            child_in.write(stdin.encode())
        except BrokenPipeError:
            pass
    out = _read_both(out_r, err_r, timeout)
    if out is None:  # as subprocess.run: the child is killed, then it raises
        os.kill(pid, signal.SIGKILL)
        reply.readline()  # its status
        raise subprocess.TimeoutExpired([sys.executable, "-m", "tinker_sync", *args], timeout)
    status = int(reply.readline())
    return subprocess.CompletedProcess(
        [sys.executable, "-m", "tinker_sync", *args], status, out[0].decode(), out[1].decode()
    )


def _read_both(out_r: int, err_r: int, timeout: float) -> tuple[bytes, bytes] | None:
    """Both pipes read to their end (None: not within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        open_fds = set(chunks)
        try:
            while open_fds:
                ready = sel.select(max(0.0, deadline - time.monotonic()))
                if not ready:
                    return None
                for key, _ in ready:
                    fd = int(key.fd)
                    data = os.read(fd, 1 << 16)
                    if data:
                        chunks[fd].append(data)
                    else:
                        sel.unregister(fd)
                        open_fds.discard(fd)
        finally:
            os.close(out_r)
            os.close(err_r)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


# -- the zygote ------------------------------------------------------------------------------------


def _child(request: dict[str, object], fds: list[int], control: socket.socket) -> None:
    """In the forked child: become ``python -m tinker_sync ARGS`` and end as that interpreter would."""
    control.close()
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])  # type: ignore[arg-type]
    cwd = str(request["cwd"])
    os.chdir(cwd)
    sys.path[0] = cwd  # as ``-m`` puts the working directory first
    args = list(request["args"])  # type: ignore[call-overload]
    sys.argv = [str(Path(__file__).parents[1] / "tinker_sync" / "__main__.py"), *args]
    from tinker_sync.cli import main

    sys.exit(main(args))  # what tinker_sync/__main__.py does; the interpreter's own shutdown follows


def _serve(control: socket.socket) -> None:
    import tinker_sync.cli  # noqa: F401 - what every child then has imported

    if threading.active_count() != 1:  # forking a threaded process: never
        return
    # What the zygote imported stays out of the children's garbage collections: the final one of
    # each child's interpreter shutdown walked all of it (and copied its pages), 25 of the 45 ms a
    # run cost. The objects a command makes are collected as in a fresh interpreter.
    gc.freeze()
    control.sendall(b"ready\n")
    while True:
        message, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
        if not message:
            return  # the test process closed its end
        pid = os.fork()
        if pid == 0:
            _child(json.loads(message), fds, control)
        for fd in fds:
            os.close(fd)
        control.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        control.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])))
