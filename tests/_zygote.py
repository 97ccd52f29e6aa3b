"""``python -m tinker_sync ARGS`` as a real process without an interpreter start and imports each.

A zygote process (this file, run by ``sys.executable``) imports ``tinker_sync.cli`` once, then forks
one child per command: the child is a real process of its own (its own pid, environment, working
directory, stdin/stdout/stderr pipes, exit status or signal, interpreter shutdown) that runs what
``python -m tinker_sync`` runs, ``sys.exit(main())``. A CLI run then costs ~0.02 CPU-s instead of
~0.2 (the suite runs hundreds). ``run`` gives what ``subprocess.run(..., capture_output=True,
text=True)`` gives; ``run_python`` does the same for ``python -c CODE`` or ``python SCRIPT`` (the
documentation's examples).

What a fresh interpreter reads before ``main`` runs cannot differ: a command whose environment sets
a ``PYTHON*`` or ``TINKER_SYNC_*`` variable the zygote was not started with (``TINKER_SYNC_NO_EXTENSIONS``
picks the decoder at import) gets a fresh interpreter instead, and so does every command where a
zygote cannot fork safely (a thread running in it, no ``os.fork``, a zygote that died).

One zygote per test process, started on first use; it exits when that process closes its end of
the control socket, at its exit, and is waited for then.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import types
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
    return _run(["-m", "tinker_sync", *args], env, cwd, timeout, stdin)


def run_python(
    argv: list[str], env: dict[str, str], cwd: Path | str | None, timeout: float, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` (``-c CODE ...`` or ``SCRIPT ...``) with ``env`` in ``cwd``, as ``run``: the code
    of the documentation's examples, which import the package first thing."""
    if not argv or argv[0].startswith("-") and argv[0] != "-c":
        raise ValueError(f"python {argv}: only -c CODE or a script")
    return _run(list(argv), env, cwd, timeout, stdin)


def _run(
    argv: list[str], env: dict[str, str], cwd: Path | str | None, timeout: float, stdin: str
) -> subprocess.CompletedProcess[str]:
    global _zygote, _broken
    with _lock:
        if _zygote is None and not _broken and hasattr(os, "fork"):
            _zygote = _start(_base_env())
            _broken = _zygote is None
        zygote = _zygote
        if zygote is None or _import_sensitive(env) != zygote[2] or zygote[0].poll() is not None:
            return _fresh(argv, env, cwd, timeout, stdin)
        return _forked(zygote[1], argv, env, cwd, timeout, stdin)


def _fresh(
    argv: list[str], env: dict[str, str], cwd: Path | str | None, timeout: float, stdin: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _forked(
    control: socket.socket,
    argv: list[str],
    env: dict[str, str],
    cwd: Path | str | None,
    timeout: float,
    stdin: str,
) -> subprocess.CompletedProcess[str]:
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    request = {"argv": argv, "env": env, "cwd": str(cwd or os.getcwd())}
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
        raise subprocess.TimeoutExpired([sys.executable, *argv], timeout)
    status = int(reply.readline())
    return subprocess.CompletedProcess([sys.executable, *argv], status, out[0].decode(), out[1].decode())


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
    """In the forked child: become ``python ARGV`` and end as that interpreter would."""
    control.close()
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])  # type: ignore[arg-type]
    cwd = str(request["cwd"])
    os.chdir(cwd)
    argv = list(request["argv"])  # type: ignore[call-overload]
    if argv[:2] == ["-m", "tinker_sync"]:
        sys.path[0] = cwd  # as ``-m`` puts the working directory first
        sys.argv = [str(Path(__file__).parents[1] / "tinker_sync" / "__main__.py"), *argv[2:]]
        from tinker_sync.cli import main

        sys.exit(main(argv[2:]))  # what tinker_sync/__main__.py does; the interpreter's shutdown follows
    if argv[0] == "-c":  # as ``-c``: a __main__ of its own, the working directory ('') first
        origin = "<string>"
        sys.path[0], sys.argv = "", ["-c", *argv[2:]]
        main_module = types.ModuleType("__main__")
        sys.modules["__main__"] = main_module

        def program() -> None:
            exec(compile(argv[1], origin, "exec"), main_module.__dict__)

    else:  # a script: its directory first, run as __main__ (spawned workers can import it)
        origin = os.path.join(cwd, argv[0])
        sys.path[0], sys.argv = os.path.dirname(os.path.abspath(origin)), argv
        program = functools.partial(runpy.run_path, origin, run_name="__main__")
    try:
        program()
    except SystemExit:
        raise
    except BaseException as error:  # as the interpreter: the traceback from the program on, exit 1
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != origin:
            tb = tb.tb_next
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        sys.exit(1)
    sys.exit(0)


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
