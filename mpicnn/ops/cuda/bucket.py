"""Bucket flatten/unflatten on ``kernels/bucket.cu``: one launch for all arrays, through
a table of their addresses; same signatures as ``mpicnn.ops.bucket``."""
import numpy as np

from ...backend import array_module
from ..bucket import bucket_offsets
from ._launch import Family, i64, launch1d, writable

K = Family("bucket")


def _table(arrays):
    """(pointer table uint64, offsets int64 in the arrays' module, total), after checks."""
    offsets = bucket_offsets(arrays)
    xp = array_module(arrays[0])
    for i, a in enumerate(arrays):
        if array_module(a) is not xp:
            raise TypeError(f"bucket array {i} is a {type(a).__module__} array, array 0 a "
                            f"{type(arrays[0]).__module__} one")
        writable(a, f"bucket array {i}", a.shape, arrays[0].dtype)
    if xp is np:
        ptrs = np.array([a.ctypes.data for a in arrays], np.uint64)
    else:
        ptrs = xp.asarray(np.array([a.data.ptr for a in arrays], np.uint64))
    return ptrs, xp.asarray(offsets), int(offsets[-1])


def bucket_flatten(arrays, out=None):
    arrays = list(arrays)
    ptrs, offsets, total = _table(arrays)
    dt = arrays[0].dtype
    if out is None:
        out = array_module(arrays[0]).empty(total, dt)
    writable(out, "bucket_flatten out", (total,), dt)
    launch1d(K.fn("bucket_flatten", dt), total, (ptrs, offsets, i64(len(arrays)), out, i64(total)))
    return out


def bucket_unflatten(flat, arrays):
    arrays = list(arrays)
    ptrs, offsets, total = _table(arrays)
    dt = arrays[0].dtype
    flat = array_module(flat).ascontiguousarray(flat)
    if flat.shape != (total,) or flat.dtype != dt:
        raise ValueError(f"bucket_unflatten: flat is {flat.shape!r} {flat.dtype}, the arrays hold "
                         f"({total},) {dt}")
    launch1d(K.fn("bucket_unflatten", dt), total, (flat, ptrs, offsets, i64(len(arrays)), i64(total)))
    return arrays

