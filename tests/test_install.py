"""Installs: what the sdist carries, and an install from it on a machine without a C compiler.

Real builds and a real venv, kept cheap: no build isolation, no package index (the test venv has
setuptools, Cython and build), and the new venv borrows the test venv's dependencies through a
``.pth`` line instead of installing them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.install, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinker_sync"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTHONPATH", "TINKER_SYNC_NO_EXTENSIONS")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sdist per test run, built once even when xdist workers ask at the same time (two builds
    in one source tree would race on its egg-info and generated C)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this run's directory, above every worker's own
    out = shared / "sdist"
    with open(shared / "sdist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list(out.glob("*.tar.gz")):
            done = subprocess.run(
                [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), str(ROOT)],
                capture_output=True,
                text=True,
                timeout=300,
                env=_env(),
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = out.glob("*.tar.gz")
    return path


def test_the_sdist_holds_everything_a_build_needs(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    sources = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    needed = {
        "setup.py",
        "pyproject.toml",
        "MANIFEST.in",
        "README.md",
        "csrc/_sse.pyx",  # the source of the extension
        "csrc/_sse.c",  # and its generated C: a build without Cython still compiles it
        "tinker_sync/py.typed",
        "docs/ARCHITECTURE.md",
        "tests/conftest.py",
        "tests/_sockets.py",
        "tests/_downloads.py",
        *sources,
    }
    assert needed - names == set()
    assert [n for n in names if n.endswith((".so", ".pyc", "_pure_build"))] == []


def test_an_sdist_installs_without_a_c_compiler(sdist: Path, tmp_path: Path) -> None:
    # 1. Build a wheel from the sdist with a compiler that always fails (CC=false).
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(sdist),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(CC="false", PIP_NO_INDEX="1"),
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    notices = [
        line.strip()
        for line in (built.stdout + built.stderr).splitlines()
        if "pure-Python SSE decoder" in line
    ]
    assert len(notices) == 1, notices  # one line, not a banner
    assert notices[0].startswith("tinker_sync: the Cython SSE decoder did not build (")
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")  # a pure wheel, not a platform wheel missing its .so
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert [n for n in names if n.endswith(".so")] == []
        assert zf.read("tinker_sync/_pure_build").decode().startswith("pure-Python install: ")

    # 2. Install it into a fresh venv that sees the test venv's dependencies.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]

    # 3. It works, and says it is pure.
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import tinker_sync, tinker_sync.sse as s; print(s.IMPLEMENTATION, tinker_sync.__file__)",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    assert probe[0] == "python" and probe[1].startswith(str(venv))
    version = subprocess.run(
        [str(venv / "bin" / "tinker-sync"), "--version"],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    assert "SSE decoder: python, a pure-Python install" in version.stdout

    # 4. The suite there: the Cython twin's tests are not applicable (one line), not errors...
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in ("conftest.py", "test_sse.py", "test_sse_select.py"):
        shutil.copy(ROOT / "tests" / name, tests / name)
    # Less hypothesis's plugin (no test here uses it): its terminal summary imports all of hypothesis.
    pytest_args = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    pytest_args += ["-o", "addopts=", "tests"]
    # Less the one test that feeds 2 MB a byte at a time (2 CPU-s): it runs on this same pure twin in
    # the suite itself; here the point is what the pure install's conftest does with the Cython twin.
    pure = subprocess.run(
        [*pytest_args, "-k", "not test_byte_by_byte_is_linear"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    output = pure.stdout + pure.stderr
    assert pure.returncode == 0, output[-3000:]
    assert output.count("Cython twin not applicable to this install (pure-Python install: ") == 1
    last = output.strip().splitlines()[-1]
    assert " passed" in last and " deselected" in last and "error" not in last

    # ...except in CI, where the extension must exist: a missing one is an error there.
    ci = subprocess.run(
        [*pytest_args, "-k", "test_default_is_cython or (test_initial_state and cython)"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(CI="true"),
        cwd=tmp_path,
    )
    output = ci.stdout + ci.stderr
    assert ci.returncode != 0
    assert "not applicable" not in output
    assert "No module named 'tinker_sync._sse'" in output
