"""The peer's use of glibc's heap while pieces stream through it (elsewhere, no-ops).

Every piece is a buffer of about 1 MiB, allocated by one thread and freed soon after;
glibc serves such buffers from its heap once the first few are freed (its mmap
threshold rises to their size), and the freed ones do not always go back to the
system. Over a 1 GiB download that fragmentation pushed the downloading peer's peak
memory from ~130 MB to between 145 and 176 MB (``bench/bench.py``).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

M_ARENA_MAX = -8  # glibc's mallopt parameter number
TRIM_EVERY = 64 << 20
"""Bytes received between two hand-backs of free heap memory to the system: often
enough to hold the peak down, rarely enough that its cost (a walk of the heap, and
page faults when the memory is used again) does not show in the transfer rate."""

try:
    _libc: Any = ctypes.CDLL(None)
    _libc.mallopt  # noqa: B018 - glibc's, looked up once
    _libc.malloc_trim  # noqa: B018
except (OSError, AttributeError):
    _libc = None


def few_arenas() -> None:
    """Let the piece threads share two malloc arenas instead of one each: each stream
    thread otherwise keeps its own arena of freed 1 MiB buffers (with a dozen threads,
    tens of megabytes of peak memory for nothing)."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, 2)


class HeapTrimmer:
    """Counts bytes received by any thread; every ``every`` of them, gives the heap's
    free memory back to the system (``malloc_trim``)."""

    def __init__(self, every: int = TRIM_EVERY) -> None:
        self._every = every
        self._count = 0
        self._lock = threading.Lock()

    def received(self, size: int) -> None:
        with self._lock:
            self._count += size
            if self._count < self._every:
                return
            self._count = 0
        if _libc is not None:
            _libc.malloc_trim(0)
