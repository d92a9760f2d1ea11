"""``python -m mpicnn.bench balance`` runs end to end (it launches mpiexec itself) and
reports what the dynamic balancer decided: the straggler's share shrinks."""
import os

import pytest

from mpicnn.bench.balance import bench_balance


def test_balance_bench_moves_samples_off_the_straggler():
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    rows = bench_balance(factor=4.0, steps=24, repeats=1, batch_size=64)
    assert [(r["slow_rank"], r["balance"]) for r in rows] == [("none", "static"), ("1:4", "static"),
                                                              ("1:4", "dynamic")]
    assert rows[0]["shares"] is None and rows[1]["shares"] is None
    fast, slow = rows[2]["shares"]
    assert slow < fast and abs(fast + slow - 1) < 0.01
