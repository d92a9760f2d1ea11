"""Pure geometry of the volume and upsampling splits: what each block reads, receives and
sends, checked against brute force over every block of every split."""
import pytest

from mpicnn.parallel.blocks import block_range
from mpicnn.parallel.halo3d import Halo3d
from mpicnn.parallel.halo_geometry import axis_plan, upsample_axis_plan


@pytest.mark.parametrize("size, factor, parts", [(15, 2, 2), (7, 2, 3), (30, 2, 4), (5, 3, 4), (8, 2, 8)])
def test_upsample_plans_read_what_the_output_block_copies(size, factor, parts):
    plans = [upsample_axis_plan(size, factor, parts, i) for i in range(parts)]
    for i, plan in enumerate(plans):
        assert plan.out == block_range(factor * size, parts, i)
        copied = {o // factor for o in range(*plan.out)}
        assert set(range(*plan.need)) == copied
        have = set(range(*plan.own)) | {r for _, (a, b) in plan.recv for r in range(a, b)}
        assert copied <= have
        for peer, rows in plan.recv:  # what i receives from peer is what peer sends to i
            assert (i, rows) in plans[peer].send
    with pytest.raises(ValueError, match="cannot be cut into 4"):
        upsample_axis_plan(3, 2, 4, 0)


def test_halo3d_phases_move_each_axis_over_the_spans_before_it():
    """Phase 1 (depth) over the own rows and columns; phase 2 (rows) over the whole depth
    span; phase 3 (columns) over the whole depth and row spans: corners arrive."""
    axes = tuple(axis_plan(n, 3, 1, 1, 1, 2, 1, name) for n, name in ((6, "depths"), (5, "rows"), (4, "columns")))
    halo = Halo3d(axes)
    # the second block of each axis: one halo row from block 0 before it, padding after it
    assert halo.shape == (5, 4, 4) and halo.own == ((1, 4), (1, 3), (1, 3))
    (d_recv, d_send), (r_recv, _), (c_recv, _) = halo.phases
    assert d_recv == [(0, ((0, 1), (1, 3), (1, 3)))]
    assert d_send == [(0, ((1, 2), (1, 3), (1, 3)))]
    assert r_recv == [(0, ((0, 5), (0, 1), (1, 3)))]
    assert c_recv == [(0, ((0, 5), (0, 4), (0, 1)))]
