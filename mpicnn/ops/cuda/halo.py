"""Slab pack/unpack for halo exchanges on ``kernels/halo.cu``; as ``mpicnn.ops.halo``."""
import numpy as np

from ...backend import array_module
from ..halo import slab_bounds
from ._launch import Family, float_array, i64, launch1d, writable

K = Family("halo")


def halo_pack(x, rows, cols, out=None):
    x = float_array(x, "halo_pack", 4)
    (r0, r1), (c0, c1) = slab_bounds(x.shape, rows, cols)
    N, H, W, C = x.shape
    shape = (N, r1 - r0, c1 - c0, C)
    out = array_module(x).empty(shape, x.dtype) if out is None else writable(out, "halo_pack out", shape, x.dtype)
    launch1d(K.fn("halo_pack", x.dtype), out.size,
             (x, out) + tuple(i64(v) for v in (N, H, W, C, r0, r1, c0, c1)))
    return out


def halo_unpack(buf, x, rows, cols, add=False):
    writable(x, "halo_unpack target", x.shape, x.dtype)
    if x.ndim != 4:
        raise ValueError(f"halo_unpack expects a 4-D NHWC target, got shape {x.shape!r}")
    (r0, r1), (c0, c1) = slab_bounds(x.shape, rows, cols)
    N, H, W, C = x.shape
    buf = float_array(buf, "halo_unpack buffer")
    if buf.shape != (N, r1 - r0, c1 - c0, C) or buf.dtype != x.dtype:
        raise ValueError(f"halo_unpack buffer {buf.shape!r} {buf.dtype} does not fit slab rows "
                         f"{(r0, r1)!r} cols {(c0, c1)!r} of {x.shape!r} {x.dtype}")
    launch1d(K.fn("halo_unpack", x.dtype), buf.size,
             (buf, x) + tuple(i64(v) for v in (N, H, W, C, r0, r1, c0, c1)) + (np.int32(bool(add)),))
    return x
