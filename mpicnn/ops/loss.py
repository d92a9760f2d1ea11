"""Softmax cross-entropy on logits (N, K) with integer labels (N,).

    z        = logits - max_k logits                 (stable)
    logp     = z - log(sum_k exp(z))                  (log-softmax)
    loss     = -sum_n logp[n, labels[n]] / total      (total = N unless given: the global
                                                       batch size when ranks hold parts)
    dlogits  = (softmax - onehot(labels)) / total      in the logits' dtype

The loss is accumulated in float64 and returned as a Python float.
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["cross_entropy_forward", "cross_entropy_backward", "check_labels"]


def check_labels(logits, labels):
    """Validate shapes/dtypes; returns labels as an int64 (N,) array."""
    if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f" or logits.ndim != 2:
        raise ValueError(f"cross_entropy expects float logits of shape (N, K), got "
                         f"{getattr(logits, 'shape', type(logits))!r} "
                         f"{getattr(logits, 'dtype', '')!r}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy labels must be integers, got dtype {labels.dtype!r}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy labels must have shape {(logits.shape[0],)!r}, got {labels.shape!r}")
    K = logits.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        bad = labels[(labels < 0) | (labels >= K)][0]
        raise ValueError(f"cross_entropy label {int(bad)!r} out of range [0, {K})")
    return labels.astype(np.int64, copy=False)


@kernel_version("loss")
def cross_entropy_forward(logits, labels, total=None):
    """Returns (loss: float, probs (N,K) softmax in logits' dtype, n_correct: int)."""
    labels = check_labels(logits, labels)
    N = logits.shape[0]
    total = N if total is None else total
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp_true = np.take_along_axis(z, labels[:, None], axis=1)[:, 0].astype(np.float64) \
        - np.log(s[:, 0].astype(np.float64))
    loss = float(-logp_true.sum() / total) if total else 0.0
    probs = e / s
    correct = int(np.count_nonzero(np.argmax(logits, axis=1) == labels))
    return loss, probs, correct


@kernel_version("loss")
def cross_entropy_backward(probs, labels, total=None):
    """dlogits = (probs - onehot(labels)) / total, in probs' dtype."""
    N = probs.shape[0]
    total = N if total is None else total
    d = probs.copy()
    d[np.arange(N), labels] -= 1
    d *= d.dtype.type(1.0 / total) if total else 0
    return d
