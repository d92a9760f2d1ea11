"""Gradient-bucket flatten/unflatten: many arrays <-> one flat buffer, back to back.

    bucket_flatten(arrays, out=None) -> flat (sum of sizes,), arrays in order
    bucket_unflatten(flat, arrays)   copies the pieces back into ``arrays`` in place

All arrays share one dtype. The CUDA kernels of ``kernels/bucket.cu`` (one launch for
the whole list, through a pointer table) are checked against these.
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["bucket_flatten", "bucket_unflatten", "bucket_offsets"]


def bucket_offsets(arrays):
    """int64 (len(arrays) + 1,) start offsets; checks the arrays share one dtype."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("a bucket needs at least one array")
    dtype = arrays[0].dtype
    for i, a in enumerate(arrays):
        if a.dtype != dtype:
            raise TypeError(f"bucket arrays must share one dtype: array {i} is {a.dtype!r}, "
                            f"array 0 is {dtype!r}")
    return np.cumsum([0] + [a.size for a in arrays], dtype=np.int64)


@kernel_version("bucket")
def bucket_flatten(arrays, out=None):
    arrays = list(arrays)
    offsets = bucket_offsets(arrays)
    if out is None:
        out = np.empty(int(offsets[-1]), arrays[0].dtype)
    elif out.shape != (offsets[-1],) or out.dtype != arrays[0].dtype:
        raise ValueError(f"bucket_flatten out {out.shape!r} {out.dtype} must be ({int(offsets[-1])},) "
                         f"{arrays[0].dtype}")
    for a, lo, hi in zip(arrays, offsets[:-1], offsets[1:]):
        out[lo:hi] = a.reshape(-1)
    return out


@kernel_version("bucket")
def bucket_unflatten(flat, arrays):
    arrays = list(arrays)
    offsets = bucket_offsets(arrays)
    if flat.shape != (offsets[-1],):
        raise ValueError(f"bucket_unflatten: flat has shape {flat.shape!r}, the arrays hold "
                         f"{int(offsets[-1])} values")
    for a, lo, hi in zip(arrays, offsets[:-1], offsets[1:]):
        a[...] = flat[lo:hi].reshape(a.shape)
    return arrays
