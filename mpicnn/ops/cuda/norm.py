"""Batch normalisation with ``kernels/norm.cu``; same signatures as ``mpicnn.ops.norm``.

The per-channel sums are reduced on the device, copied to the host as float64 (C,)
vectors (a few bytes), handed to ``allreduce`` there (MPI sees host memory only) and
the per-channel factors are computed on the host exactly as the NumPy op does, then
sent back, all the vectors a kernel needs in one copy: per layer and training step,
three copies to the host (sums, squared deviations, gradient sums) and three back.
The cache has the NumPy op's layout (xhat, invstd float64 on the host, count, weight,
training).
"""
import numpy as np

from ...backend import array_module, is_array, to_host
from ._launch import COLS_BLOCK, Family, float_array, i64, launch1d, like, partial_rows

K = Family("norm")


def _identity(array):
    return array


def _channels(x, name):
    if not is_array(x) or x.dtype.kind != "f":
        raise TypeError(f"{name} expects a floating-point ndarray, got {getattr(x, 'dtype', type(x))!r}")
    if x.ndim < 2:
        raise ValueError(f"{name} expects (N, ..., C) channels-last input, got shape {x.shape!r}")
    x = float_array(x, name)
    return x.reshape(-1, x.shape[-1])


def _column_sums(kernel, arrays, rows, C, width):
    """Two-stage per-channel sums of ``width`` values per row-block -> host float64."""
    xp = array_module(arrays[0])
    P = partial_rows(rows)
    partial = xp.empty((P, width), xp.float64)
    grid = (max(1, (C + COLS_BLOCK[0] - 1) // COLS_BLOCK[0]), P)
    kernel(grid, COLS_BLOCK, tuple(arrays) + (partial, i64(rows), i64(C)))
    out = xp.empty(width, xp.float64)
    launch1d(K.fn("bn_finish"), width, (partial, out, i64(P), i64(width)))
    return to_host(out)


def _affine(x, weight, bias, C):
    dt = x.dtype
    w = like(x, np.ones(C, dt) if weight is None else weight, dt)
    b = like(x, np.zeros(C, dt) if bias is None else bias, dt)
    return w, b


def _to_device(x, *vectors):
    """Host float64 vectors -> views of ONE copy of them in x's array module."""
    block = array_module(x).asarray(np.concatenate(vectors))
    edges = np.cumsum([0] + [v.size for v in vectors])
    return [block[a:b] for a, b in zip(edges[:-1], edges[1:])]


def _normalize(x2, mean, invstd, weight, bias):
    """``mean`` and ``invstd``: (C,) vectors of x's dtype, in x's array module."""
    rows, C = x2.shape
    xp, dt = array_module(x2), x2.dtype
    w, b = _affine(x2, weight, bias, C)
    xhat = xp.empty_like(x2)
    y = xp.empty_like(x2)
    launch1d(K.fn("bn_normalize", dt), x2.size, (x2, mean, invstd, w, b, xhat, y, i64(rows), i64(C)))
    return xhat, y


def batch_norm_train_forward(x, weight, bias, eps=1e-5, allreduce=None):
    """Returns (y, cache, mean, var, count) as the NumPy op (mean/var float64 (C,) arrays
    in x's array module)."""
    allreduce = allreduce or _identity
    x2 = _channels(x, "batch_norm")
    rows, C = x2.shape
    dt = x2.dtype
    stats = np.empty(C + 1, np.float64)
    stats[0] = rows
    stats[1:] = _column_sums(K.fn("bn_sum_partial", dt), (x2,), rows, C, C)
    allreduce(stats)
    count = stats[0]
    if count < 1:
        raise ValueError(f"batch_norm in training mode needs at least one value per channel, got count {count!r}")
    mean = stats[1:] / count
    mean_dt = like(x2, mean.astype(dt), dt)
    sq = _column_sums(K.fn("bn_sqdev_partial", dt), (x2, mean_dt), rows, C, C)
    allreduce(sq)
    var = sq / count
    invstd = 1.0 / np.sqrt(var + eps)
    mean_d, var_d, invstd_d = _to_device(x2, mean, var, invstd)
    xhat, y = _normalize(x2, mean_dt, invstd_d.astype(dt), weight, bias)
    cache = (xhat.reshape(x.shape), invstd, count, weight, True)
    return y.reshape(x.shape), cache, mean_d, var_d, count


def batch_norm_eval_forward(x, weight, bias, mean, var, eps=1e-5):
    """Returns (y, cache) normalising with the given (running) ``mean`` and ``var``."""
    x2 = _channels(x, "batch_norm")
    dt = x2.dtype
    invstd = 1.0 / np.sqrt(to_host(var).astype(np.float64) + eps)
    xhat, y = _normalize(x2, like(x2, to_host(mean).astype(dt), dt), like(x2, invstd.astype(dt), dt),
                         weight, bias)
    return y.reshape(x.shape), (xhat.reshape(x.shape), invstd, None, weight, False)


def batch_norm_backward(dy, cache, allreduce=None):
    """Returns (dx, dweight, dbias) in dy's dtype; dweight/dbias are this rank's sums."""
    allreduce = allreduce or _identity
    xhat, invstd, count, weight, training = cache
    if not is_array(dy) or dy.shape != xhat.shape:
        raise ValueError(f"batch_norm backward: dy shape {getattr(dy, 'shape', dy)!r} differs "
                         f"from x shape {xhat.shape!r}")
    dy2 = _channels(dy, "batch_norm backward")
    xh2 = float_array(xhat, "batch_norm backward xhat").reshape(dy2.shape)
    rows, C = dy2.shape
    xp, dt = array_module(dy2), dy2.dtype
    sums = _column_sums(K.fn("bn_grad_partial", dt), (dy2, xh2), rows, C, 2 * C)
    dx = xp.empty_like(dy2)
    if training:
        local = sums.copy()
        allreduce(sums)
        db, dw = sums[:C], sums[C:]
        local, dw_mean, db_mean, invstd_d = _to_device(dy2, local, dw / count, db / count, invstd)
    else:
        local, invstd_d = _to_device(dy2, sums, invstd)
    g = invstd_d if weight is None else invstd_d * like(dy2, weight, weight.dtype)  # float64, as the NumPy op
    if training:
        launch1d(K.fn("bn_backward_train", dt), dy2.size,
                 (dy2, xh2, dw_mean.astype(dt), db_mean.astype(dt), g.astype(dt), dx, i64(rows), i64(C)))
    else:
        launch1d(K.fn("bn_backward_eval", dt), dy2.size, (dy2, g.astype(dt), dx, i64(rows), i64(C)))
    return dx.reshape(dy.shape), local[C:].astype(dt), local[:C].astype(dt)
