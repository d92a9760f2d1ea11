"""Losses of dense prediction: per-pixel/per-voxel cross-entropy and mean squared error.

Cross-entropy on logits (N, K, *spatial) (or (N, K)) and integer targets (N, *spatial),
as ``torch.nn.functional.cross_entropy(reduction="mean")``:

    w_i      = weight[t_i] (1 without weights), 0 where t_i == ignore_index
    loss     = -sum_i w_i * logsoftmax(z_i)[t_i] / total,   total = sum_i w_i unless given
    dlogits  = w_i * (softmax(z_i) - onehot(t_i)) / total

``total`` is passed when this rank holds part of the batch or of the map: the divisor of
the global mean (the weight sum over all ranks). Accumulated in float64, returned as a
float.

Mean squared error: loss = sum((pred - target)^2) / total, total = pred.size unless
given; dpred = 2 (pred - target) / total.

With the emu or cupy backend the ops run ``mpicnn.ops.cuda.dense_loss``
(``kernels/dense_loss.cu``); their caches are their own (forward and backward must run
on the same backend).
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["dense_cross_entropy_forward", "dense_cross_entropy_backward", "mse_forward",
           "mse_backward", "class_last"]


def class_last(logits):
    """(N, K, *spatial) -> (M, K) rows, one per sample and position (a copy when ndim > 2)."""
    if logits.ndim == 2:
        return logits
    K = logits.shape[1]
    return np.moveaxis(logits, 1, -1).reshape(-1, K)


def _check(logits, targets, weight, ignore_index):
    if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f" or logits.ndim < 2:
        raise ValueError(f"cross_entropy expects float logits of shape (N, K, ...), got "
                         f"{getattr(logits, 'shape', type(logits))!r}")
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy targets must be integers, got dtype {targets.dtype!r}")
    want = (logits.shape[0],) + logits.shape[2:]
    if targets.shape != want:
        raise ValueError(f"cross_entropy targets must have shape {want!r} for logits "
                         f"{logits.shape!r}, got {targets.shape!r}")
    K = logits.shape[1]
    t = targets.reshape(-1).astype(np.int64)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= K))
    if bad.any():
        raise ValueError(f"cross_entropy target {int(t[bad][0])!r} out of range [0, {K}) "
                         f"(and not ignore_index={ignore_index!r})")
    if weight is not None and tuple(np.shape(weight)) != (K,):
        raise ValueError(f"cross_entropy weight must have shape {(K,)!r}, got {np.shape(weight)!r}")
    return t, valid


@kernel_version("dense_loss")
def dense_cross_entropy_forward(logits, targets, weight=None, ignore_index=-100, total=None):
    """Returns (loss, cache, n_correct, n_counted, weight_sum): ``n_correct`` counts the
    non-ignored positions whose argmax is the target, ``weight_sum`` is this rank's
    sum of w_i (the default divisor)."""
    t, valid = _check(logits, targets, weight, ignore_index)
    z = class_last(logits)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    safe = np.where(valid, t, 0)
    logp = np.take_along_axis(z, safe[:, None], axis=1)[:, 0].astype(np.float64) \
        - np.log(s[:, 0].astype(np.float64))
    w = valid.astype(np.float64)
    if weight is not None:
        w *= np.asarray(weight, np.float64)[safe]
    weight_sum = float(w.sum())
    divisor = weight_sum if total is None else float(total)
    loss = float(-(w * logp).sum() / divisor) if divisor else float("nan")
    correct = int(np.count_nonzero(valid & (np.argmax(z, axis=1) == t)))
    cache = (e / s, safe, w, divisor, logits.shape)
    return loss, cache, correct, int(valid.sum()), weight_sum


@kernel_version("dense_loss")
def dense_cross_entropy_backward(cache):
    """dlogits in the logits' layout and dtype."""
    probs, t, w, divisor, shape = cache
    d = probs.copy()
    d[np.arange(d.shape[0]), t] -= 1
    d *= (w / divisor if divisor else 0 * w).astype(d.dtype)[:, None]
    if len(shape) == 2:
        return d
    return np.ascontiguousarray(np.moveaxis(d.reshape((shape[0],) + shape[2:] + (shape[1],)), -1, 1))


@kernel_version("dense_loss")
def mse_forward(pred, target, total=None):
    """Returns (loss, diff) with diff = pred - target (what backward needs)."""
    if not isinstance(pred, np.ndarray) or pred.dtype.kind != "f":
        raise ValueError(f"mse expects a float array, got {getattr(pred, 'dtype', type(pred))!r}")
    target = np.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"mse target shape {target.shape!r} differs from prediction shape {pred.shape!r}")
    diff = pred - target.astype(pred.dtype)
    total = pred.size if total is None else total
    return float(np.sum(diff.astype(np.float64) ** 2) / total), (diff, total)


@kernel_version("dense_loss")
def mse_backward(cache):
    diff, total = cache
    return diff * diff.dtype.type(2.0 / total)
