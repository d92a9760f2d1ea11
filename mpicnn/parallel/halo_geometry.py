"""Halo geometry of a spatially split window op (conv or pool): pure functions, no MPI.

Rule (DESIGN.md, "Tensors and partitions"): along each split axis the P ranks own
balanced blocks (``block_range``) of EVERY feature map. For a layer with global input
size H and output size Ho, rank r owns output rows ``[o0, o1) = block_range(Ho, P, r)``
and input rows ``[lo, hi) = block_range(H, P, r)``. Output rows [o0, o1) read input rows

    need = [o0*s - p, (o1 - 1)*s - p + (k - 1)*d + 1)

of which those outside [0, H) are padding (zeros for conv and avg pool, -inf for max
pool). Every input row inside [0, H) that the rank does not own comes from its owner,
which may be any rank on the axis, not only the next one: a block thinner than the
halo is simply read from further away (the "owner-to-needer" plan). Rows are planned
independently of columns; a 2-D split moves rows first and then columns over the
full row extent (including the new row halos), which brings the corners in two phases.

The rank keeps the halo in one buffer covering ``span``, the hull of what it owns and
what it needs. The op then runs with padding 0 on the ``need`` part of that buffer and
yields exactly output rows [o0, o1).
"""
from dataclasses import dataclass

from .blocks import block_range

__all__ = ["AxisPlan", "axis_plan", "output_size", "plan_2d", "smallest_grid_note", "upsample_axis_plan",
           "upsample_plan_2d"]


def output_size(size, kernel, stride, padding, dilation=1):
    """Output length along one axis (floor mode, as PyTorch's conv and pool)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class AxisPlan:
    """One rank's view of one axis. All ranges are global indices, half-open.

    own   input rows this rank holds            out   output rows it computes
    need  input rows its output reads (may reach outside [0, size): padding)
    span  rows of its halo buffer: hull of own and need
    recv  ((peer, (r0, r1)), ...)  rows it receives from each other owner
    send  ((peer, (r0, r1)), ...)  rows of its own block each other rank needs
    window (kernel, stride, padding, dilation) of the op
    """
    size: int
    out_size: int
    parts: int
    index: int
    own: tuple
    out: tuple
    need: tuple
    span: tuple
    recv: tuple
    send: tuple
    window: tuple

    def reads(self, o0, o1):
        """Input rows read by output rows [o0, o1) (global, may reach into padding)."""
        return _need((o0, o1), *self.window)

    def interior(self):
        """Output rows [i0, i1) computable before any halo arrives: those reading only
        the own block and padding (i0 == i1 when there are none)."""
        k, s, p, d = self.window
        lo = self.own[0] if any(b <= self.own[0] for _, (a, b) in self.recv) else self.span[0]
        hi = self.own[1] if any(a >= self.own[1] for _, (a, b) in self.recv) else self.span[1]
        ext = (k - 1) * d + 1
        i0 = min(self.out[1], max(self.out[0], -(-(lo + p) // s)))  # ceil((lo + p) / s)
        i1 = min(self.out[1], (hi + p - ext) // s + 1)
        return (i0, max(i0, i1))

    @property
    def halo_rows(self):
        return sum(b - a for _, (a, b) in self.recv)


def _need(out, kernel, stride, padding, dilation):
    o0, o1 = out
    return o0 * stride - padding, (o1 - 1) * stride - padding + (kernel - 1) * dilation + 1


def _overlap(a, b):
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


def axis_plan(size, kernel, stride, padding, dilation, parts, index, axis="rows"):
    """The AxisPlan of block ``index`` of ``parts`` along an axis of ``size`` input rows.

    Raises ValueError when a block would be empty (fewer input or output rows than
    blocks): the caller names the layer and the grid that works.
    """
    out_size = output_size(size, kernel, stride, padding, dilation)
    if out_size < 1:
        raise ValueError(f"input of {size} {axis} is too small for kernel {kernel} with padding "
                         f"{padding} and dilation {dilation}")
    if size < parts or out_size < parts:
        raise ValueError(f"{min(size, out_size)} {axis} cannot be cut into {parts} non-empty blocks "
                         f"(input {size}, output {out_size})")
    own = block_range(size, parts, index)
    out = block_range(out_size, parts, index)
    need = _need(out, kernel, stride, padding, dilation)
    span = (min(need[0], own[0]), max(need[1], own[1]))
    inside = _overlap(need, (0, size))
    recv, send = [], []
    for peer in range(parts):
        if peer == index:
            continue
        got = inside and _overlap(inside, block_range(size, parts, peer))
        if got:
            recv.append((peer, got))
        peer_need = _need(block_range(out_size, parts, peer), kernel, stride, padding, dilation)
        gave = _overlap(peer_need, own)
        if gave:
            send.append((peer, gave))
    return AxisPlan(size, out_size, parts, index, own, out, need, span, tuple(recv), tuple(send),
                    (kernel, stride, padding, dilation))


def upsample_axis_plan(size, factor, parts, index, axis="rows"):
    """The AxisPlan of nearest upsampling by ``factor`` along an axis of ``size`` input rows:
    output rows [o0, o1) = block_range(factor*size, parts, index) copy input rows
    [o0 // factor, (o1 - 1) // factor + 1), which cross block boundaries whenever the
    balanced blocks of the output are not ``factor`` times those of the input (uneven
    sizes). ``window`` is (factor, factor, 0, 1): the rows an output block reads."""
    if size < parts:
        raise ValueError(f"{size} {axis} cannot be cut into {parts} non-empty blocks")

    def need_of(out):
        return out[0] // factor, (out[1] - 1) // factor + 1

    own = block_range(size, parts, index)
    out = block_range(factor * size, parts, index)
    need = need_of(out)
    recv, send = [], []
    for peer in range(parts):
        if peer == index:
            continue
        got = _overlap(need, block_range(size, parts, peer))
        if got:
            recv.append((peer, got))
        gave = _overlap(need_of(block_range(factor * size, parts, peer)), own)
        if gave:
            send.append((peer, gave))
    span = (min(need[0], own[0]), max(need[1], own[1]))
    return AxisPlan(size, factor * size, parts, index, own, out, need, span, tuple(recv), tuple(send),
                    (factor, factor, 0, 1))


def upsample_plan_2d(size_hw, factors, grid, coords):
    """(row AxisPlan, column AxisPlan) of nearest upsampling on a ``grid`` = (P, Q)."""
    return tuple(upsample_axis_plan(size_hw[i], factors[i], grid[i], coords[i], ("rows", "columns")[i])
                 for i in range(2))


def plan_2d(size_hw, kernel, stride, padding, dilation, grid, coords):
    """(row AxisPlan, column AxisPlan) of the rank at ``coords`` of a ``grid`` = (P, Q)."""
    return tuple(axis_plan(size_hw[i], kernel[i], stride[i], padding[i], dilation[i], grid[i], coords[i],
                           ("rows", "columns")[i]) for i in range(2))


def smallest_grid_note(size_hw, kernel, stride, padding, dilation, grid):
    """A sentence for errors: the largest grid this layer's sizes allow on each axis."""
    fits = []
    for i, name in enumerate(("rows", "columns")):
        n = min(size_hw[i], output_size(size_hw[i], kernel[i], stride[i], padding[i], dilation[i]))
        fits.append(max(1, n))
    return (f"a layer of input {size_hw[0]}x{size_hw[1]} splits into at most {fits[0]}x{fits[1]} "
            f"blocks; use --parallel spatial=PxQ with P <= {fits[0]} and Q <= {fits[1]} "
            f"(grid now {grid[0]}x{grid[1]}), or larger images")
