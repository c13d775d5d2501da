"""Hand the heap pages a router rebuild freed back to the operating system.

A rebuild of a large router (whitening every class mean a block at a time, training and
filling a FAISS index whose lists grow by reallocation) allocates and frees gigabytes of
short-lived buffers. glibc keeps freed heap memory for reuse, and after the first large
buffer is freed it raises its mmap threshold, so later large buffers also come from the heap:
the process keeps the pages after the router no longer uses them. ``malloc_trim(0)`` returns
every free page. With ``faiss_index.compact_lists`` it keeps a million 960-d tasks at 2.5 GiB
(BENCHMARKS.md, section 2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS where the C library can (glibc).

    Returns:
        True if pages were released, False if there were none or the platform cannot.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
