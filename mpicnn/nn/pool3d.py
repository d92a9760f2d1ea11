"""3-D pooling layers (PyTorch semantics) on (N, C, D, H, W) volumes; global pools -> (N, C).

Under a spatial split of volumes window pools read their halo through the context
(``volume_window``), and global pools reduce over all blocks; their backward scales by
``grad_seam`` like the 2-D global pools (``mpicnn.parallel.spatial``)."""
import numpy as np

from ..backend import array_module, is_array
from ..ops import pool3d as P
from ..ops.conv3d import triple
from .module import Module

__all__ = ["MaxPool3d", "AvgPool3d", "GlobalAvgPool3d", "GlobalMaxPool3d", "GlobalRMSPool3d"]


def _check_volume(layer, x):
    if not is_array(x) or x.ndim != 5:
        raise ValueError(f"{layer!r} expects a 5-D (N, C, D, H, W) input, got shape "
                         f"{getattr(x, 'shape', x)!r}")


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
        self._halo = None

    def _geometry(self):
        # Under a spatial split the input arrives with its halo and padding included.
        return self.kernel_size, self.stride, (0, 0, 0) if self._halo is not None else self.padding

    def _window(self, x, fill):
        """The op's input: x, or under a spatial split x with its halo and padding."""
        _check_volume(self, x)
        self._halo = None
        if self.context.spatial:
            x, self._halo = self.context.volume_window(self, x, self.kernel_size, self.stride, self.padding,
                                                       (1, 1, 1), fill)
        self._xshape = x.shape
        return x

    def _input_grad(self, dx):
        return dx if self._halo is None else self.context.volume_input_grad(self._halo, dx)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool3d(_WindowPool3d):
    """``MaxPool3d(kernel_size, stride=None, padding=0)``; stride defaults to kernel_size."""

    def forward(self, x):
        x = self._window(x, -np.inf)
        y, self._index = P.max_pool3d_forward(x, *self._geometry())
        return y

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        return self._input_grad(P.max_pool3d_backward(dy, self._index, shape, *self._geometry()))


class AvgPool3d(_WindowPool3d):
    """``AvgPool3d(kernel_size, stride=None, padding=0)`` (count_include_pad=True)."""

    def forward(self, x):
        return P.avg_pool3d_forward(self._window(x, 0.0), *self._geometry())

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        return self._input_grad(P.avg_pool3d_backward(dy, shape, *self._geometry()))


def _volume(layer, shape):
    """Voxels of the whole volume (over all blocks under a spatial split)."""
    if not layer.context.spatial:
        return int(np.prod(shape[2:]))
    return int(np.prod(layer.context.global_dhw(layer, shape[2:])))


def _reduce(layer, array, op="sum"):
    return layer.context.spatial_reduce(array, op) if layer.context.spatial else array


class GlobalAvgPool3d(Module):
    """Mean over D, H and W: (N, C, D, H, W) -> (N, C)."""

    def __init__(self):
        super().__init__()
        self._xshape = None

    def forward(self, x):
        _check_volume(self, x)
        self._xshape = x.shape
        self._count = _volume(self, x.shape)
        s = _reduce(self, x.sum(axis=(2, 3, 4), dtype=np.float64))
        return (s / self._count).astype(x.dtype)

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        # grad_seam: the replicated head past this pool ran on 1/S of the loss gradient
        g = dy * dy.dtype.type(self.context.grad_seam / self._count)
        xp = array_module(dy)
        return xp.ascontiguousarray(xp.broadcast_to(g[:, :, None, None, None], shape))


class GlobalMaxPool3d(Module):
    """Max over D, H and W: (N, C, D, H, W) -> (N, C); gradient to the first maximum
    (in global (d, h, w) order when the volume is split)."""

    def __init__(self):
        super().__init__()
        self._xshape = None

    def forward(self, x):
        _check_volume(self, x)
        self._xshape = x.shape
        xp = array_module(x)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        self._index = xp.argmax(flat, axis=2)
        local = xp.take_along_axis(flat, self._index[:, :, None], axis=2)[:, :, 0]
        self._mine = None
        if not self.context.spatial:
            return local
        y = _reduce(self, local.copy(), "max")
        (d0, D), (h0, H), (w0, W) = self.context.volume_origin(self, x.shape[2:])
        d, h, w = xp.unravel_index(self._index, x.shape[2:])
        flat_global = ((d0 + d) * H + h0 + h) * W + w0 + w
        candidate = xp.where(local == y, flat_global, D * H * W).astype(np.int64)
        self._mine = (candidate == _reduce(self, candidate.copy(), "min")).astype(x.dtype)
        return y

    def backward(self, dy):
        shape = _saved(self, self._xshape)
        N, C = shape[:2]
        if self._mine is not None:
            dy = dy * self._mine * dy.dtype.type(self.context.grad_seam)
        xp = array_module(dy)
        dx = xp.zeros((N, C, int(np.prod(shape[2:]))), dy.dtype)
        dx[xp.arange(N)[:, None], xp.arange(C)[None, :], self._index] = dy
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
        self._count = _volume(self, x.shape)
        ms = _reduce(self, (x.astype(np.float64) ** 2).sum(axis=(2, 3, 4))) / self._count
        self._y = array_module(x).sqrt(ms + self.eps)
        return self._y.astype(x.dtype)

    def backward(self, dy):
        x = _saved(self, self._x)
        # d/dx sqrt(mean x^2) = x / (n * y); grad_seam as GlobalAvgPool3d
        g = dy * self.context.grad_seam / (self._y * self._count)
        return (x * g[:, :, None, None, None]).astype(x.dtype)

    def extra_repr(self):
        return f"eps={self.eps}" if self.eps else ""
