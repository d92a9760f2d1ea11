"""BatchNorm2d with statistics shared over ranks through ``context.allreduce_stats``."""
import numpy as np

from ..backend import is_array
from ..ops.norm import batch_norm_backward, batch_norm_eval_forward, batch_norm_train_forward
from . import init
from .conv import _positive_int
from .module import Module, Parameter

__all__ = ["BatchNorm2d"]


class BatchNorm2d(Module):
    """``BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, dtype=np.float32)`` as ``torch.nn.BatchNorm2d``.

    Training normalises with the biased variance over (N, H, W) of the GLOBAL batch:
    per-channel [count, sum] and then [sum of squared deviations] are summed over the
    ranks sharing the layer by ``self.context.allreduce_stats`` (in backward:
    [sum(dy), sum(dy*xhat)]). running_var tracks the unbiased variance; momentum=None
    gives the cumulative average, as PyTorch. Parameter gradients are local sums.
    Buffers: running_mean, running_var (dtype) and num_batches_tracked (0-d int64).
    """

    layout = "NHWC"
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        self.eps = float(eps)
        if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(init.ones((num_features,), dtype))
            self.bias = Parameter(init.zeros((num_features,), dtype))
        else:
            self.weight = self.bias = None
        self.dtype = np.dtype(dtype)
        if self.track_running_stats:
            self.running_mean = init.zeros((num_features,), dtype)
            self.running_var = init.ones((num_features,), dtype)
            self.num_batches_tracked = np.zeros((), np.int64)
        else:
            self.buffer_names = ()
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._cache = None

    def _forward(self, x):
        if not is_array(x) or x.ndim != 4:
            raise ValueError(f"{self!r} expects a 4-D input, got shape {getattr(x, 'shape', x)!r}")
        if x.shape[3] != self.num_features:
            raise ValueError(f"{self!r} expected {self.num_features!r} channels, got {x.shape[3]!r} "
                             f"(NHWC input shape {x.shape!r})")
        if x.dtype != self.dtype:
            raise TypeError(f"{self!r} has dtype {self.dtype!r}, got input of dtype {x.dtype!r}")
        w = self.weight.data if self.affine else None
        b = self.bias.data if self.affine else None
        if self.training or not self.track_running_stats:
            y, self._cache, mean, var, count = batch_norm_train_forward(
                x, w, b, self.eps, self.context.allreduce_stats)
            if self.training and self.track_running_stats:
                self._update_running(mean, var, count)
        else:
            y, self._cache = batch_norm_eval_forward(x, w, b, self.running_mean, self.running_var, self.eps)
        return y

    def _update_running(self, mean, var, count):
        self.num_batches_tracked += 1
        m = self.momentum
        if m is None:
            m = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (count / (count - 1)) if count > 1 else var
        rm = (1.0 - m) * self.running_mean.astype(np.float64) + m * mean
        rv = (1.0 - m) * self.running_var.astype(np.float64) + m * unbiased
        self.running_mean[...] = rm
        self.running_var[...] = rv

    def _backward(self, dy):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        dx, dw, db = batch_norm_backward(dy, self._cache, self.context.allreduce_stats)
        if self.affine:
            if self.weight.requires_grad:
                self.weight.grad += dw
            if self.bias.requires_grad:
                self.bias.grad += db
        return dx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")
