"""Concatenation along one axis with ``kernels/concat.cu``; as ``mpicnn.ops.concat``."""
from ...backend import array_module
from ..concat import concat_geometry
from ._launch import Family, float_array, i64, launch1d

K = Family("concat")


def concat_channels(a, b, axis):
    a, b = float_array(a, "concat_channels"), float_array(b, "concat_channels")
    outer, inner, axis = concat_geometry(a.shape, b.shape, axis)
    if a.dtype != b.dtype:
        raise TypeError(f"concat_channels: dtypes {a.dtype!r} and {b.dtype!r} differ")
    ca, cb = a.shape[axis], b.shape[axis]
    out = array_module(a).empty(a.shape[:axis] + (ca + cb,) + a.shape[axis + 1:], a.dtype)
    launch1d(K.fn("concat_channels", a.dtype), out.size, (a, b, out) + tuple(i64(v) for v in (outer, ca, cb, inner)))
    return out


def split_channels(d, ca, axis):
    d = float_array(d, "split_channels")
    axis %= d.ndim
    c = d.shape[axis]
    if not 0 <= ca <= c:
        raise ValueError(f"split_channels: {ca} channels out of {c} (shape {d.shape!r})")
    xp = array_module(d)
    da = xp.empty(d.shape[:axis] + (ca,) + d.shape[axis + 1:], d.dtype)
    db = xp.empty(d.shape[:axis] + (c - ca,) + d.shape[axis + 1:], d.dtype)
    outer, inner, _ = concat_geometry(da.shape, db.shape, axis)
    launch1d(K.fn("split_channels", d.dtype), d.size, (d, da, db) + tuple(i64(v) for v in (outer, ca, c - ca, inner)))
    return da, db
