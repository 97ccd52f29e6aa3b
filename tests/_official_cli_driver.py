"""Runs several official ``tinker`` CLI commands (0.38.0, unmodified but for one wait) in one process of its venv.

Never imported by the suite: ``tests/_official.py``'s ``run_cli_batch`` runs it with the official
venv's interpreter. Each command runs as the ``tinker`` script runs it (``tinker.cli.__main__.main``,
``sys.argv``, its exit code from ``SystemExit``) in its own environment, directory and stdin, with
its stdout and stderr captured: one import of the SDK (0.5 CPU-s) serves them all. What the SDK
keeps for the life of a process is dropped between commands, as a new process would start without
it: its REST holders, one per (base URL, API key) as given to ``RestClient()`` (None and None when
both come from the environment, so the next command would talk to the first one's server). stdin holds a
JSON list of ``{"args", "env", "cwd", "stdin"}``; stdout gets one JSON line, a list of
``{"returncode", "stdout", "stderr"}`` in the same order.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
import warnings
from typing import Any

from tinker.cli.__main__ import main
from tinker.lib.internal_client_holder import sessionless_holder_cache
from tinker.lib.public_interfaces import rest_client as _rest_client

warnings.simplefilter("ignore")  # as in the CLI's own process: deprecations are the SDK's business

# The SDK sleeps 5 s between polls of a pending trace export (the mock answers pending once first,
# as the service does): 0.05 s here. What is checked is what it asks, not how long it waits.
if not hasattr(_rest_client, "_TRACE_EXPORT_POLL_INTERVAL_SECONDS"):
    raise AttributeError("tinker moved _TRACE_EXPORT_POLL_INTERVAL_SECONDS: this driver needs a look")
_rest_client._TRACE_EXPORT_POLL_INTERVAL_SECONDS = 0.05


def run(job: dict[str, Any]) -> dict[str, Any]:
    """One command: its exit code, stdout and stderr."""
    sessionless_holder_cache._holders.clear()  # an AttributeError if it moved: this driver needs a look
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    sys.argv = ["tinker", *job["args"]]
    sys.stdin = io.StringIO(job["stdin"])
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:  # a crash is an exit 1 with its traceback, as the process would show
            traceback.print_exc()
            code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit 1
        err.write(f"{code}\n")
        code = 1
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    jobs = json.load(sys.stdin)
    real_stdout = sys.stdout
    results = [run(job) for job in jobs]
    real_stdout.write(json.dumps(results) + "\n")
    real_stdout.flush()
