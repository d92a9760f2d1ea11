"""``bench_pipeline`` runs end to end (it launches mpiexec itself) and reads the pipeline
figures from the trainer's summary: one row per (M, schedule) after the 1-rank baseline."""
import os

import pytest

from mpicnn.bench.pipeline import bench_pipeline


def test_pipeline_bench_reports_bubble_against_ideal():
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    rows = bench_pipeline(micro_batches=(2,), schedules=("gpipe", "1f1b"), steps=4, batch_size=32)
    assert [(r["ranks"], r["micro_batches"], r["schedule"]) for r in rows] == [(1, 1, "-"), (2, 2, "gpipe"),
                                                                               (2, 2, "1f1b")]
    assert rows[0]["bubble"] is None and rows[0]["speedup"] == 1.0
    for row in rows[1:]:
        assert row["bubble_ideal"] == pytest.approx(1 / 3)
        assert 0 <= row["bubble"] < 1 and row["images_per_sec"] > 0
        assert row["layers"][0][0] == 0 and row["layers"][-1][1] == 12  # lenet5's 12 layers, all placed
