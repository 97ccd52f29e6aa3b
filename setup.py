"""Builds the optional Cython SSE decoder, ``tinker_sync._sse``.

From ``csrc/_sse.pyx`` with Cython (a build requirement), else from the
generated ``csrc/_sse.c`` an sdist carries. A failed compile (no C compiler,
no Python headers) falls back to a pure-Python install with a one-line
notice: the package then uses its pure twin, ``tinker_sync._sse_py``.
``TINKER_SYNC_NO_EXTENSIONS=1`` skips the build.

A pure build writes its reason to ``tinker_sync/_pure_build`` (package data;
in the source tree too, for an editable install): the test suite reads it to
report the Cython twin's tests as not applicable to that install, rather than
as errors. Every build starts by removing it.
"""

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PYX = os.path.join("csrc", "_sse.pyx")
C_SOURCE = os.path.join("csrc", "_sse.c")
MARKER = os.path.join(HERE, "tinker_sync", "_pure_build")
NO_EXTENSIONS = bool(os.environ.get("TINKER_SYNC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"


class BuildFailed(Exception):
    pass


def notice(reason):
    """The one line a pure build prints (``pip install -v`` shows it; ``tinker-sync --version`` says it too)."""
    print(
        f"tinker_sync: {reason}; installing the pure-Python SSE decoder (same API, slower).", file=sys.stderr
    )


def write_marker(directory, reason):
    path = os.path.join(directory, "tinker_sync", "_pure_build")
    if os.path.isdir(os.path.dirname(path)):
        with open(path, "w") as f:
            f.write(f"pure-Python install: {reason}\n")


class optional_build_ext(build_ext):
    """build_ext that turns a failed compile into a pure-Python install, in the same setup() run.

    (A second setup() after a failure, as some projects do, breaks editable installs: the first run
    left its egg-info behind.) The extension is dropped, so nothing expects its file; the marker goes
    to the build directory (a wheel) and to the source tree (an editable install).
    """

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated error types
            self._fall_back(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise BuildFailed(exc) from exc

    def _fall_back(self, exc):
        while isinstance(exc, BuildFailed) and isinstance(exc.__cause__, Exception):
            exc = exc.__cause__
        reason = f"the Cython SSE decoder did not build ({type(exc).__name__}: no C compiler, or no Python headers?)"
        notice(reason)
        self.extensions = []
        self.distribution.ext_modules = []
        for directory in {self.build_lib, HERE}:
            write_marker(directory, reason)
        if "bdist_wheel" in self.distribution.have_run or "bdist_wheel" in self.distribution.command_obj:
            # A wheel being built: it is now a pure one (py3-none-any), not a platform wheel without its .so.
            self.distribution.get_command_obj("bdist_wheel").root_is_pure = True

    def get_outputs(self):
        return [] if not self.extensions else super().get_outputs()


def extensions():
    """The extension from the .pyx (Cython), else from the generated C of an sdist."""
    options = {"extra_compile_args": ["-O3"]}
    try:
        from Cython.Build import cythonize
    except ImportError:
        if not os.path.exists(os.path.join(HERE, C_SOURCE)):
            raise BuildFailed("neither Cython nor the generated csrc/_sse.c is available") from None
        return [Extension("tinker_sync._sse", [C_SOURCE], **options)]
    return cythonize(
        [Extension("tinker_sync._sse", [PYX], **options)],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )


def forget_pure_builds():
    """A build starts with no marker, here or in a reused build directory: only a pure build writes one."""
    for path in [MARKER, *glob.glob(os.path.join(HERE, "build", "lib*", "tinker_sync", "_pure_build"))]:
        if os.path.exists(path):
            os.unlink(path)


forget_pure_builds()
if NO_EXTENSIONS:
    reason = "TINKER_SYNC_NO_EXTENSIONS is set (or not CPython)"
else:
    try:
        ext_modules = extensions()
        reason = None
    except BuildFailed as exc:
        reason = f"the Cython SSE decoder cannot be built: {exc}"
if reason is None:
    setup(ext_modules=ext_modules, cmdclass={"build_ext": optional_build_ext})
else:
    notice(reason)
    write_marker(HERE, reason)
    setup()
