"""CrossEntropyLoss (per sample or per pixel/voxel) and MSELoss, as PyTorch's (mean)."""
import numbers

import numpy as np

from ..ops.dense_loss import (dense_cross_entropy_backward, dense_cross_entropy_forward,
                              mse_backward, mse_forward)
from ..ops.loss import cross_entropy_backward, cross_entropy_forward
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


def _check_total(total):
    if total is not None and (not isinstance(total, numbers.Real) or isinstance(total, bool)
                              or not total > 0):
        raise ValueError(f"total must be a positive number, got {total!r}")


class CrossEntropyLoss(Module):
    """``CrossEntropyLoss(weight=None, ignore_index=-100)``; ``loss = crit(logits, labels)``
    -> Python float, the mean as ``torch.nn.CrossEntropyLoss``; ``crit.backward()`` ->
    dlogits in the logits' dtype.

    Logits (N, K) with labels (N,) classify samples; logits (N, K, *spatial) with targets
    (N, *spatial) classify every pixel or voxel. Targets equal to ``ignore_index`` count
    for nothing; with a class ``weight`` (K,) the mean is sum(w[t] * nll) / sum(w[t]).

    After each call ``crit.correct`` holds the number of counted positions whose argmax
    is the target, ``crit.count`` the number counted, ``crit.weight_sum`` the divisor the
    mean would use on this rank alone and ``crit.loss`` the value returned. ``total=``
    replaces that divisor (pass the global one when this rank holds only part of the
    batch or of the map; loss and gradient are then this rank's share of the global mean).
    """

    def __init__(self, weight=None, ignore_index=-100):
        super().__init__()
        if weight is not None:
            weight = np.asarray(weight, np.float64)
            if weight.ndim != 1 or (weight < 0).any():
                raise ValueError(f"CrossEntropyLoss weight must be a 1-D array of non-negative "
                                 f"class weights, got {weight!r}")
        self.weight = weight
        self.ignore_index = int(ignore_index)
        self._cache = None
        self.correct = 0
        self.count = 0
        self.weight_sum = 0.0
        self.loss = None

    def __call__(self, logits, labels, total=None):
        return self.forward(logits, labels, total)

    def _plain(self, logits, labels):
        """Unweighted per-sample classification without ignored labels: the kernel path."""
        return (self.weight is None and getattr(logits, "ndim", 0) == 2
                and not (np.asarray(labels) == self.ignore_index).any())

    def forward(self, logits, labels, total=None):
        _check_total(total)
        if self._plain(logits, labels):
            self.loss, probs, self.correct = cross_entropy_forward(logits, labels, total)
            self.count = logits.shape[0]
            self.weight_sum = float(self.count)
            self._cache = ("plain", (probs, labels, total))
            return self.loss
        self.loss, cache, self.correct, self.count, self.weight_sum = dense_cross_entropy_forward(
            logits, labels, self.weight, self.ignore_index, total)
        self._cache = ("dense", cache)
        return self.loss

    def backward(self, dy=None):
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss: backward() called before forward()")
        kind, cache = self._cache
        d = cross_entropy_backward(*cache) if kind == "plain" else dense_cross_entropy_backward(cache)
        if dy is not None:  # upstream gradient of the scalar loss
            d *= d.dtype.type(dy)
        return d

    def extra_repr(self):
        s = "" if self.weight is None else f"weight={self.weight.tolist()}"
        return s + ("" if self.ignore_index == -100 else f"{', ' if s else ''}ignore_index={self.ignore_index}")


class MSELoss(Module):
    """``loss = crit(pred, target)`` -> the mean of (pred - target)^2 over all elements, as
    ``torch.nn.MSELoss()``; ``crit.backward()`` -> 2 (pred - target) / count.
    ``total=`` replaces the element count as the divisor (the global count when this rank
    holds part of the batch or of the map)."""

    def __init__(self):
        super().__init__()
        self._cache = None
        self.loss = None

    def __call__(self, pred, target, total=None):
        return self.forward(pred, target, total)

    def forward(self, pred, target, total=None):
        _check_total(total)
        self.loss, self._cache = mse_forward(pred, target, total)
        return self.loss

    def backward(self, dy=None):
        if self._cache is None:
            raise RuntimeError("MSELoss: backward() called before forward()")
        d = mse_backward(self._cache)
        if dy is not None:
            d *= d.dtype.type(dy)
        return d
