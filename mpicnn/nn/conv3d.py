"""Conv3d: 3-D cross-correlation with PyTorch's parameters and init, on NCDHW volumes."""
import numpy as np

from ..backend import is_array
from ..ops.conv3d import conv3d_backward, conv3d_forward, conv3d_output_shape, triple
from .conv import accumulate_grads, convolution_repr, init_convolution
from .module import Module

__all__ = ["Conv3d"]


class Conv3d(Module):
    """``Conv3d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True, dtype=np.float32, rng=None)`` as ``torch.nn.Conv3d``.

    weight (out, in/groups, kd, kh, kw) and bias (out,) drawn as PyTorch does (kaiming
    uniform with a=sqrt(5), bias U(+-1/sqrt(fan_in))), weight first. Input (N, C, D, H, W).
    ``needs_input_grad = False`` on a first layer skips the input gradient. Under a
    spatial split of volumes the context brings the halo (``volume_window``) and the
    convolution runs with padding 0 on it, yielding exactly this rank's output block.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        init_convolution(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, dtype, rng, triple)
        self.needs_input_grad = True
        self._x = None
        self._halo = None

    def output_shape(self, d, h, w):
        """Spatial output size for a (d, h, w) input."""
        return conv3d_output_shape((d, h, w), self.kernel_size, self.stride, self.padding,
                                   self.dilation)

    def _geometry(self):
        # Under a spatial split the input arrives with its halo and padding included.
        padding = (0, 0, 0) if self._halo is not None else self.padding
        return dict(stride=self.stride, padding=padding, dilation=self.dilation, groups=self.groups)

    def forward(self, x):
        if not is_array(x) or x.ndim != 5:
            raise ValueError(f"{self!r} expects a 5-D (N, C, D, H, W) input, got shape "
                             f"{getattr(x, 'shape', x)!r}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self!r} expected {self.in_channels!r} input channels, got "
                             f"{x.shape[1]!r} (input shape {x.shape!r})")
        if x.dtype != self.weight.data.dtype:
            raise TypeError(f"{self!r} has dtype {self.weight.data.dtype!r}, got input of dtype {x.dtype!r}")
        self._halo = None
        if self.context.spatial:
            x, self._halo = self.context.volume_window(self, x, self.kernel_size, self.stride, self.padding,
                                                       self.dilation, 0.0)
        self._x = x
        b = self.bias.data if self.bias is not None else None
        return conv3d_forward(x, self.weight.data, b, **self._geometry())

    def backward(self, dy):
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        bias = self.bias
        dx, dw, db = conv3d_backward(
            self._x, self.weight.data, dy, **self._geometry(), need_dx=self.needs_input_grad,
            need_dw=self.weight.requires_grad, need_db=bias is not None and bias.requires_grad)
        accumulate_grads(self, dw, db)
        if dx is not None and self._halo is not None:
            dx = self.context.volume_input_grad(self._halo, dx)
        return dx

    extra_repr = convolution_repr
