"""Which SSE decoder ``tinker_sync.sse`` picks.

Checked in fresh subprocesses, with and without ``TINKER_SYNC_NO_EXTENSIONS``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import tinker_sync.sse as s, tinker_sync._sse_py as p;"
    "print(s.IMPLEMENTATION, s.SSEDecoder.__module__, s.PySSEDecoder is p.PySSEDecoder,"
    " s.DEFAULT_MAX_SIZE == p.DEFAULT_MAX_SIZE, sorted(s.__all__) == s.__all__)"
)


def probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TINKER_SYNC_NO_EXTENSIONS"}
    if env_value is not None:
        env["TINKER_SYNC_NO_EXTENSIONS"] = env_value
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_default_is_cython(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--no-extensions"):
        assert probe(None).split()[0] in ("cython", "python")
        return
    # the built extension must be what an import gets: a missing build fails here, never skips
    assert probe(None) == "cython tinker_sync._sse True True True"


@pytest.mark.parametrize("value", ["1", "yes", "0"])
def test_env_var_forces_pure(value: str) -> None:
    # any non-empty value, even "0"
    assert probe(value) == "python tinker_sync._sse_py True True True"


def test_empty_env_var_is_unset() -> None:
    assert probe("") == probe(None)


def test_public_names() -> None:
    import tinker_sync.sse as sse

    assert sse.__all__ == ["DEFAULT_MAX_SIZE", "IMPLEMENTATION", "PySSEDecoder", "SSEDecoder"]
    assert sse.DEFAULT_MAX_SIZE == 16 * 2**20
    assert sse.IMPLEMENTATION in ("cython", "python")
