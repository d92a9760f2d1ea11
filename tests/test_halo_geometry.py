"""Halo geometry: pure functions, checked for every rank of many grids in one process."""
import itertools

import numpy as np
import pytest

from mpicnn.ops.conv import conv2d_forward
from mpicnn.parallel.blocks import block_range
from mpicnn.parallel.halo_geometry import axis_plan, output_size, plan_2d, smallest_grid_note

SIZES = [1, 2, 3, 5, 7, 8, 13, 15, 30, 31, 60]
# (kernel, stride, padding, dilation): 3x3 "same", stride 2, dilation 2, 1x1 (stride 1 and 2),
# pools with and without padding, a kernel wider than the stride's gap, a gap (stride > extent).
GEOMETRIES = [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (1, 1, 0, 1), (1, 2, 0, 1), (2, 2, 0, 1),
              (3, 2, 1, 1), (5, 1, 2, 1), (5, 2, 2, 1), (7, 3, 3, 1), (3, 1, 0, 1), (2, 3, 0, 1),
              (5, 1, 4, 2)]


def plans(size, geometry, parts):
    k, s, p, d = geometry
    return [axis_plan(size, k, s, p, d, parts, r) for r in range(parts)]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 5])
def test_every_rank_gets_exactly_the_rows_it_reads(geometry, parts):
    k, s, p, d = geometry
    for size in SIZES:
        out = output_size(size, k, s, p, d)
        if out < 1:
            continue
        if min(size, out) < parts:
            with pytest.raises(ValueError, match="non-empty blocks"):
                axis_plan(size, k, s, p, d, parts, 0)
            continue
        ps = plans(size, geometry, parts)
        # Blocks tile the input and the output and are balanced.
        assert [pl.own for pl in ps] == [block_range(size, parts, r) for r in range(parts)]
        assert [pl.out for pl in ps] == [block_range(out, parts, r) for r in range(parts)]
        for r, pl in enumerate(ps):
            o0, o1 = pl.out
            a, e = pl.need
            # The need range holds exactly the rows the output block reads ...
            taps = {o * s - p + t * d for o in range(o0, o1) for t in range(k)}
            assert min(taps) == a and max(taps) == e - 1
            # ... and a padding-0 window op over it yields exactly the output block.
            assert output_size(e - a, k, s, 0, d) == o1 - o0
            assert pl.span[0] <= min(a, pl.own[0]) and pl.span[1] >= max(e, pl.own[1])
            # Every row read is padding, owned, or received once from its owner.
            got = {}
            for peer, (lo, hi) in pl.recv:
                assert peer != r and (lo, hi) == (max(lo, ps[peer].own[0]), min(hi, ps[peer].own[1]))
                for i in range(lo, hi):
                    assert i not in got
                    got[i] = peer
            for i in range(a, e):
                if 0 <= i < size and not pl.own[0] <= i < pl.own[1]:
                    assert i in got, (size, geometry, parts, r, i)
            assert all(a <= i < e and 0 <= i < size for i in got)
            # Sends mirror receives.
            for peer, rows in pl.send:
                assert (r, rows) in ps[peer].recv
            for peer, rows in pl.recv:
                assert (r, rows) in ps[peer].send


def test_thin_blocks_read_from_far_owners():
    """60 px through a stride-2 stage on 4 row blocks leaves 2 rows per block; a 5x5
    kernel then needs rows from two blocks away."""
    pl = axis_plan(8, 5, 1, 2, 1, 4, 1)
    assert pl.own == (2, 4) and pl.need == (0, 6)
    assert dict(pl.recv) == {0: (0, 2), 2: (4, 6)}
    far = axis_plan(8, 7, 1, 3, 1, 8, 4)  # 1-row blocks, 3-row halo: three owners each side
    assert sorted(p for p, _ in far.recv) == [1, 2, 3, 5, 6, 7]


def test_too_many_blocks_error_names_the_fix():
    with pytest.raises(ValueError, match="3 rows cannot be cut into 4"):
        axis_plan(6, 3, 2, 1, 1, 4, 0)
    note = smallest_grid_note((6, 40), (3, 3), (2, 2), (1, 1), (1, 1), (4, 1))
    assert "at most 3x20" in note and "P <= 3" in note


@pytest.mark.parametrize("grid", [(2, 1), (1, 2), (2, 2), (3, 2), (4, 3)])
@pytest.mark.parametrize("geometry", [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (1, 2, 0, 1), (5, 2, 2, 1)])
def test_assembled_blocks_reproduce_the_serial_conv(grid, geometry):
    """Fill each rank's span buffer from the plan (owners' rows, then columns over the full
    row span, zero padding) in one process; conv with padding 0 = the serial output block."""
    k, s, p, d = geometry
    H, W = 17, 13
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, H, W, 3))
    w = rng.standard_normal((4, 3, k, k))
    serial = conv2d_forward(x, w, None, stride=s, padding=p, dilation=d)
    for coords in itertools.product(range(grid[0]), range(grid[1])):
        rows, cols = plan_2d((H, W), (k, k), (s, s), (p, p), (d, d), grid, coords)
        buf = np.zeros((2, rows.span[1] - rows.span[0], cols.span[1] - cols.span[0], 3))
        for i, j in itertools.product(range(*rows.span), range(*cols.span)):
            if 0 <= i < H and 0 <= j < W:
                buf[:, i - rows.span[0], j - cols.span[0]] = x[:, i, j]
        a, e = rows.need[0] - rows.span[0], rows.need[1] - rows.span[0]
        c, f = cols.need[0] - cols.span[0], cols.need[1] - cols.span[0]
        local = conv2d_forward(np.ascontiguousarray(buf[:, a:e, c:f]), w, None, stride=s, padding=0, dilation=d)
        expect = serial[:, slice(*rows.out), slice(*cols.out)]
        np.testing.assert_allclose(local, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_interior_reads_no_halo(geometry, parts):
    """Interior output rows read only own rows and padding; the rows outside the interior
    each read at least one received row (the interior is as large as it can be)."""
    k, s, p, d = geometry
    for size in SIZES:
        out = output_size(size, k, s, p, d)
        if out < 1 or min(size, out) < parts:
            continue
        for pl in plans(size, geometry, parts):
            received = {i for _, (a, b) in pl.recv for i in range(a, b)}
            i0, i1 = pl.interior()
            for o in range(*pl.out):
                a, e = pl.reads(o, o + 1)
                reads_halo = any(i in received for i in range(a, e))
                if i0 <= o < i1:
                    assert not reads_halo, (size, geometry, parts, pl.index, o)
            # Below i0 and from i1 on, rows that read no halo may remain only where a
            # received range sits on that side (the bound is per side, not per row).
            assert pl.out[0] <= i0 <= i1 <= pl.out[1]
