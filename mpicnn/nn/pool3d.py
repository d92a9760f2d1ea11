"""3-D pooling layers (PyTorch semantics) on (N, C, D, H, W) volumes; global pools -> (N, C)."""
import numpy as np

from ..ops import pool3d as P
from ..ops.conv3d import triple
from .conv3d import refuse_split
from .module import Module

__all__ = ["MaxPool3d", "AvgPool3d", "GlobalAvgPool3d", "GlobalMaxPool3d", "GlobalRMSPool3d"]


def _check_volume(layer, x):
    if not isinstance(x, np.ndarray) or x.ndim != 5:
        raise ValueError(f"{layer!r} expects a 5-D (N, C, D, H, W) input, got shape "
                         f"{getattr(x, 'shape', x)!r}")
    refuse_split(layer)


def _saved(layer, value):
    if value is None:
        raise RuntimeError(f"{layer!r}: backward() called before forward()")
    return value


class _WindowPool3d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = triple(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else triple(stride, "stride")
        self.padding = triple(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{type(self).__name__} needs kernel_size >= 1, stride >= 1, "
                             f"padding >= 0; got {kernel_size!r}, {stride!r}, {padding!r}")
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{type(self).__name__} padding {padding!r} must be at most half "
                             f"of kernel_size {kernel_size!r}")
        self._xshape = None

    def _geometry(self):
        return self.kernel_size, self.stride, self.padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool3d(_WindowPool3d):
    """``MaxPool3d(kernel_size, stride=None, padding=0)``; stride defaults to kernel_size."""

    def forward(self, x):
        _check_volume(self, x)
        self._xshape = x.shape
        y, self._index = P.max_pool3d_forward(x, *self._geometry())
        return y

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        return P.max_pool3d_backward(dy, self._index, shape, *self._geometry())


class AvgPool3d(_WindowPool3d):
    """``AvgPool3d(kernel_size, stride=None, padding=0)`` (count_include_pad=True)."""

    def forward(self, x):
        _check_volume(self, x)
        self._xshape = x.shape
        return P.avg_pool3d_forward(x, *self._geometry())

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        return P.avg_pool3d_backward(dy, shape, *self._geometry())


class GlobalAvgPool3d(Module):
    """Mean over D, H and W: (N, C, D, H, W) -> (N, C)."""

    def __init__(self):
        super().__init__()
        self._xshape = None

    def forward(self, x):
        _check_volume(self, x)
        self._xshape = x.shape
        return x.mean(axis=(2, 3, 4), dtype=np.float64).astype(x.dtype)

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        g = dy * dy.dtype.type(1.0 / np.prod(shape[2:]))
        return np.ascontiguousarray(np.broadcast_to(g[:, :, None, None, None], shape))


class GlobalMaxPool3d(Module):
    """Max over D, H and W: (N, C, D, H, W) -> (N, C); gradient to the first maximum."""

    def __init__(self):
        super().__init__()
        self._xshape = None

    def forward(self, x):
        _check_volume(self, x)
        self._xshape = x.shape
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        self._index = np.argmax(flat, axis=2)
        return np.take_along_axis(flat, self._index[:, :, None], axis=2)[:, :, 0]

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        N, C = shape[:2]
        dx = np.zeros((N, C, int(np.prod(shape[2:]))), dy.dtype)
        dx[np.arange(N)[:, None], np.arange(C)[None, :], self._index] = dy
        return dx.reshape(shape)


class GlobalRMSPool3d(Module):
    """sqrt(mean over D, H, W of x^2 + eps): (N, C, D, H, W) -> (N, C)."""

    def __init__(self, eps=0.0):
        super().__init__()
        self.eps = float(eps)
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self._x = None

    def forward(self, x):
        _check_volume(self, x)
        self._x = x
        ms = np.mean(x.astype(np.float64) ** 2, axis=(2, 3, 4))
        self._y = np.sqrt(ms + self.eps)
        return self._y.astype(x.dtype)

    def backward(self, dy):
        x = _saved(self, self._x)
        g = dy / (self._y * np.prod(x.shape[2:]))  # d/dx sqrt(mean x^2) = x / (n * y)
        return (x * g[:, :, None, None, None]).astype(x.dtype)

    def extra_repr(self):
        return f"eps={self.eps}" if self.eps else ""
