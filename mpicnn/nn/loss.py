"""CrossEntropyLoss: softmax cross-entropy on (N, K) logits and (N,) integer labels."""
import numbers

from ..ops.loss import cross_entropy_backward, cross_entropy_forward
from .module import Module

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(Module):
    """``loss = crit(logits, labels)`` -> Python float, the mean over the batch;
    ``crit.backward()`` -> dlogits = (softmax - onehot) / N in the logits' dtype.

    After each call ``crit.correct`` holds the number of samples whose argmax equals
    the label and ``crit.loss`` the value returned. ``total=`` replaces N as the divisor
    (pass the global batch size when this rank holds only part of it; loss and
    gradient are then this rank's share of the global mean).
    """

    def __init__(self):
        super().__init__()
        self._cache = None
        self.correct = 0
        self.loss = None

    def __call__(self, logits, labels, total=None):
        return self.forward(logits, labels, total)

    def forward(self, logits, labels, total=None):
        if total is not None and (not isinstance(total, numbers.Integral) or total < 1):
            raise ValueError(f"total must be a positive int, got {total!r}")
        self.loss, probs, self.correct = cross_entropy_forward(logits, labels, total)
        self._cache = (probs, labels, None if total is None else int(total))
        return self.loss

    def backward(self, dy=None):
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss: backward() called before forward()")
        probs, labels, total = self._cache
        d = cross_entropy_backward(probs, labels, total)
        if dy is not None:  # upstream gradient of the scalar loss
            d *= d.dtype.type(dy)
        return d
