"""Box pack/unpack of channels-first volumes: the local half of a 3-D halo exchange.

A box is depths ``d0:d1``, rows ``h0:h1`` and columns ``w0:w1`` of every sample and
channel of an (N, C, D, H, W) array; ``box`` is ((d0, d1), (h0, h1), (w0, w1)).

    halo3d_pack(x, box)              -> buf (N, C, d1-d0, h1-h0, w1-w0), contiguous (to send)
    halo3d_unpack(buf, x, box)       x[:, :, d0:d1, h0:h1, w0:w1] = buf    (received halo)
    halo3d_unpack(..., add=True)     ... += buf   (backward: ghost gradients go to their owner)

The CUDA kernels of ``kernels/halo3d.cu`` are checked against these.
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["halo3d_pack", "halo3d_unpack", "box_bounds"]


def box_bounds(shape, box):
    """Validated ((d0, d1), (h0, h1), (w0, w1)) of a box of an (N, C, D, H, W) array."""
    if len(shape) != 5 or len(box) != 3:
        raise ValueError(f"halo boxes need a 5-D NCDHW array and three (start, stop) pairs, got shape "
                         f"{tuple(shape)!r} and box {box!r}")
    out = []
    for name, (a, b), size in zip(("depths", "rows", "cols"), box, shape[2:]):
        a, b = int(a), int(b)
        if not 0 <= a <= b <= size:
            raise ValueError(f"halo box {name} {(a, b)!r} must satisfy 0 <= start <= stop <= {size}")
        out.append((a, b))
    return tuple(out)


def _index(box):
    return (slice(None), slice(None)) + tuple(slice(a, b) for a, b in box)


@kernel_version("halo3d")
def halo3d_pack(x, box):
    """Copy the box of NCDHW ``x`` into a contiguous buffer."""
    return np.ascontiguousarray(x[_index(box_bounds(x.shape, box))])


@kernel_version("halo3d")
def halo3d_unpack(buf, x, box, add=False):
    """Write (or with ``add`` accumulate) ``buf`` into the box of ``x``, in place; returns x."""
    view = x[_index(box_bounds(x.shape, box))]
    if view.shape != buf.shape:
        raise ValueError(f"halo3d_unpack buffer {buf.shape!r} does not fit box {view.shape!r}")
    if add:
        view += buf
    else:
        view[...] = buf
    return x
