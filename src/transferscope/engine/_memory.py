"""Give freed heap memory back to the operating system during long passes over data.

Decoding, resizing and the forward pass allocate and free input-sized buffers for every batch;
glibc's allocator keeps much of what is freed in its heaps, so a process's resident memory
grows with the number of batches (measured: +1.3 GiB over 5,000 images at 224 px, flat with
``MALLOC_MMAP_THRESHOLD_=65536``). No library exposes glibc's ``malloc_trim``, hence ctypes.

The opposite cost, measured on efficientnet_lite0 at 224 px (batch 5, 2 cores): glibc serves
the forward pass's activation buffers (1-30 MB) with fresh ``mmap`` pages and gives the heap's
top back after every pass, so each image took ~3,000 page faults (zeroed by the kernel) and
a fifth of the time went to the system. :func:`tune_heap` keeps buffers up to 32 MB in the
heap and leaves trimming to :func:`trim_heap`: 77 -> 103 images/s, peak RSS 0.81 -> 0.85 GiB
(``benchmarks/bench_heap.py``; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["every", "MMAP_THRESHOLD", "TRIM_EVERY", "trim_heap", "TRIM_THRESHOLD", "tune_heap"]

TRIM_EVERY = 32  # batches between trims: a trim costs well under a millisecond


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:  # pragma: no cover - not glibc (macOS, musl): nothing to trim
        return None


def trim_heap() -> bool:
    """``malloc_trim(0)`` where the C library has it (glibc); True if it ran.

    >>> isinstance(trim_heap(), bool)
    True
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (HEAP_MAX_SIZE / 2): activations stay in the heap
TRIM_THRESHOLD = 2**30  # the heap's free top is given back by trim_heap(), every 32 batches


@functools.lru_cache(maxsize=1)
def tune_heap() -> bool:
    """Once per process: ``mallopt`` so that large buffers are reused from the heap rather
    than mapped and zeroed for every batch (glibc only; skipped when the user set
    ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` themselves). True if it ran.

    >>> isinstance(tune_heap(), bool)
    True
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt") or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def every(batches: int) -> bool:
    """Whether to trim after batch number ``batches`` (1-based)."""
    return batches % TRIM_EVERY == 0
