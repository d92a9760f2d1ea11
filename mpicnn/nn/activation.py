"""ReLU and LeakyReLU. Elementwise, so any shape and layout; declared NHWC so that a
chain of NHWC layers needs no conversion, while the public forward skips conversion."""
from ..ops.activation import leaky_relu_backward, leaky_relu_forward, relu_backward, relu_forward
from .module import Module

__all__ = ["ReLU", "LeakyReLU"]


class _Elementwise(Module):
    layout = "NHWC"

    # Elementwise: the public (NCHW) and private (NHWC) paths compute the same thing,
    # so skip the layout conversions.
    def forward(self, x):
        return self._forward(x)

    def backward(self, dy):
        return self._backward(dy)

    def _saved(self, value):
        if value is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return value


class ReLU(_Elementwise):
    """y = max(x, 0)."""

    def __init__(self):
        super().__init__()
        self._y = None

    def _forward(self, x):
        self._y = relu_forward(x)
        return self._y

    def _backward(self, dy):
        return relu_backward(dy, self._saved(self._y))


class LeakyReLU(_Elementwise):
    """y = x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self._x = None

    def _forward(self, x):
        self._x = x
        return leaky_relu_forward(x, self.negative_slope)

    def _backward(self, dy):
        return leaky_relu_backward(dy, self._saved(self._x), self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"
