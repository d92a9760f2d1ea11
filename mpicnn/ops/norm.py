"""Batch normalisation over every axis but the last (channels-last: (N, H, W, C) or (N, C)).

Training forward (statistics over all samples of all ranks that share the layer):

    count   = number of elements per channel (summed over ranks)
    mean    = sum(x) / count                                  (pass 1, reduced)
    var     = sum((x - mean)^2) / count                        (pass 2, reduced; biased)
    invstd  = 1 / sqrt(var + eps)
    xhat    = (x - mean) * invstd
    y       = xhat * weight + bias

Training backward:

    db      = sum(dy)                                         (reduced)
    dw      = sum(dy * xhat)                                  (reduced)
    dx      = weight * invstd * (dy - db / count - xhat * dw / count)

``dx`` needs the GLOBAL sums of dy and dy*xhat (reduced over the ranks that share the
statistics), but the parameter gradients returned are this rank's LOCAL sums, like
every other layer's: the trainer sums parameter gradients over ranks afterwards.

Eval forward uses given mean/var:  y = (x - mean) / sqrt(var + eps) * weight + bias,
and its backward dx = dy * weight / sqrt(var + eps), dw = sum(dy * xhat), db = sum(dy).

``allreduce(array)`` sums a 1-D float64 array in place over the ranks sharing the
statistics (identity when serial). The two-pass variance makes the distributed result
equal the serial formula within rounding. ``weight``/``bias`` may be None
(affine=False: weight 1, bias 0).

How it is computed (what makes it fast in NumPy; FACTS.md): the (M, C) channels-last
array is viewed as (M/k, k*C) rows of a few thousand values (``_fold``), per-channel
vectors are tiled k times to match, so every elementwise pass runs over long
contiguous rows instead of runs of C values (4-5x faster for C = 16). Per-channel
sums are accumulated in float64 (products of two arrays too, as the CUDA kernels do)
over the folded view, then the k partial sums of each channel are added. Where the
native kernels are built (ops/native.py) each of those steps is one C pass over the
(M, C) rows instead (convnet's first BatchNorm, 64x32x32x16: forward 5.5 -> ~1 ms). The cache is (xhat, invstd, count, weight, training),
the same as the CUDA version's (``ops/cuda/norm.py``; the kernel tests compare them).
"""
import numpy as np

from ..backend import kernel_version
from . import native

__all__ = ["batch_norm_train_forward", "batch_norm_eval_forward", "batch_norm_backward"]

ROW = 4096  # target length of the rows of the folded view (values)
_FOLDS = {}


def _identity(array):
    return array


