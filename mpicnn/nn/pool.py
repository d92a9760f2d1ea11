"""Pooling layers (PyTorch semantics), computed in NHWC. Global pools return (N, C)."""
import numpy as np

from ..backend import array_module, is_array
from ..ops import pool as P
from ..ops.conv import pair
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "GlobalRMSPool2d",
           "swap_relu_maxpool"]


class _Pool(Module):
    layout = "NHWC"

    def _check_input(self, x):
        if not is_array(x) or x.ndim != 4:
            raise ValueError(f"{self!r} expects a 4-D input, got shape {getattr(x, 'shape', x)!r}")

    def _saved(self, value):
        if value is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return value


class _WindowPool(_Pool):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{type(self).__name__} needs kernel_size >= 1, stride >= 1, "
                             f"padding >= 0; got {kernel_size!r}, {stride!r}, {padding!r}")
        if self.padding[0] > self.kernel_size[0] // 2 or self.padding[1] > self.kernel_size[1] // 2:
            raise ValueError(f"{type(self).__name__} padding {padding!r} must be at most half "
                             f"of kernel_size {kernel_size!r}")
        self._x = None
        self._halo = None

    def _geometry(self):
        # Under a spatial split the input arrives with its halo and padding included.
        return self.kernel_size, self.stride, (0, 0) if self._halo is not None else self.padding

    def _apply(self, x, fill, op):
        """``op(input, padding)`` over x, or under a spatial split over this rank's output
        block, with halos and ``fill`` padding brought by the context (padding 0 then)."""
        self._check_input(x)
        self._halo = None
        if not self.context.spatial:
            return op(x, self.padding)
        y, self._halo = self.context.window_apply(self, x, self.kernel_size, self.stride, self.padding,
                                                  (1, 1), fill, lambda v: op(v, (0, 0)))
        return y

    def _input_grad(self, dx):
        return dx if self._halo is None else self.context.window_input_grad(self._halo, dx)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_WindowPool):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: -inf padding; the gradient of
    each window goes to its first maximum (window order), as PyTorch's CPU kernel."""

    def _forward(self, x):
        k, s = self.kernel_size, self.stride
        y = self._apply(x, -np.inf, lambda v, pad: P.max_pool2d_forward(v, k, s, pad))
        self._x, self._y = x, y
        return y

    def _backward(self, dy):
        x = self._saved(self._x)
        if self._halo is not None:
            x = self.context.window_saved_input(self._halo, x)
        return self._input_grad(P.max_pool2d_backward(dy, x, self._y, *self._geometry()))


class AvgPool2d(_WindowPool):
    """``AvgPool2d(kernel_size, stride=None, padding=0)``, count_include_pad=True."""

    def _forward(self, x):
        k, s = self.kernel_size, self.stride
        y = self._apply(x, 0.0, lambda v, pad: P.avg_pool2d_forward(v, k, s, pad))
        self._x = x.shape if self._halo is None else self.context.window_input_shape(self._halo, x.shape)
        return y

    def _backward(self, dy):
        return self._input_grad(P.avg_pool2d_backward(dy, self._saved(self._x), *self._geometry()))


class GlobalAvgPool2d(_Pool):
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    def __init__(self):
        super().__init__()
        self._xshape = None

    def _forward(self, x):
        self._check_input(x)
        self._xshape = x.shape
        if not self.context.spatial:
            return P.global_avg_pool_forward(x)
        # Split map: sum the local block, add the sums of all blocks, divide by global H*W.
        H, W = self.context.global_hw(self, x.shape[1:3])
        N, h, w, C = x.shape
        s = array_module(x).sum(x.reshape(N, h * w, C), axis=1, dtype=np.float64)
        self.context.spatial_reduce(s, "sum")
        self._area = H * W
        return (s / self._area).astype(x.dtype)

    def _backward(self, dy):
        shape = self._saved(self._xshape)
        if not self.context.spatial:
            return P.global_avg_pool_backward(dy, shape)
        # grad_seam: see mpicnn.parallel.spatial (the replicated head ran on 1/S of the loss).
        g = dy * dy.dtype.type(self.context.grad_seam / self._area)
        dx = array_module(dy).empty(shape, dy.dtype)
        dx[...] = g[:, None, None, :]
        return dx


