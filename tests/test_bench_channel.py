"""``python -m mpicnn.bench channel`` runs end to end (it launches mpiexec itself) and
its memory figure says what the channel axis promises: split layers hold 1/C per rank."""
import os

import pytest

from mpicnn.bench.channel import bench_channel


def test_channel_bench_halves_split_layer_weights():
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    rows, layers = bench_channel((1, 2), steps=2, width=4)
    two = next(r for r in rows if r["channel"] == 2)
    assert abs(two["ratio_split_layers"] - 0.5) < 0.01  # width 4: 4, 8, 16, 32 channels, 10 classes
    assert {row["kind"] for row in layers} == {"FilterParallelConv2d", "NeuronParallelLinear"}
    assert all(row["gather_MB/step"] > 0 for row in layers)
