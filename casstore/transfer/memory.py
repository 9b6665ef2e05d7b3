"""The process's allocator during transfers: at most two glibc malloc arenas.

glibc gives each thread that contends for the heap an arena of its own (up to 8 per core). A
transfer's 1 MiB buffers are allocated on the event loop and freed on worker threads (hashing,
writes), so freed memory piles up in arenas that other threads never reuse: a cold fetch of 842
MiB from S3 (moto) peaked at 135-167 MiB resident, and 99-124 MiB with two arenas, in the same
time (docs/benchmarks.md). It is the allocator's own switch (``M_ARENA_MAX``, as ``MALLOC_ARENA_MAX``
sets it), set before the transfer starts its threads; a no-op where there is no glibc.
"""

from __future__ import annotations

import sys

_M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_arenas(n: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process. True if the allocator took it."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, n))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
