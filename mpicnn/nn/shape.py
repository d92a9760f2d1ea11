"""Flatten: (N, C, H, W) -> (N, C*H*W) in NCHW order, as ``torch.nn.Flatten()``."""
from ..backend import array_module, is_array
from ..errors import UserError
from .module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Flattens every axis after the first. A 4-D input is flattened in NCHW order
    whatever layout it is carried in, so the following Linear sees PyTorch's features."""

    layout = "NHWC"

    def __init__(self):
        super().__init__()
        self._shape = None
        self._nhwc = True

    def _flat(self, x):
        if not is_array(x) or x.ndim < 1:
            raise ValueError(f"{self!r} expects an array with a batch axis, got {x!r}")
        return x.reshape(x.shape[0], -1)

    def _refuse_split(self, x):
        if self.context.spatial and x.ndim == 4:
            raise UserError(f"{self!r}: flattening a feature map split over --parallel spatial=... "
                            "is not supported (its features would be spread over ranks); use a model "
                            "with global pooling before the head (convnet, resnet8, resnet20, vgg11) "
                            "or --parallel data=N")

    def _forward(self, x):  # x NHWC when 4-D
        self._refuse_split(x)
        y = self._flat(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x)
        self._shape, self._nhwc = x.shape, True
        return y

    def _backward(self, dy):
        shape = self._saved()
        if self._nhwc and len(shape) == 4:
            N, H, W, C = shape
            return array_module(dy).ascontiguousarray(dy.reshape(N, C, H, W).transpose(0, 2, 3, 1))
        return dy.reshape(shape)

    def forward(self, x):  # x NCHW when 4-D: a plain reshape
        self._refuse_split(x)
        y = self._flat(x)
        self._shape, self._nhwc = x.shape, False
        return y

    def backward(self, dy):
        return self._backward(dy)

    def _saved(self):
        if self._shape is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return self._shape
