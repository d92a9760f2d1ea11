"""``bench_ps`` runs end to end (it launches mpiexec itself) and its figures say what the
parameter server promises: a bound of 0 computes on current weights, and with a
straggler a positive bound lets worker 0 run ahead on older ones, never older than the bound."""
import os

import pytest

from mpicnn.bench.ps import bench_ps


def test_ps_bench_rows():
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    rows = bench_ps(staleness=(0, 2), straggler=(None, "1:3"), steps=24, batch_size=32)
    assert [(r["straggler"], r["staleness"]) for r in rows] == [("none", 0), ("none", 2), ("1:3", 0), ("1:3", 2)]
    assert all(r["images_per_sec"] > 0 and 0 <= r["test_accuracy"] <= 1 for r in rows)
    assert all(r["weights_age"] == 0 for r in rows if r["staleness"] == 0)
    assert 0 < rows[3]["weights_age"] <= 2
