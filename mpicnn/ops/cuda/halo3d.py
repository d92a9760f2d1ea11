"""Box pack/unpack of NCDHW volumes on ``kernels/halo3d.cu``; as ``mpicnn.ops.halo3d``."""
import numpy as np

from ...backend import array_module
from ..halo3d import box_bounds
from ._launch import Family, float_array, i64, launch1d, writable

K = Family("halo3d")


def _args(shape, box):
    N, C, D, H, W = shape
    return tuple(i64(v) for v in (N * C, D, H, W) + sum(box, ()))


def halo3d_pack(x, box):
    x = float_array(x, "halo3d_pack", 5)
    box = box_bounds(x.shape, box)
    out = array_module(x).empty(x.shape[:2] + tuple(b - a for a, b in box), x.dtype)
    launch1d(K.fn("halo3d_pack", x.dtype), out.size, (x, out) + _args(x.shape, box))
    return out


def halo3d_unpack(buf, x, box, add=False):
    writable(x, "halo3d_unpack target", x.shape, x.dtype)
    box = box_bounds(x.shape, box)
    buf = float_array(buf, "halo3d_unpack buffer")
    want = x.shape[:2] + tuple(b - a for a, b in box)
    if buf.shape != want or buf.dtype != x.dtype:
        raise ValueError(f"halo3d_unpack buffer {buf.shape!r} {buf.dtype} does not fit box {box!r} of "
                         f"{x.shape!r} {x.dtype}")
    launch1d(K.fn("halo3d_unpack", x.dtype), buf.size, (buf, x) + _args(x.shape, box) + (np.int32(bool(add)),))
    return x
