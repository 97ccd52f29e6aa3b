"""Chooses the SSE decoder: the Cython ``SSEDecoder`` when built, else the pure-Python twin.

``TINKER_SYNC_NO_EXTENSIONS`` (any non-empty value) or a non-CPython interpreter
forces the pure twin; ``IMPLEMENTATION`` says which one is in use.
"""

import os
import sys
from typing import TYPE_CHECKING

from ._sse_py import DEFAULT_MAX_SIZE, PySSEDecoder

__all__ = ["DEFAULT_MAX_SIZE", "IMPLEMENTATION", "PySSEDecoder", "SSEDecoder"]

if TYPE_CHECKING:
    from ._sse_py import PySSEDecoder as SSEDecoder
elif os.environ.get("TINKER_SYNC_NO_EXTENSIONS") or sys.implementation.name != "cpython":
    SSEDecoder = PySSEDecoder
else:
    try:
        from ._sse import SSEDecoder
    except ImportError:  # not built: a pure-Python install
        SSEDecoder = PySSEDecoder

IMPLEMENTATION = "python" if SSEDecoder is PySSEDecoder else "cython"
