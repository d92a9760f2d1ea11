"""Concatenation of two arrays along one axis (a U-Net skip's channels) and its adjoint.

    concat_channels(a, b, axis)   -> concatenate([a, b], axis), contiguous
    split_channels(d, ca, axis)   -> (d[..., :ca, ...], d[..., ca:, ...]) along axis, contiguous

The CUDA kernels of ``kernels/concat.cu`` are checked against these.
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["concat_channels", "split_channels", "concat_geometry"]


def concat_geometry(a_shape, b_shape, axis):
    """(outer, inner, axis) of two shapes that differ only along ``axis``."""
    if len(a_shape) != len(b_shape) or not -len(a_shape) <= axis < len(a_shape):
        raise ValueError(f"cannot concatenate shapes {tuple(a_shape)!r} and {tuple(b_shape)!r} along axis {axis}")
    axis %= len(a_shape)
    if a_shape[:axis] != b_shape[:axis] or a_shape[axis + 1:] != b_shape[axis + 1:]:
        raise ValueError(f"shapes {tuple(a_shape)!r} and {tuple(b_shape)!r} differ outside axis {axis}: "
                         "they cannot be concatenated")
    return int(np.prod(a_shape[:axis], dtype=np.int64)), int(np.prod(a_shape[axis + 1:], dtype=np.int64)), axis


@kernel_version("concat")
def concat_channels(a, b, axis):
    concat_geometry(a.shape, b.shape, axis)
    if a.dtype != b.dtype:
        raise TypeError(f"concat_channels: dtypes {a.dtype!r} and {b.dtype!r} differ")
    return np.concatenate([a, b], axis=axis)


@kernel_version("concat")
def split_channels(d, ca, axis):
    if not 0 <= ca <= d.shape[axis]:
        raise ValueError(f"split_channels: {ca} channels out of {d.shape[axis]} (shape {d.shape!r})")
    da, db = np.split(d, [ca], axis=axis)
    return np.ascontiguousarray(da), np.ascontiguousarray(db)
