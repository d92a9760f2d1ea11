"""``python -m mpicnn.bench spatial --volumes`` runs cosmoflow on split volumes end to end
(it launches mpiexec itself) and reports the halo traffic of every 3-D window layer."""
import os

import pytest

from mpicnn.bench.spatial import bench_spatial


def test_spatial_bench_on_volumes(tmp_path, monkeypatch):
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    monkeypatch.setenv("MPICNN_DATA_DIR", str(tmp_path))
    rows, layers = bench_spatial(sizes=(32,), grids=("2x1x1",), batch_size=2, steps=2, volumes=True,
                                 extra=("--width", "2"))
    assert [(r["grid"], r["ranks"]) for r in rows] == [("1x1x1", 1), ("2x1x1", 2)]
    assert rows[1]["halo_mb_per_step"] > 0 and rows[0]["halo_mb_per_step"] == 0
    # the four 3x3x3 convs (0, 4, 8, 12) exchange depth halos; the 2x2x2 pools need none
    moving = sorted(int(row["layer"]) for row in layers if row["halo_kb_per_step"] > 0)
    assert moving == [0, 4, 8, 12]
