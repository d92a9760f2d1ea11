"""bench scaling: the data-parallel rows and the machine ceiling measured in the same run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from launch import ROOT
from mpicnn.bench.scaling import bench_scaling, lockstep_bound
from tools import TORCH_INSTALL, require_module


@pytest.mark.slow
def test_scaling_rows_carry_the_ceiling_and_the_lockstep_bound():
    rows = bench_scaling(ranks=(1, 2), steps=8, repeats=1, batch_size=32)
    one, two = rows
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert "ceiling_images_per_sec" not in one and "lockstep_bound" not in one  # one rank has no ceiling run
    assert two["ceiling_images_per_sec"] > 0 and two["images_per_sec"] > 0
    assert two["of_ceiling"] == pytest.approx(two["images_per_sec"] / two["ceiling_images_per_sec"])
    assert two["ceiling_speedup"] == pytest.approx(two["ceiling_images_per_sec"] / one["images_per_sec"])
    assert len(two["ceiling_runs"]) == 1 and len(two["all_runs"]) == 1
    # from the traces of a third, traced pair of independent runs
    # a synchronous step never beats the ceiling (a split by mean speed need not beat the equal one)
    assert 0 < two["lockstep_bound"] <= 1 + 1e-12 and 0 < two["lockstep_bound_balanced"] <= 1 + 1e-12
    assert two["lockstep_runs"] == [round(two["lockstep_bound"], 3)]
    assert two["of_lockstep"] == pytest.approx(two["of_ceiling"] / two["lockstep_bound"])


def test_lockstep_bound_waits_for_the_slower_step():
    """Each lockstep step takes its slowest process's time; the ceiling adds the
    processes' own rates."""
    same = lockstep_bound(np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    assert same["lockstep_bound"] == same["lockstep_bound_balanced"] == 1.0 and "rank_correlation" not in same
    # stalls that alternate: each process averages 1.5, lockstep 2 every step
    alternate = lockstep_bound(np.array([[1.0, 2.0, 1.0, 2.0], [2.0, 1.0, 2.0, 1.0]]))
    assert alternate["lockstep_bound"] == pytest.approx(0.75)
    assert alternate["lockstep_bound_balanced"] == pytest.approx(0.75)  # no static split helps
    assert alternate["rank_correlation"] == pytest.approx(-1.0)
    # one process twice as slow: an equal split runs at its pace, a balanced one at the ceiling
    uneven = lockstep_bound(np.array([[1.0, 1.0], [2.0, 2.0]]))
    assert uneven["lockstep_bound"] == pytest.approx(2 / 2 / 1.5)
    assert uneven["lockstep_bound_balanced"] == pytest.approx(1.0)
    three = lockstep_bound(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]))
    assert three["lockstep_bound"] == pytest.approx(3 / 3 / 1.5) and "rank_correlation" not in three


def test_interleaved_rounds_alternate_their_order():
    """Every other round runs the variants in reverse, so no variant always goes first."""
    from mpicnn.bench.scaling import interleaved
    order = []

    def launch(v):
        order.append(v)
        return {"images_per_sec": {"a": 1.0, "b": 2.0, "c": 3.0}[v] * len(order)}
    runs = interleaved(("a", "b", "c"), 3, launch)
    assert order == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert runs["a"][1] == [1, 6, 7] and runs["c"][0]["images_per_sec"] == 12.0  # round order; the median run


@pytest.mark.slow
def test_ddp_rows_carry_both_sides_ceilings():
    """bench scaling --compare torch: mpicnn against PyTorch DDP, and each against its own
    ceiling, from runs of both sides in the same bench."""
    require_module("torch", TORCH_INSTALL)
    from mpicnn.bench.scaling import bench_vs_ddp
    (row,) = bench_vs_ddp(ranks=(2,), steps=4, repeats=1, batch_size=32)
    assert row["ranks"] == 2 and row["global_batch"] == 32
    for side in ("mpicnn", "ddp"):
        job, top = row[f"{side}_images_per_sec"], row[f"{side}_ceiling_images_per_sec"]
        assert job > 0 and top > 0
        assert row[f"{side}_of_ceiling"] == pytest.approx(job / top)
        assert len(row[f"{side}_runs"]) == 1 and len(row[f"{side}_ceiling_runs"]) == 1
    assert row["ratio"] == pytest.approx(row["mpicnn_images_per_sec"] / row["ddp_images_per_sec"])


@pytest.mark.slow
def test_the_cli_writes_both_tables_with_compare_torch(tmp_path):
    """python -m mpicnn.bench scaling --compare torch end to end (main's own branch)."""
    require_module("torch", TORCH_INSTALL)
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-m", "mpicnn.bench", "scaling", "--compare", "torch", "--steps", "8",
                           "--scaling-repeats", "1", "--json", str(out)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert [row["ranks"] for row in results["scaling"]] == [1, 2]
    assert [row["ranks"] for row in results["scaling_vs_ddp"]] == [2]
