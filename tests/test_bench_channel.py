"""``python -m mpicnn.bench channel`` runs end to end (it launches mpiexec itself) and
its figures say what the channel axis promises: split layers hold 1/C per rank under
every layout, each --channel-split gives its layouts, the auto plan moves less than
either forced one, and activations split through BatchNorm take ~1/C per rank."""
import os

import pytest

from mpicnn.bench.channel import bench_channel


def test_channel_bench_memory_layouts_and_traffic():
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    rows, layers = bench_channel((1, 2), steps=2, width=4)
    two = {r["split"]: r for r in rows if r["channel"] == 2}
    # width 4: 4, 8, 16, 32 channels, 10 classes; the input split of the first conv
    # (3 channels) leaves 2 of them on rank 0, a little over half of that conv.
    assert all(abs(r["ratio_split_layers"] - 0.5) < 0.01 for r in two.values())
    chosen = {split: {row["layout"] for row in layers if row["split"] == split} for split in two}
    assert chosen == {"filter": {"filter", "row"}, "channel": {"channel", "row"},
                      "auto": {"filter", "channel", "row"}}
    # Only a first conv that splits filters and leaves its output split moves nothing (no
    # input gradient to reduce).
    silent = {(row["split"], row["layer"]) for row in layers if row["traffic_MB/step"] == 0}
    assert silent == {(split, "0") for split in ("filter", "auto") for row in layers
                      if (row["split"], row["layer"], row["output"]) == (split, "0", "split")}
    assert two["auto"]["traffic_MB/step"] < min(two["filter"]["traffic_MB/step"], two["channel"]["traffic_MB/step"])
    # auto and channel: every activation but the logits is split; filter: only the last
    # conv's, through BatchNorm, ReLU and the pool, into the row-parallel head.
    assert two["auto"]["ratio_act"] < 0.52 and two["channel"]["ratio_act"] < 0.52
    assert two["filter"]["ratio_act"] > 0.9
