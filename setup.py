"""Builds the optional Cython SSE decoder, ``tinker_sync._sse``.

From ``csrc/_sse.pyx`` with Cython (a build requirement), else from the
generated ``csrc/_sse.c`` an sdist carries. A failed compile (no C compiler,
no Python headers) falls back to a pure-Python install with a one-line
notice: the package then uses its pure twin, ``tinker_sync._sse_py``.
``TINKER_SYNC_NO_EXTENSIONS=1`` skips the build.

A pure build writes its reason to ``tinker_sync/_pure_build`` (package data):
the test suite reads it to report the Cython twin's tests as not applicable
to that install, rather than as errors; a build with the extension removes it.
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


class optional_build_ext(build_ext):
    """build_ext that turns a failed compile into BuildFailed."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated error types
            raise BuildFailed(exc) from exc

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise BuildFailed(exc) from exc


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


def pure(reason):
    """Install without the extension: the marker says why, and one line says so."""
    with open(MARKER, "w") as f:
        f.write(f"pure-Python install: {reason}\n")
    print(f"tinker_sync: {reason}; installing the pure-Python SSE decoder (same API, slower).", file=sys.stderr)
    setup()


def forget_pure_builds():
    """A build with the extension leaves no marker, here or in a reused build directory."""
    for path in [MARKER, *glob.glob(os.path.join(HERE, "build", "lib*", "tinker_sync", "_pure_build"))]:
        if os.path.exists(path):
            os.unlink(path)


if NO_EXTENSIONS:
    pure("TINKER_SYNC_NO_EXTENSIONS is set (or not CPython)")
else:
    try:
        ext_modules = extensions()
        forget_pure_builds()
        setup(ext_modules=ext_modules, cmdclass={"build_ext": optional_build_ext})
    except BuildFailed as exc:
        cause = exc.__cause__
        why = str(exc) if cause is None else type(cause).__name__  # a compiler's own output is pages long
        pure(f"the Cython SSE decoder did not build ({why}: no C compiler, or no Python headers?)")
