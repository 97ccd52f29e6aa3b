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
IMPLEMENTATION = "python"
if not TYPE_CHECKING and not os.environ.get("TINKER_SYNC_NO_EXTENSIONS") and sys.implementation.name == "cpython":
    try:
        from ._sse import SSEDecoder

        IMPLEMENTATION = "cython"
    except ImportError:
        SSEDecoder = PySSEDecoder
elif not TYPE_CHECKING:
    SSEDecoder = PySSEDecoder
