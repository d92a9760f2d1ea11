"""3-D pooling and nearest upsampling with ``kernels/pool3d.cu``; same signatures and
results as ``mpicnn.ops.pool3d`` (NCDHW volumes; upsampling of 4-D or 5-D arrays)."""
import numpy as np

from ...backend import array_module, is_array
from ..pool3d import pool3d_output_shape
from ._launch import Family, float_array, i64, launch1d

K = Family("pool3d")


def _geometry(shape, kernel, stride, padding, name):
    if len(shape) != 5:
        raise ValueError(f"{name} expects a 5-D NCDHW array, got shape {tuple(shape)!r}")
    out = pool3d_output_shape(shape[2:], kernel, stride, padding)
    if min(out) < 1:
        raise ValueError(f"pool3d input of spatial size {tuple(shape[2:])!r} is smaller than kernel "
                         f"{kernel!r} with padding {padding!r}")
    N, C, D, H, W = shape
    return out, tuple(i64(v) for v in (N * C, D, H, W) + tuple(kernel) + tuple(stride) + tuple(padding) + out)


def _grad(dy, shape, name):
    if not is_array(dy) or tuple(dy.shape) != tuple(shape):
        raise ValueError(f"{name}: expected dy of shape {tuple(shape)!r}, got {getattr(dy, 'shape', dy)!r}")
    return float_array(dy, name)


def max_pool3d_forward(x, kernel, stride, padding):
    """Returns (y, index (N, C, Do, Ho, Wo) int64 flat window offsets of the first maxima)."""
    x = float_array(x, "max_pool3d")
    out, args = _geometry(x.shape, kernel, stride, padding, "max_pool3d")
    xp = array_module(x)
    y = xp.empty(x.shape[:2] + out, x.dtype)
    index = xp.empty(y.shape, np.int64)
    launch1d(K.fn("max_pool3d_forward", x.dtype), y.size, (x, y, index) + args)
    return y, index


def max_pool3d_backward(dy, index, xshape, kernel, stride, padding):
    out, args = _geometry(xshape, kernel, stride, padding, "max_pool3d backward")
    dy = _grad(dy, tuple(xshape[:2]) + out, "max_pool3d backward")
    xp = array_module(dy)
    if not is_array(index) or tuple(index.shape) != dy.shape:
        raise ValueError(f"max_pool3d backward: index shape {getattr(index, 'shape', index)!r} differs "
                         f"from dy shape {dy.shape!r}")
    index = xp.ascontiguousarray(index, dtype=np.int64)
    dx = xp.empty(tuple(xshape), dy.dtype)
    launch1d(K.fn("max_pool3d_backward", dy.dtype), dx.size, (dy, index, dx) + args)
    return dx


def avg_pool3d_forward(x, kernel, stride, padding):
    x = float_array(x, "avg_pool3d")
    out, args = _geometry(x.shape, kernel, stride, padding, "avg_pool3d")
    y = array_module(x).empty(x.shape[:2] + out, x.dtype)
    launch1d(K.fn("avg_pool3d_forward", x.dtype), y.size, (x, y) + args)
    return y


def avg_pool3d_backward(dy, xshape, kernel, stride, padding):
    out, args = _geometry(xshape, kernel, stride, padding, "avg_pool3d backward")
    dy = _grad(dy, tuple(xshape[:2]) + out, "avg_pool3d backward")
    dx = array_module(dy).empty(tuple(xshape), dy.dtype)
    launch1d(K.fn("avg_pool3d_backward", dy.dtype), dx.size, (dy, dx) + args)
    return dx


def _factors5(ndim, factors, axes):
    """Per-axis factors of an array of ``ndim`` <= 5 axes, padded to 5 with leading 1s."""
    if ndim > 5 or len(factors) != len(axes):
        raise ValueError(f"upsample: {len(factors)} factors for axes {axes!r} of a {ndim}-D array "
                         "(at most 5-D)")
    f = [1] * ndim
    for factor, ax in zip(factors, axes):
        f[ax] = int(factor)
    return [1] * (5 - ndim) + f


def upsample_nearest_forward(x, factors, axes):
    x = float_array(x, "upsample_nearest")
    f = _factors5(x.ndim, factors, axes)
    s = [1] * (5 - x.ndim) + list(x.shape)
    y = array_module(x).empty(tuple(n * k for n, k in zip(x.shape, f[5 - x.ndim:])), x.dtype)
    launch1d(K.fn("upsample_nearest_forward", x.dtype), y.size, (x, y) + tuple(i64(v) for v in s + f))
    return y


def upsample_nearest_backward(dy, factors, axes):
    dy = float_array(dy, "upsample_nearest backward")
    f = _factors5(dy.ndim, factors, axes)
    full = [1] * (5 - dy.ndim) + list(dy.shape)
    if any(n % k for n, k in zip(full, f)):
        raise ValueError(f"upsample_nearest backward: dy shape {dy.shape!r} is not a multiple of the "
                         f"factors {tuple(factors)!r} along axes {tuple(axes)!r}")
    s = [n // k for n, k in zip(full, f)]
    dx = array_module(dy).empty(tuple(s[5 - dy.ndim:]), dy.dtype)
    launch1d(K.fn("upsample_nearest_backward", dy.dtype), dx.size, (dy, dx) + tuple(i64(v) for v in s + f))
    return dx
