"""Elementwise activations. Any shape, any layout (the ops are elementwise).

    relu:        y = max(x, 0)                 dx = dy * (y > 0)      (grad 0 at x == 0, as PyTorch)
    leaky_relu:  y = x if x > 0 else s * x     dx = dy if x > 0 else s * dy

Outputs have the input's dtype; no Python or NumPy float64 scalar touches float32 data.
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward"]

_ZERO_ROWS = {}


def _zero_row(length, dtype):
    key = (length, np.dtype(dtype))
    row = _ZERO_ROWS.get(key)
    if row is None:
        row = _ZERO_ROWS[key] = np.zeros(length, dtype)
        row.flags.writeable = False
    return row


def _rows(x):
    """``x`` as 2-D (rows, L) with L a large divisor of its size (a view when contiguous)."""
    for length in (8192, 4096, 2048, 1024, 512, 256, 128, 64):
        if x.size % length == 0:
            return x.reshape(-1, length)
    return x.reshape(-1, x.shape[-1] if x.ndim else 1)


@kernel_version("activation")
def relu_forward(x, out=None):
    """y = max(x, 0), same shape and dtype as ``x``. NaN propagates, as in PyTorch."""
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty_like(x)
    x2 = _rows(x)
    # np.maximum against a zero ROW is ~2.5x faster than against a scalar (NumPy 2.4).
    np.maximum(x2, _zero_row(x2.shape[1], x.dtype), out=out.reshape(x2.shape))
    return out


@kernel_version("activation")
def relu_backward(dy, y, out=None):
    """dx = dy where y > 0, else 0 (``y`` is the forward output)."""
    if dy.shape != y.shape:
        raise ValueError(f"relu backward: dy shape {dy.shape!r} differs from y shape {y.shape!r}")
    if out is None:
        out = np.empty_like(dy)
    np.greater(y, 0, out=out, casting="unsafe")  # mask as 0.0/1.0 in dy's dtype
    np.multiply(out, dy, out=out)
    return out


@kernel_version("activation")
def leaky_relu_forward(x, negative_slope=0.01):
    """y = x for x > 0, negative_slope * x otherwise."""
    s = x.dtype.type(negative_slope)
    return np.where(x > 0, x, x * s)


@kernel_version("activation")
def leaky_relu_backward(dy, x, negative_slope=0.01):
    """dx = dy for x > 0, negative_slope * dy otherwise (``x`` is the forward input)."""
    if dy.shape != x.shape:
        raise ValueError(f"leaky_relu backward: dy shape {dy.shape!r} differs from x shape {x.shape!r}")
    s = dy.dtype.type(negative_slope)
    return np.where(x > 0, dy, dy * s)
