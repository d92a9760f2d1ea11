"""Pooling on NHWC arrays with ``kernels/pool.cu``; same signatures as ``mpicnn.ops.pool``."""
import numpy as np

from ...backend import array_module, is_array
from ..pool import pool_geometry
from ._launch import COLS_BLOCK, Family, float_array, i64, launch1d

K = Family("pool")


def _geometry_args(xshape, k, s, p, out_hw):
    N, H, W, C = xshape
    return tuple(i64(v) for v in (N, H, W, C, k[0], k[1], s[0], s[1], p[0], p[1], out_hw[0], out_hw[1]))


def _grad(dy, shape, name, dtype=None):
    if not is_array(dy) or tuple(dy.shape) != tuple(shape):
        raise ValueError(f"{name}: expected dy of shape {tuple(shape)!r}, got {getattr(dy, 'shape', dy)!r}")
    dy = float_array(dy, name)
    if dtype is not None and dy.dtype != dtype:
        raise TypeError(f"{name}: dy dtype {dy.dtype!r} differs from x dtype {dtype!r}")
    return dy


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    x = float_array(x, "max_pool2d")
    k, s, p, out_hw = pool_geometry(x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    y = array_module(x).empty((N,) + out_hw + (C,), x.dtype)
    launch1d(K.fn("max_pool_forward", x.dtype), y.size, (x, y) + _geometry_args(x.shape, k, s, p, out_hw))
    return y


def max_pool2d_backward(dy, x, y, kernel_size, stride=None, padding=0):
    x = float_array(x, "max_pool2d backward x", 4)
    k, s, p, out_hw = pool_geometry(x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    yshape = (N,) + out_hw + (C,)
    y = _grad(y, yshape, "max_pool2d backward y", x.dtype)
    if not is_array(dy) or dy.shape != y.shape:
        raise ValueError(f"max_pool2d backward: dy shape {getattr(dy, 'shape', dy)!r} differs "
                         f"from y shape {y.shape!r}")
    dy = _grad(dy, yshape, "max_pool2d backward", x.dtype)
    dx = array_module(x).empty(x.shape, x.dtype)
    launch1d(K.fn("max_pool_backward", x.dtype), dx.size,
             (dy, x, y, dx) + _geometry_args(x.shape, k, s, p, out_hw))
    return dx


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0):
    x = float_array(x, "avg_pool2d")
    k, s, p, out_hw = pool_geometry(x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    y = array_module(x).empty((N,) + out_hw + (C,), x.dtype)
    scale = x.dtype.type(1.0 / (k[0] * k[1]))
    launch1d(K.fn("avg_pool_forward", x.dtype), y.size,
             (x, y) + _geometry_args(x.shape, k, s, p, out_hw) + (scale,))
    return y


def avg_pool2d_backward(dy, xshape, kernel_size, stride=None, padding=0):
    k, s, p, out_hw = pool_geometry(xshape, kernel_size, stride, padding)
    N, H, W, C = xshape
    dy = _grad(dy, (N,) + out_hw + (C,), "avg_pool2d backward")
    dx = array_module(dy).empty(tuple(xshape), dy.dtype)
    scale = dy.dtype.type(1.0 / (k[0] * k[1]))
    launch1d(K.fn("avg_pool_backward", dy.dtype), dx.size,
             (dy, dx) + _geometry_args(xshape, k, s, p, out_hw) + (scale,))
    return dx


def _global_grid(N, C):
    """(channel tiles, samples): blockIdx.y strides over the samples (CUDA caps it at 65535)."""
    return (max(1, (C + COLS_BLOCK[0] - 1) // COLS_BLOCK[0]), max(1, min(N, 65535)))


def global_avg_pool_forward(x):
    x = float_array(x, "global_avg_pool", 4)
    N, H, W, C = x.shape
    y = array_module(x).empty((N, C), x.dtype)
    K.fn("global_avg_pool_forward", x.dtype)(_global_grid(N, C), COLS_BLOCK,
                                             (x, y, i64(N), i64(H * W), i64(C)))
    return y


def global_avg_pool_backward(dy, xshape):
    N, H, W, C = xshape
    dy = _grad(dy, (N, C), "global_avg_pool backward")
    dx = array_module(dy).empty(tuple(xshape), dy.dtype)
    launch1d(K.fn("global_avg_pool_backward", dy.dtype), dx.size,
             (dy, dx, i64(N), i64(H * W), i64(C), dy.dtype.type(1.0 / (H * W))))
    return dx


def global_max_pool_forward(x):
    """x (N,H,W,C) -> (y (N,C), index (N,C) int64 of the first maximum in h*W + w order)."""
    x = float_array(x, "global_max_pool", 4)
    N, H, W, C = x.shape
    xp = array_module(x)
    y = xp.empty((N, C), x.dtype)
    index = xp.empty((N, C), np.int64)
    K.fn("global_max_pool_forward", x.dtype)(_global_grid(N, C), COLS_BLOCK,
                                             (x, y, index, i64(N), i64(H * W), i64(C)))
    return y, index


def global_max_pool_backward(dy, index, xshape):
    N, H, W, C = xshape
    dy = _grad(dy, (N, C), "global_max_pool backward")
    if not is_array(index) or tuple(index.shape) != (N, C):
        raise ValueError(f"global_max_pool backward: index must have shape {(N, C)!r}, got "
                         f"{getattr(index, 'shape', index)!r}")
    xp = array_module(dy)
    index = xp.ascontiguousarray(index, dtype=np.int64)
    dx = xp.empty(tuple(xshape), dy.dtype)
    launch1d(K.fn("global_max_pool_backward", dy.dtype), dx.size,
             (dy, index, dx, i64(N), i64(H * W), i64(C)))
    return dx


def global_rms_pool_forward(x, eps=0.0):
    x = float_array(x, "global_rms_pool", 4)
    N, H, W, C = x.shape
    y = array_module(x).empty((N, C), x.dtype)
    K.fn("global_rms_pool_forward", x.dtype)(_global_grid(N, C), COLS_BLOCK,
                                             (x, y, i64(N), i64(H * W), i64(C), np.float64(eps)))
    return y


def global_rms_pool_backward(dy, x, y):
    x = float_array(x, "global_rms_pool backward x", 4)
    N, H, W, C = x.shape
    dy = _grad(dy, (N, C), "global_rms_pool backward", x.dtype)
    y = _grad(y, (N, C), "global_rms_pool backward y", x.dtype)
    dx = array_module(x).empty(x.shape, x.dtype)
    launch1d(K.fn("global_rms_pool_backward", x.dtype), dx.size,
             (dy, x, y, dx, i64(N), i64(H * W), i64(C), x.dtype.type(H * W)))
    return dx
