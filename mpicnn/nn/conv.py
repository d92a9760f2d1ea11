"""Conv2d: 2-D cross-correlation with PyTorch's parameters and init, computed in NHWC."""
import math

import numpy as np

from ..backend import is_array
from ..ops.conv import conv2d_backward, conv2d_forward, conv_output_size, pair
from . import init
from .module import Module, Parameter

__all__ = ["Conv2d"]


def _positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def init_convolution(layer, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                     dtype, rng, per_axis):
    """Check and set what Conv2d and Conv3d share (``per_axis``: an int or sequence -> one
    int per spatial axis) and draw weight and bias as PyTorch does, weight first."""
    layer.in_channels = _positive_int(in_channels, "in_channels")
    layer.out_channels = _positive_int(out_channels, "out_channels")
    layer.groups = _positive_int(groups, "groups")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups!r} must divide in_channels={in_channels!r} "
                         f"and out_channels={out_channels!r}")
    layer.kernel_size = per_axis(kernel_size, "kernel_size")
    layer.stride = per_axis(stride, "stride")
    layer.padding = per_axis(padding, "padding")
    layer.dilation = per_axis(dilation, "dilation")
    if min(layer.kernel_size) < 1 or min(layer.stride) < 1 or min(layer.dilation) < 1:
        raise ValueError(f"kernel_size, stride and dilation must be >= 1, got "
                         f"{kernel_size!r}, {stride!r}, {dilation!r}")
    if min(layer.padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    shape = (out_channels, in_channels // groups) + layer.kernel_size
    layer.weight = Parameter(init.kaiming_uniform(shape, dtype=dtype, rng=rng))
    if bias:
        bound = 1.0 / math.sqrt(init.fan_in(shape))
        layer.bias = Parameter(init.uniform((out_channels,), bound, dtype, rng))
    else:
        layer.bias = None


def accumulate_grads(layer, dw, db):
    """Add a convolution's weight and bias gradients (None: not computed) to its
    parameters' (accumulated over micro-batches; gradient buckets send them as they are)."""
    if dw is not None:
        layer.weight.grad += dw
    if db is not None:
        layer.bias.grad += db


def convolution_repr(layer):
    """PyTorch's repr arguments of a 2-D or 3-D convolution: non-default ones only."""
    s = f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, stride={layer.stride}"
    if any(layer.padding):
        s += f", padding={layer.padding}"
    if any(d != 1 for d in layer.dilation):
        s += f", dilation={layer.dilation}"
    if layer.groups != 1:
        s += f", groups={layer.groups}"
    if layer.bias is None:
        s += ", bias=False"
    return s


class Conv2d(Module):
    """``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True, dtype=np.float32, rng=None)`` as ``torch.nn.Conv2d``.

    weight (out, in/groups, kh, kw) and bias (out,) are drawn U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) with fan_in = in/groups*kh*kw (PyTorch's default init), weight first.
    Set ``needs_input_grad = False`` on a model's first layer: backward then skips the
    input gradient (a third of the layer's work) and returns None.
    """

    layout = "NHWC"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        init_convolution(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, dtype, rng, pair)
        self.needs_input_grad = True
        self._x = None
        self._halo = None

    def output_shape(self, h, w):
        """Spatial output size for an (h, w) input."""
        return (conv_output_size(h, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]),
                conv_output_size(w, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1]))

    def _geometry(self):
        # Under a spatial split the input arrives with its halo and padding included.
        padding = (0, 0) if self._halo is not None else self.padding
        return dict(stride=self.stride, padding=padding, dilation=self.dilation,
                    groups=self.groups)

    def _forward(self, x):
        if not is_array(x) or x.ndim != 4:
            raise ValueError(f"{self!r} expects a 4-D input, got shape {getattr(x, 'shape', x)!r}")
        if x.shape[3] != self.in_channels:
            raise ValueError(f"{self!r} expected {self.in_channels!r} input channels, got "
                             f"{x.shape[3]!r} (NHWC input shape {x.shape!r})")
        if x.dtype != self.weight.data.dtype:
            raise TypeError(f"{self!r} has dtype {self.weight.data.dtype!r}, got input of dtype {x.dtype!r}")
        b = self.bias.data if self.bias is not None else None
        self._halo = None
        if self.context.spatial:
            # Split map: the context brings the halo (padding included) and runs the conv
            # with padding 0, the interior while the halo travels.
            geometry = dict(self._geometry(), padding=(0, 0))
            y, self._halo = self.context.window_apply(
                self, x, self.kernel_size, self.stride, self.padding, self.dilation, 0.0,
                lambda slab: conv2d_forward(slab, self.weight.data, b, **geometry))
            self._x = x  # backward rebuilds the halo buffer from x and the saved halo bands
            return y
        self._x = x
        return conv2d_forward(x, self.weight.data, b, **self._geometry())

    def _backward(self, dy):
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        bias = self.bias
        x = self._x if self._halo is None else self.context.window_saved_input(self._halo, self._x)
        dx, dw, db = conv2d_backward(
            x, self.weight.data, dy, **self._geometry(),
            need_dx=self.needs_input_grad, need_dw=self.weight.requires_grad,
            need_db=bias is not None and bias.requires_grad)
        accumulate_grads(self, dw, db)
        if dx is not None and self._halo is not None:
            dx = self.context.window_input_grad(self._halo, dx)
        return dx

    extra_repr = convolution_repr
