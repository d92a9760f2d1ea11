"""NumPy's BLAS thread count, set at run time (threadpoolctl-style, through ctypes).

MPI ranks that share a node must not each start a BLAS thread per core: OpenBLAS
threads spin while they wait, and two ranks with two threads each on two cores ran
the default job 7x slower than with one thread each. ``threads_per_rank`` divides the
cores this process may use among the ranks on its node, unless the user chose a count
with OMP_NUM_THREADS, OPENBLAS_NUM_THREADS or MKL_NUM_THREADS.
"""
import contextlib
import ctypes
import glob
import os

import numpy as np

USER_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _openblas():
    """ctypes handle and (set, get) names of NumPy's OpenBLAS, or None."""
    base = os.path.dirname(np.__file__)
    candidates = glob.glob(os.path.join(base, "..", "numpy.libs", "*openblas*"))
    candidates += glob.glob(os.path.join(base, ".libs", "*openblas*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}_num_threads64_", "scipy_openblas_{}_num_threads",
                       "openblas_{}_num_threads64_", "openblas_{}_num_threads"):
            if hasattr(lib, suffix.format("set")) and hasattr(lib, suffix.format("get")):
                return lib, suffix.format("set"), suffix.format("get")
    return None


def set_threads(n):
    """Give NumPy's OpenBLAS ``n`` threads; returns the previous count, or None if unknown."""
    found = _openblas()
    if found is None:
        return None
    lib, set_name, get_name = found
    old = getattr(lib, get_name)()
    getattr(lib, set_name)(int(n))
    return old


@contextlib.contextmanager
def blas_threads(n):
    """Run the block with NumPy's OpenBLAS on ``n`` threads; yields True if it could be set."""
    old = set_threads(n) if n is not None else None
    try:
        yield old is not None
    finally:
        if old is not None:
            set_threads(old)


def threads_per_rank(ranks_on_node):
    """The BLAS threads a rank should use, or None when the user set them explicitly."""
    if any(os.environ.get(v) for v in USER_VARIABLES):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, ranks_on_node))
