"""bench scaling: the data-parallel rows and the machine ceiling measured in the same run."""
import pytest

from mpicnn.bench.scaling import bench_scaling
from tools import TORCH_INSTALL, require_module

pytestmark = pytest.mark.slow


def test_scaling_rows_carry_the_ceiling():
    rows = bench_scaling(ranks=(1, 2), steps=4, repeats=1, batch_size=32)
    one, two = rows
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert "ceiling_images_per_sec" not in one  # one rank has no ceiling run
    assert two["ceiling_images_per_sec"] > 0 and two["images_per_sec"] > 0
    assert two["of_ceiling"] == pytest.approx(two["images_per_sec"] / two["ceiling_images_per_sec"])
    assert two["ceiling_speedup"] == pytest.approx(two["ceiling_images_per_sec"] / one["images_per_sec"])
    assert len(two["ceiling_runs"]) == 1 and len(two["all_runs"]) == 1


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
