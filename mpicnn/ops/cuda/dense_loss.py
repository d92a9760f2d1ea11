"""Dense-prediction losses on ``kernels/dense_loss.cu``; same signatures and figures as
``mpicnn.ops.dense_loss``. The caches are this module's own: the probabilities stay in
the logits' layout (N, K, *spatial), so backward writes dlogits in place of a transpose."""
import numpy as np

from ...backend import array_module, is_array, to_host
from ._launch import Family, float_array, i64, launch1d

K = Family("dense_loss")


def _targets(xp, logits, targets, weight, ignore_index):
    """Validate on the host (as the NumPy op); return int64 targets and float64 weights in xp."""
    host = to_host(targets)
    if host.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy targets must be integers, got dtype {host.dtype!r}")
    want = (logits.shape[0],) + tuple(logits.shape[2:])
    if host.shape != want:
        raise ValueError(f"cross_entropy targets must have shape {want!r} for logits "
                         f"{tuple(logits.shape)!r}, got {host.shape!r}")
    Kc = logits.shape[1]
    t = host.reshape(-1).astype(np.int64)
    bad = (t != ignore_index) & ((t < 0) | (t >= Kc))
    if bad.any():
        raise ValueError(f"cross_entropy target {int(t[bad][0])!r} out of range [0, {Kc}) "
                         f"(and not ignore_index={ignore_index!r})")
    if weight is not None and tuple(np.shape(weight)) != (Kc,):
        raise ValueError(f"cross_entropy weight must have shape {(Kc,)!r}, got {np.shape(weight)!r}")
    w = np.ones(Kc) if weight is None else to_host(weight).astype(np.float64)
    if xp is np or not isinstance(targets, np.ndarray):
        dev = xp.ascontiguousarray(xp.asarray(targets).reshape(-1), dtype=np.int64)
    else:
        dev = xp.asarray(t)
    return dev, xp.asarray(w)


def dense_cross_entropy_forward(logits, targets, weight=None, ignore_index=-100, total=None):
    """Returns (loss, cache, n_correct, n_counted, weight_sum) as the NumPy op."""
    if not is_array(logits) or logits.dtype.kind != "f" or logits.ndim < 2:
        raise ValueError(f"cross_entropy expects float logits of shape (N, K, ...), got "
                         f"{getattr(logits, 'shape', type(logits))!r}")
    logits = float_array(logits, "cross_entropy")
    xp = array_module(logits)
    t, wclass = _targets(xp, logits, targets, weight, ignore_index)
    N, Kc = logits.shape[:2]
    S = int(np.prod(logits.shape[2:], dtype=np.int64))
    probs = xp.empty_like(logits)
    w, wlogp = xp.empty(N * S, np.float64), xp.empty(N * S, np.float64)
    hits = xp.empty(N * S, np.int32)
    launch1d(K.fn("dense_xent_forward", logits.dtype), N * S,
             (logits, t, wclass, probs, w, wlogp, hits, i64(N), i64(Kc), i64(S), i64(ignore_index)))
    # One copy to the host: the four figures, not the per-position vectors.
    wlogp_sum, weight_sum, counted, correct = to_host(xp.stack([
        wlogp.sum(), w.sum(), (hits >= 2).sum(dtype=np.float64), (hits == 3).sum(dtype=np.float64)]))
    divisor = float(weight_sum) if total is None else float(total)
    loss = float(-wlogp_sum / divisor) if divisor else float("nan")
    cache = (probs, t, w, divisor, ignore_index)
    return loss, cache, int(correct), int(counted), float(weight_sum)


def dense_cross_entropy_backward(cache):
    """dlogits (N, K, *spatial) in the logits' dtype."""
    probs, t, w, divisor, ignore_index = cache
    N, Kc = probs.shape[:2]
    S = int(np.prod(probs.shape[2:], dtype=np.int64))
    d = array_module(probs).empty_like(probs)
    launch1d(K.fn("dense_xent_backward", probs.dtype), d.size,
             (probs, t, w, d, i64(N), i64(Kc), i64(S), i64(ignore_index), np.float64(divisor)))
    return d


def mse_forward(pred, target, total=None):
    """Returns (loss, cache) with the loss as a float, as the NumPy op."""
    if not is_array(pred) or pred.dtype.kind != "f":
        raise ValueError(f"mse expects a float array, got {getattr(pred, 'dtype', type(pred))!r}")
    pred = float_array(pred, "mse")
    xp = array_module(pred)
    target = xp.ascontiguousarray(xp.asarray(target), dtype=pred.dtype)
    if target.shape != pred.shape:
        raise ValueError(f"mse target shape {target.shape!r} differs from prediction shape {pred.shape!r}")
    diff = xp.empty_like(pred)
    sq = xp.empty(pred.size, np.float64)
    launch1d(K.fn("mse_forward", pred.dtype), pred.size, (pred, target, diff, sq, i64(pred.size)))
    total = pred.size if total is None else total
    return float(to_host(sq.sum()) / total), (diff, total)


def mse_backward(cache):
    diff, total = cache
    d = array_module(diff).empty_like(diff)
    launch1d(K.fn("mse_backward", diff.dtype), d.size, (diff, d, i64(d.size), diff.dtype.type(2.0 / total)))
    return d
