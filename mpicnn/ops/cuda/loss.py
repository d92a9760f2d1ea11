"""Softmax cross-entropy on ``kernels/loss.cu``; same signatures as ``mpicnn.ops.loss``."""
import numpy as np

from ...backend import array_module, is_array, to_host
from ._launch import Family, i64, launch1d, float_array

K = Family("loss")
# The last labels copied to the device: forward and backward of one batch share one copy.
_uploaded = {}  # array module -> (host int64 labels, device copy)


def _labels(xp, labels, N, K_):
    """Validate on the host (as ``check_labels``); return int64 labels in ``xp``."""
    host = to_host(labels)
    if host.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy labels must be integers, got dtype {host.dtype!r}")
    if host.shape != (N,):
        raise ValueError(f"cross_entropy labels must have shape {(N,)!r}, got {host.shape!r}")
    if host.size and (host.min() < 0 or host.max() >= K_):
        bad = host[(host < 0) | (host >= K_)][0]
        raise ValueError(f"cross_entropy label {int(bad)!r} out of range [0, {K_})")
    if xp is np or not isinstance(labels, np.ndarray):
        return xp.ascontiguousarray(xp.asarray(labels), dtype=np.int64)
    host = host.astype(np.int64)
    last = _uploaded.get(xp)
    if last is None or not np.array_equal(last[0], host):
        last = _uploaded[xp] = (host, xp.asarray(host))
    return last[1]


def cross_entropy_forward(logits, labels, total=None):
    """Returns (loss: float, probs (N,K) softmax in logits' dtype, n_correct: int)."""
    if not is_array(logits) or logits.dtype.kind != "f" or logits.ndim != 2:
        raise ValueError(f"cross_entropy expects float logits of shape (N, K), got "
                         f"{getattr(logits, 'shape', type(logits))!r} {getattr(logits, 'dtype', '')!r}")
    logits = float_array(logits, "cross_entropy")
    N, Kc = logits.shape
    xp = array_module(logits)
    lab = _labels(xp, labels, N, Kc)
    total = N if total is None else total
    probs = xp.empty_like(logits)
    logp = xp.empty(N, np.float64)
    correct = xp.empty(N, np.int32)
    launch1d(K.fn("softmax_xent_forward", logits.dtype), N,
             (logits, lab, probs, logp, correct, i64(N), i64(Kc)))
    # One copy to the host: the two figures, not the (N,) vectors.
    logp_sum, n_correct = to_host(xp.stack([logp.sum(), (correct != 0).sum(dtype=np.float64)]))
    loss = float(-logp_sum / total) if total else 0.0
    return loss, probs, int(n_correct)


def cross_entropy_backward(probs, labels, total=None):
    """dlogits = (probs - onehot(labels)) / total, in probs' dtype."""
    probs = float_array(probs, "cross_entropy backward", 2)
    N, Kc = probs.shape
    xp = array_module(probs)
    lab = _labels(xp, labels, N, Kc)
    total = N if total is None else total
    scale = probs.dtype.type(1.0 / total) if total else probs.dtype.type(0)
    d = xp.empty_like(probs)
    launch1d(K.fn("softmax_xent_backward", probs.dtype), probs.size,
             (probs, lab, d, i64(N), i64(Kc), scale))
    return d
