"""Pooling layers (PyTorch semantics), computed in NHWC. Global pools return (N, C)."""
from ..backend import is_array
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

    def _geometry(self):
        return self.kernel_size, self.stride, self.padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_WindowPool):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: -inf padding; the gradient of
    each window goes to its first maximum (window order), as PyTorch's CPU kernel."""

    def _forward(self, x):
        self._check_input(x)
        y = P.max_pool2d_forward(x, *self._geometry())
        self._x, self._y = x, y
        return y

    def _backward(self, dy):
        x = self._saved(self._x)
        return P.max_pool2d_backward(dy, x, self._y, *self._geometry())


class AvgPool2d(_WindowPool):
    """``AvgPool2d(kernel_size, stride=None, padding=0)``, count_include_pad=True."""

    def _forward(self, x):
        self._check_input(x)
        self._x = x.shape
        return P.avg_pool2d_forward(x, *self._geometry())

    def _backward(self, dy):
        return P.avg_pool2d_backward(dy, self._saved(self._x), *self._geometry())


class GlobalAvgPool2d(_Pool):
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    def __init__(self):
        super().__init__()
        self._xshape = None

    def _forward(self, x):
        self._check_input(x)
        self._xshape = x.shape
        return P.global_avg_pool_forward(x)

    def _backward(self, dy):
        return P.global_avg_pool_backward(dy, self._saved(self._xshape))


class GlobalMaxPool2d(_Pool):
    """Max over H and W: (N, C, H, W) -> (N, C); gradient to the first maximum."""

    def __init__(self):
        super().__init__()
        self._xshape = self._index = None

    def _forward(self, x):
        self._check_input(x)
        y, self._index = P.global_max_pool_forward(x)
        self._xshape = x.shape
        return y

    def _backward(self, dy):
        return P.global_max_pool_backward(dy, self._index, self._saved(self._xshape))


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
        y = P.global_rms_pool_forward(x, self.eps)
        self._x, self._y = x, y
        return y

    def _backward(self, dy):
        return P.global_rms_pool_backward(dy, self._saved(self._x), self._y)

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
