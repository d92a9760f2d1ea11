"""BLAS threads per rank: cores shared among the ranks of a node, unless the user chose."""
import numpy as np

from mpicnn import blas


def test_threads_per_rank(monkeypatch):
    for var in blas.USER_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(blas.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert [blas.threads_per_rank(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert blas.threads_per_rank(2) is None


def test_set_and_restore():
    """NumPy built with OpenBLAS (every PyPI wheel) must have its thread count set and
    restored; with another BLAS the block still runs, reporting that it could not set it."""
    openblas = "openblas" in np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    before = blas.set_threads(2)
    assert (before is not None) == openblas
    with blas.blas_threads(1) as ok:
        assert ok == openblas
        assert blas.set_threads(1) == (1 if openblas else None)
        a = np.ones((64, 64), np.float32)
        assert float((a @ a)[0, 0]) == 64.0
    if openblas:
        assert blas.set_threads(before) == 2      # the block gave back the count it found
