"""Builds the optional Cython SSE decoder, ``tinker_sync._sse``.

A failed compile (no C compiler, no Python headers) falls back to a pure
Python install with a visible banner: the package then uses its pure twin,
``tinker_sync._sse_py``. ``TINKER_SYNC_NO_EXTENSIONS=1`` skips the build.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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
    from Cython.Build import cythonize

    return cythonize(
        [Extension("tinker_sync._sse", ["csrc/_sse.pyx"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )


if NO_EXTENSIONS:
    setup()
else:
    try:
        setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext})
    except BuildFailed as exc:
        print("*" * 75, file=sys.stderr)
        print(f"WARNING: the Cython SSE decoder could not be built ({exc}).", file=sys.stderr)
        print("tinker_sync is installed with its pure-Python decoder instead.", file=sys.stderr)
        print("*" * 75, file=sys.stderr)
        setup()
