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
statistics (identity when serial). Per-channel sums are accumulated in float64 and
the two-pass variance makes the distributed result equal the serial formula within
rounding. ``weight``/``bias`` may be None (affine=False: weight 1, bias 0).
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["batch_norm_train_forward", "batch_norm_eval_forward", "batch_norm_backward"]


def _identity(array):
    return array


def _channels(x, name):
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"{name} expects a floating-point ndarray, got {getattr(x, 'dtype', type(x))!r}")
    if x.ndim < 2:
        raise ValueError(f"{name} expects (N, ..., C) channels-last input, got shape {x.shape!r}")
    return x.reshape(-1, x.shape[-1])


@kernel_version("norm")
def batch_norm_train_forward(x, weight, bias, eps=1e-5, allreduce=None):
    """Returns (y, cache, mean, var, count): ``mean``/``var`` (biased) are float64 (C,)
    arrays of the global batch, ``count`` the global number of elements per channel,
    ``cache`` what ``batch_norm_backward`` needs."""
    allreduce = allreduce or _identity
    x2 = _channels(x, "batch_norm")
    C = x2.shape[1]
    stats = np.empty(C + 1, np.float64)
    stats[0] = x2.shape[0]
    np.add.reduce(x2, axis=0, dtype=np.float64, out=stats[1:])
    allreduce(stats)
    count = stats[0]
    if count < 1:
        raise ValueError(f"batch_norm in training mode needs at least one value per channel, got count {count!r}")
    mean = stats[1:] / count
    xc = x2 - mean.astype(x.dtype)  # centred input, reused as xhat below
    sq = np.einsum("mc,mc->c", xc, xc, dtype=np.float64)
    allreduce(sq)
    var = sq / count
    invstd = 1.0 / np.sqrt(var + eps)
    xc *= invstd.astype(x.dtype)
    xhat = xc
    y = _affine(xhat, weight, bias)
    cache = (xhat.reshape(x.shape), invstd, count, weight, True)
    return y.reshape(x.shape), cache, mean, var, count


@kernel_version("norm")
def batch_norm_eval_forward(x, weight, bias, mean, var, eps=1e-5):
    """Returns (y, cache) normalising with the given (running) ``mean`` and ``var``."""
    x2 = _channels(x, "batch_norm")
    invstd = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps)
    xhat = (x2 - np.asarray(mean).astype(x.dtype)) * invstd.astype(x.dtype)
    y = _affine(xhat, weight, bias)
    return y.reshape(x.shape), (xhat.reshape(x.shape), invstd, None, weight, False)


def _affine(xhat, weight, bias):
    y = xhat * weight if weight is not None else xhat.copy()
    if bias is not None:
        y += bias
    return y


@kernel_version("norm")
def batch_norm_backward(dy, cache, allreduce=None):
    """Returns (dx, dweight, dbias) in dy's dtype; dweight/dbias are this rank's sums."""
    allreduce = allreduce or _identity
    xhat, invstd, count, weight, training = cache
    if dy.shape != xhat.shape:
        raise ValueError(f"batch_norm backward: dy shape {dy.shape!r} differs from x shape {xhat.shape!r}")
    dy2 = dy.reshape(-1, dy.shape[-1])
    xh2 = xhat.reshape(dy2.shape)
    C = dy2.shape[1]
    sums = np.empty(2 * C, np.float64)
    np.add.reduce(dy2, axis=0, dtype=np.float64, out=sums[:C])
    sums[C:] = np.einsum("mc,mc->c", dy2, xh2, dtype=np.float64)
    dw_local, db_local = sums[C:].astype(dy.dtype), sums[:C].astype(dy.dtype)
    g = invstd if weight is None else invstd * weight
    if training:
        allreduce(sums)
        db, dw = sums[:C], sums[C:]
        # dx = g * (dy - db/count - xhat * dw/count)
        dx = xh2 * (dw / count).astype(dy.dtype)
        np.subtract(dy2, dx, out=dx)
        dx -= (db / count).astype(dy.dtype)
        dx *= g.astype(dy.dtype)
    else:
        dx = dy2 * g.astype(dy.dtype)
    return dx.reshape(dy.shape), dw_local, db_local
