"""Keeping the platform's process small (glibc's allocator; elsewhere these do nothing).

- Large buffers (an upload's 5 MiB parts) are mapped and unmapped, not kept by the heap.
- Once started, the heap's free pages (startup's temporary objects: catalog loading, the S3
  client's models being parsed) go back to the system.

Measured with ``python -m bench storage``: see docs/storage.md.
"""

from __future__ import annotations

import ctypes
import functools
import gc

M_ARENA_MAX = -8  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def return_large_buffers_to_the_system() -> None:
    """glibc serves allocations above a *dynamic* threshold (up to 32 MiB) from its heaps,
    which keep freed memory: after an upload's 5 MiB parts the process would stay ~20 MB larger
    for good. A fixed 1 MiB threshold maps large buffers and unmaps them when freed; two
    arenas instead of one per thread keep boto3's worker threads from each holding a heap."""
    if libc := _glibc():
        libc.mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
        libc.mallopt(M_ARENA_MAX, 2)


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (``malloc_trim``)."""
    gc.collect()
    if libc := _glibc():
        libc.malloc_trim(0)