class GlobalMaxPool2d(_Pool):
    """Max over H and W: (N, C, H, W) -> (N, C); gradient to the first maximum."""

    def __init__(self):
        super().__init__()
        self._xshape = self._index = None

    def _forward(self, x):
        self._check_input(x)
        self._xshape = x.shape
        if not self.context.spatial:
            y, self._index = P.global_max_pool_forward(x)
            return y
        # Split map: the maximum over all blocks; the gradient goes to the first maximum
        # in global (h, w) order, i.e. to the block whose candidate has the lowest index.
        ctx, xp = self.context, array_module(x)
        N, h, w, C = x.shape
        x3 = x.reshape(N, h * w, C)
        index = xp.argmax(x3, axis=1)
        local = xp.take_along_axis(x3, index[:, None, :], axis=1)[:, 0]
        y = ctx.spatial_reduce(local.copy(), "max")
        (h0, H), (w0, W) = ctx.origin(self, (h, w))
        flat = (h0 + index // w) * W + (w0 + index % w)
        candidate = xp.where(local == y, flat, H * W).astype(np.int64)
        first = ctx.spatial_reduce(candidate.copy(), "min")
        self._index = index
        self._mine = (candidate == first).astype(x.dtype)
        return y

    def _backward(self, dy):
        shape = self._saved(self._xshape)
        if not self.context.spatial:
            return P.global_max_pool_backward(dy, self._index, shape)
        xp = array_module(dy)
        N, h, w, C = shape
        dx = xp.zeros((N, h * w, C), dy.dtype)
        g = dy * self._mine * dy.dtype.type(self.context.grad_seam)
        # dx[n, index[n, c], c] = g[n, c] (fancy indexing: the same code for NumPy and CuPy)
        dx[xp.arange(N)[:, None], self._index, xp.arange(C)[None, :]] = g
        return dx.reshape(shape)


class GlobalRMSPool2d(_Pool):
    """sqrt(mean over H, W of x^2 + eps): (N, C, H, W) -> (N, C)."""

    def __init__(self, eps=0.0):
        super().__init__()
        self.eps = float(eps)
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self._x = self._y = None

    def _forward(self, x):
        self._check_input(x)
        if not self.context.spatial:
            y = P.global_rms_pool_forward(x, self.eps)
        else:
            # Split map: sums of squares of all blocks, over the global H*W.
            H, W = self.context.global_hw(self, x.shape[1:3])
            N, h, w, C = x.shape
            x3 = x.reshape(N, h * w, C).astype(np.float64)
            ms = self.context.spatial_reduce((x3 * x3).sum(axis=1), "sum") / (H * W)
            y = array_module(x).sqrt(ms + self.eps).astype(x.dtype)
            self._area = H * W
        self._x, self._y = x, y
        return y

    def _backward(self, dy):
        x = self._saved(self._x)
        if not self.context.spatial:
            return P.global_rms_pool_backward(dy, x, self._y)
        xp = array_module(dy)
        denom = self._y * self._y.dtype.type(self._area)
        safe = xp.where(denom != 0, denom, 1)
        g = xp.where(denom != 0, dy * dy.dtype.type(self.context.grad_seam) / safe, 0).astype(dy.dtype)
        return x * g[:, None, None, :]

    def extra_repr(self):
        return f"eps={self.eps}"


def swap_relu_maxpool(module):
    """Rewrite every ``ReLU, MaxPool2d`` pair inside Sequentials as ``MaxPool2d, ReLU``.

    max commutes with ReLU, so the forward values are identical, and so are the input
    gradients (a window whose maximum is <= 0 gets zero gradient either way); the ReLU
    then touches kh*kw times fewer elements (FACTS.md #5: ~3 ms of the benchmark CNN's
    ~40 ms step). Parameters and state_dict keys are unchanged (neither layer has any);
    only the two children's positions swap. Returns the number of pairs swapped.
    """
    from .activation import ReLU
    from .container import Sequential
    swapped = 0
    for m in list(module.modules()):
        if not isinstance(m, Sequential):
            continue
        names = [name for name, _ in m.named_children()]
        i = 0
        while i + 1 < len(names):
            a, b = getattr(m, names[i]), getattr(m, names[i + 1])
            if type(a) is ReLU and isinstance(b, MaxPool2d):
                setattr(m, names[i], b)
                setattr(m, names[i + 1], a)
                swapped += 1
                i += 2
            else:
                i += 1
    return swapped