def _rows(x, name):
    """x (N, ..., C) -> (its row view (M/k, k*C), k, C); a view when x is contiguous."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"{name} expects a floating-point ndarray, got {getattr(x, 'dtype', type(x))!r}")
    if x.ndim < 2:
        raise ValueError(f"{name} expects (N, ..., C) channels-last input, got shape {x.shape!r}")
    C = x.shape[-1]
    M = x.size // C if C else 0
    k = _fold(M, C)
    return np.ascontiguousarray(x).reshape(M // k if k else 0, k * C), k, C


def _fold(M, C):
    """The largest k dividing M with k*C <= ROW (at least 1): rows of k*C values."""
    k = _FOLDS.get((M, C))
    if k is None:
        k = next((d for d in range(min(M, ROW // max(C, 1)), 0, -1) if M % d == 0), 1)
        _FOLDS[M, C] = k
    return k


def _channel_sums(rows, k, C, other=None):
    """Per-channel float64 (C,) sums of a folded (R, k*C) array, or of its product with
    ``other`` (same shape; each product formed in float64)."""
    if other is None:
        partial = np.add.reduce(rows, axis=0, dtype=np.float64)
    else:
        partial = np.einsum("rl,rl->l", rows, other, dtype=np.float64)
    return partial.reshape(k, C).sum(axis=0)


def _tiled(v, k, dtype):
    """Per-channel (C,) vector as a (k*C,) row matching the folded view."""
    return np.tile(np.asarray(v).astype(dtype, copy=False), k)


@kernel_version("norm")
def batch_norm_train_forward(x, weight, bias, eps=1e-5, allreduce=None):
    """Returns (y, cache, mean, var, count): ``mean``/``var`` (biased) are float64 (C,)
    arrays of the global batch, ``count`` the global number of elements per channel,
    ``cache`` what ``batch_norm_backward`` needs."""
    allreduce = allreduce or _identity
    if _native(x):
        return _native_train_forward(x, weight, bias, eps, allreduce)
    xr, k, C = _rows(x, "batch_norm")
    dt = x.dtype
    mean, count = _mean(x.size // C, _channel_sums(xr, k, C), allreduce)
    xhat = np.subtract(xr, _tiled(mean, k, dt))  # centred input, scaled to xhat below
    var, invstd = _variance(_channel_sums(xhat, k, C, xhat), count, eps, allreduce)
    xhat *= _tiled(invstd, k, dt)
    y = _affine(xhat, weight, bias, k, np.empty_like(xhat))
    cache = (xhat.reshape(x.shape), invstd, count, weight, True)
    return y.reshape(x.shape), cache, mean, var, count


@kernel_version("norm")
def batch_norm_eval_forward(x, weight, bias, mean, var, eps=1e-5):
    """Returns (y, cache) normalising with the given (running) ``mean`` and ``var``."""
    xr, k, C = _rows(x, "batch_norm")
    invstd = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps)
    xhat = np.subtract(xr, _tiled(mean, k, x.dtype))
    xhat *= _tiled(invstd, k, x.dtype)
    y = _affine(xhat, weight, bias, k, np.empty_like(xhat))
    return y.reshape(x.shape), (xhat.reshape(x.shape), invstd, None, weight, False)


def _mean(count, sums, allreduce):
    """(mean, count) per channel over the ranks: this rank's ``count`` and float64 ``sums``
    reduced in one call."""
    stats = np.empty(len(sums) + 1, np.float64)
    stats[0], stats[1:] = count, sums
    allreduce(stats)
    if stats[0] < 1:
        raise ValueError(f"batch_norm in training mode needs at least one value per channel, got count {stats[0]!r}")
    return stats[1:] / stats[0], stats[0]


def _variance(squares, count, eps, allreduce):
    """(biased variance, 1/sqrt(variance + eps)) from this rank's sums of squared
    deviations (reduced in place)."""
    allreduce(squares)
    var = squares / count
    return var, 1.0 / np.sqrt(var + eps)


def _native(x):
    return isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) and x.ndim >= 2 \
        and native.available()


def _native_train_forward(x, weight, bias, eps, allreduce):
    """batch_norm_train_forward's formulas, each pass in C over the (M, C) rows."""
    C = x.shape[-1]
    xr = np.ascontiguousarray(x).reshape(-1, C)
    mean, count = _mean(xr.shape[0], native.bn_sums(xr), allreduce)
    xhat, sq = native.bn_center(xr, mean)
    var, invstd = _variance(sq, count, eps, allreduce)
    y = native.bn_scale(xhat, invstd, weight, bias)
    return y.reshape(x.shape), (xhat.reshape(x.shape), invstd, count, weight, True), mean, var, count


def _affine(xhat, weight, bias, k, out):
    """out = xhat * weight + bias (per channel)."""
    if weight is None:
        np.copyto(out, xhat)
    else:
        np.multiply(xhat, _tiled(weight, k, xhat.dtype), out=out)
    if bias is not None:
        out += _tiled(bias, k, xhat.dtype)
    return out


@kernel_version("norm")
def batch_norm_backward(dy, cache, allreduce=None):
    """Returns (dx, dweight, dbias) in dy's dtype; dweight/dbias are this rank's sums."""
    allreduce = allreduce or _identity
    xhat, invstd, count, weight, training = cache
    if dy.shape != xhat.shape:
        raise ValueError(f"batch_norm backward: dy shape {dy.shape!r} differs from x shape {xhat.shape!r}")
    dt = dy.dtype
    g = invstd if weight is None else invstd * weight
    if training and _native(dy) and dy.dtype == xhat.dtype:
        C = dy.shape[-1]
        dyr, xh = np.ascontiguousarray(dy).reshape(-1, C), xhat.reshape(-1, C)
        sums = native.bn_grad_sums(dyr, xh)
        dw_local, db_local = sums[C:].astype(dt), sums[:C].astype(dt)
        allreduce(sums)
        dx = native.bn_grad_input(dyr, xh, sums[C:] / count, sums[:C] / count, g)
        return dx.reshape(dy.shape), dw_local, db_local
    dyr, k, C = _rows(dy, "batch_norm backward")
    xh = xhat.reshape(dyr.shape)
    sums = np.empty(2 * C, np.float64)
    sums[:C] = _channel_sums(dyr, k, C)
    sums[C:] = _channel_sums(dyr, k, C, xh)
    dw_local, db_local = sums[C:].astype(dt), sums[:C].astype(dt)
    if training:
        allreduce(sums)
        db, dw = sums[:C], sums[C:]
        # dx = ((dy - xhat * dw/count) - db/count) * g, in the CUDA kernel's order
        dx = np.multiply(xh, _tiled(dw / count, k, dt))
        np.subtract(dyr, dx, out=dx)
        dx -= _tiled(db / count, k, dt)
        dx *= _tiled(g, k, dt)
    else:
        dx = np.multiply(dyr, _tiled(g, k, dt))
    return dx.reshape(dy.shape), dw_local, db_local
