"""Linear: y = x @ weight.T + bias over the last axis (PyTorch semantics)."""
import math

import numpy as np

from ..backend import array_module, is_array
from . import init
from .conv import _positive_int
from .module import Module, Parameter

__all__ = ["Linear"]


class Linear(Module):
    """``Linear(in_features, out_features, bias=True, dtype=np.float32, rng=None)``.

    weight (out, in), bias (out,), both U(-1/sqrt(in), 1/sqrt(in)) as PyTorch, weight
    first. Input (..., in) -> output (..., out); a 4-D input is read in NCHW, as PyTorch
    (the layer acts on W). ``needs_input_grad = False`` makes backward skip dx (returns None).
    """

    layout = "NCHW"  # acts on the last axis of the public layout

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        shape = (out_features, in_features)
        self.weight = Parameter(init.kaiming_uniform(shape, dtype=dtype, rng=rng))
        if bias:
            self.bias = Parameter(init.uniform((out_features,), 1.0 / math.sqrt(in_features), dtype, rng))
        else:
            self.bias = None
        self.needs_input_grad = True
        self._x = None

    def forward(self, x):
        if not is_array(x) or x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r} expected input with last axis {self.in_features!r}, "
                             f"got shape {getattr(x, 'shape', x)!r}")
        if x.dtype != self.weight.data.dtype:
            raise TypeError(f"{self!r} has dtype {self.weight.data.dtype!r}, got input of dtype {x.dtype!r}")
        self._x = x
        x2 = x.reshape(-1, self.in_features)
        y = x2 @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dy):
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        x = self._x
        expected = x.shape[:-1] + (self.out_features,)
        if dy.shape != expected:
            raise ValueError(f"{self!r} backward expected dy of shape {expected!r}, got {dy.shape!r}")
        dy2 = dy.reshape(-1, self.out_features)
        if self.weight.requires_grad:
            self.weight.grad += dy2.T @ x.reshape(-1, self.in_features)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += array_module(dy).ones(dy2.shape[0], dy.dtype) @ dy2
        if not self.needs_input_grad:
            return None
        return (dy2 @ self.weight.data).reshape(x.shape)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
