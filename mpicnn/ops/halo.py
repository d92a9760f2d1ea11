"""Slab pack/unpack of channels-last tensors: the local half of a halo exchange.

A slab is rows ``r0:r1`` and columns ``c0:c1`` of every sample, all channels, of an
(N, H, W, C) array; ``rows`` and ``cols`` are (start, stop) pairs.

    halo_pack(x, rows, cols)            -> buf (N, r1-r0, c1-c0, C), contiguous (to send)
    halo_unpack(buf, x, rows, cols)     x[:, r0:r1, c0:c1] = buf       (received halo)
    halo_unpack(..., add=True)          x[:, r0:r1, c0:c1] += buf      (backward: ghost
                                        gradients are added into their owner)

The CUDA kernels of ``kernels/halo.cu`` are checked against these.
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["halo_pack", "halo_unpack", "slab_bounds"]


def slab_bounds(shape, rows, cols):
    """Validated ((r0, r1), (c0, c1)) of a slab of an (N, H, W, C) array."""
    if len(shape) != 4:
        raise ValueError(f"halo slabs need a 4-D NHWC array, got shape {tuple(shape)!r}")
    H, W = shape[1], shape[2]
    out = []
    for name, (a, b), size in (("rows", rows, H), ("cols", cols, W)):
        a, b = int(a), int(b)
        if not 0 <= a <= b <= size:
            raise ValueError(f"halo slab {name} {(a, b)!r} must satisfy 0 <= start <= stop <= {size}")
        out.append((a, b))
    return tuple(out)


@kernel_version("halo")
def halo_pack(x, rows, cols, out=None):
    """Copy rows ``rows`` x cols ``cols`` of NHWC ``x`` into a contiguous buffer."""
    (r0, r1), (c0, c1) = slab_bounds(x.shape, rows, cols)
    if out is None:
        out = np.empty((x.shape[0], r1 - r0, c1 - c0, x.shape[3]), x.dtype)
    np.copyto(out, x[:, r0:r1, c0:c1])
    return out


@kernel_version("halo")
def halo_unpack(buf, x, rows, cols, add=False):
    """Write (or with ``add`` accumulate) ``buf`` into the slab of ``x``, in place; returns x."""
    (r0, r1), (c0, c1) = slab_bounds(x.shape, rows, cols)
    view = x[:, r0:r1, c0:c1]
    if view.shape != buf.shape:
        raise ValueError(f"halo_unpack buffer {buf.shape!r} does not fit slab {view.shape!r}")
    if add:
        view += buf
    else:
        view[...] = buf
    return x
