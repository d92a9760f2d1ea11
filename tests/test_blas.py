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
    with blas.blas_threads(1) as ok:
        if ok:
            assert blas.set_threads(1) == 1
        a = np.ones((64, 64), np.float32)
        assert float((a @ a)[0, 0]) == 64.0
