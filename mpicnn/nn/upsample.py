"""Upsample: nearest-neighbour enlargement of images (4-D) and volumes (5-D)."""
import numpy as np

from ..backend import array_module, is_array
from ..ops.pool3d import upsample_nearest_backward, upsample_nearest_forward
from .module import Module

__all__ = ["Upsample"]


class Upsample(Module):
    """``Upsample(scale_factor, mode="nearest")`` as ``torch.nn.Upsample`` for integer
    scale factors: one per spatial axis (2 for images, 3 for volumes) or one for all.

    Under a spatial split of images or volumes each rank computes its balanced block of the output,
    reading the input rows and columns it copies (a one-row halo where uneven sizes put
    them on a neighbour).
    """

    layout = "NHWC"  # images stay channels-last between the NHWC layers; volumes are NCDHW

    def __init__(self, scale_factor, mode="nearest"):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample supports mode='nearest' only, got {mode!r}")
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,)
        if not factors or not all(isinstance(f, (int, np.integer)) and not isinstance(f, bool)
                                  and f >= 1 for f in factors):
            raise ValueError(f"Upsample scale_factor must be a positive int or a tuple of them, "
                             f"got {scale_factor!r}")
        self.scale_factor = tuple(int(f) for f in factors)
        self.mode = mode
        self._fa = self._split = None

    def _factors_axes(self, x):
        if not is_array(x) or x.ndim not in (4, 5):
            raise ValueError(f"{self!r} expects a 4-D image or 5-D volume batch, got shape "
                             f"{getattr(x, 'shape', x)!r}")
        axes = (1, 2) if x.ndim == 4 else (2, 3, 4)  # NHWC images, NCDHW volumes
        f = self.scale_factor
        if len(f) == 1:
            f = f * len(axes)
        if len(f) != len(axes):
            raise ValueError(f"{self!r} has {len(f)} scale factors for a {len(axes)}-D input")
        return f, axes

    def _forward(self, x):
        self._fa = self._factors_axes(x)
        self._split = None
        if not self.context.spatial:
            return upsample_nearest_forward(x, *self._fa)
        factors, axes = self._fa
        if x.ndim == 4:  # NHWC image block
            xin, handle, offset = self.context.upsample_input(self, x, factors)
            plans = (handle[1].rows, handle[1].cols)
        else:  # NCDHW volume block
            xin, handle, offset = self.context.volume_upsample_input(self, x, factors)
            plans = handle[1].axes
        size = tuple(p.out[1] - p.out[0] for p in plans)
        self._split = handle, xin.shape, offset, size
        y = upsample_nearest_forward(xin, factors, axes)[self._block(axes, offset, size)]
        return array_module(x).ascontiguousarray(y)

    @staticmethod
    def _block(axes, offset, size):
        """Index of this rank's output block inside the upsampled halo input."""
        index = [slice(None)] * (len(axes) + 2)  # batch and channel axes besides the spatial ones
        for ax, o, n in zip(axes, offset, size):
            index[ax] = slice(o, o + n)
        return tuple(index)

    def _backward(self, dy):
        if self._fa is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        if self._split is None:
            return upsample_nearest_backward(dy, *self._fa)
        handle, xshape, offset, size = self._split
        factors, axes = self._fa
        shape = list(dy.shape)
        for ax, f in zip(axes, factors):
            shape[ax] = xshape[ax] * f
        full = array_module(dy).zeros(shape, dy.dtype)
        full[self._block(axes, offset, size)] = dy
        dxin = upsample_nearest_backward(full, factors, axes)
        if dy.ndim == 4:
            return self.context.window_input_grad(handle, dxin)
        return self.context.volume_input_grad(handle, dxin)

    def extra_repr(self):
        f = self.scale_factor[0] if len(set(self.scale_factor)) == 1 else self.scale_factor
        return f"scale_factor={f}, mode={self.mode!r}"
