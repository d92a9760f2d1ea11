"""Keep freed memory for reuse: glibc's malloc, tuned once per trainer process.

A training step allocates and frees the same arrays every step (activations, gradients,
workspaces, the batch read). By default glibc serves large allocations with mmap and
gives freed memory at the top of the heap back to the system, so every step faults its
arrays in again and the kernel zeroes the pages: LeNet-5's step at batch 64 took 234
page faults and 1.2 ms of system time, next to 4 ms of its own. With the mmap threshold
at glibc's maximum (32 MiB) and no trimming, freed arrays are reused from the heap
(3 page faults per step). LeNet-5 on 2 ranks runs 13% more images/s (18927-19671 ->
21219-22622), on 1 rank 5% (12429-12973 -> 13321-13517; `python -m mpicnn.bench scaling`
with MPICNN_MALLOC=system against the default, interleaved, quiet machine). The cost:
the process keeps its peak heap until it exits, which a trainer reaches in its first
steps anyway.

``train.main`` applies it; ``MPICNN_MALLOC=system`` leaves malloc as it is. C libraries
other than glibc are left alone.
"""
import ctypes
import os

__all__ = ["tune"]

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # glibc's ceiling on 64-bit (4 MiB * sizeof(long))
TRIM_NEVER = 2 ** 31 - 1


def tune():
    """Keep freed memory for reuse in this process; returns whether it is in effect."""
    if os.environ.get("MPICNN_MALLOC", "reuse") == "system":
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: its mallopt takes these parameters
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, TRIM_NEVER))
