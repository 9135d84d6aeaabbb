"""glibc's malloc arenas: two per server process unless the operator sets MALLOC_ARENA_MAX.

glibc gives a thread that finds the heap busy an arena of its own, up to eight per core, and memory freed in
one arena is never reused by another. A server's threads (the log writer, executors, the store's callers)
allocate in bursts on different arenas, so its heap grew with fragmentation under a long mixed load
(docs/benchmarks.md, "Soak"). Python's threads take turns on the GIL anyway, so two arenas cost no parallelism;
chDB allocates with its own jemalloc and is not affected.
"""

from __future__ import annotations

import ctypes
import os

MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number for the arena limit (malloc.h)


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's arenas for threads that start from now on; whether the cap was set (not on other C libraries,
    and not when MALLOC_ARENA_MAX is already in the environment: glibc has read the operator's choice)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, macOS: their allocators have no arenas to cap
        return False
    return bool(mallopt(_M_ARENA_MAX, count))
