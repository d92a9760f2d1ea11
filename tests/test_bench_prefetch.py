"""``python -m mpicnn.bench prefetch`` runs the default job without and with --prefetch
(it launches mpiexec itself) and reports both, pair by pair."""
import os

import pytest

from mpicnn.bench.prefetch import bench_prefetch


def test_prefetch_bench_reports_both_runs_and_the_wait():
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    (row,) = bench_prefetch(ranks=(2,), repeats=2, steps=40)
    assert row["ranks"] == 2 and len(row["runs"]) == len(row["runs_prefetch"]) == 2
    assert min(row["runs"] + row["runs_prefetch"]) > 0
    assert row["images_per_sec"] == pytest.approx(sum(row["runs"]) / 2, rel=1e-3)  # the median of two
    assert row["data_seconds"] > 0 and row["waited_seconds_prefetch"] >= 0
    assert row["waited_of_data"] == pytest.approx(row["waited_seconds_prefetch"] / row["data_seconds"])
    assert 0.2 < row["pair_ratio_median"] < 5
