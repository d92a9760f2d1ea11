"""Upsample: nearest-neighbour enlargement of images (4-D) and volumes (5-D)."""
import numpy as np

from ..ops.pool3d import upsample_nearest_backward, upsample_nearest_forward
from .module import Module

__all__ = ["Upsample"]


class Upsample(Module):
    """``Upsample(scale_factor, mode="nearest")`` as ``torch.nn.Upsample`` for integer
    scale factors: one per spatial axis (2 for images, 3 for volumes) or one for all.

    Under a spatial split of images each rank computes its balanced block of the output,
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
        if not isinstance(x, np.ndarray) or x.ndim not in (4, 5):
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
        if x.ndim != 4:
            raise ValueError(f"{self!r} cannot run on volumes split over ranks (spatial=) yet")
        factors = self._fa[0]
        xin, handle, (r0, c0) = self.context.upsample_input(self, x, factors)
        out_hw = tuple(b - a for a, b in (handle[1].rows.out, handle[1].cols.out))
        self._split = handle, xin.shape, (r0, c0), out_hw
        y = upsample_nearest_forward(xin, *self._fa)
        return np.ascontiguousarray(y[:, r0:r0 + out_hw[0], c0:c0 + out_hw[1]])

    def _backward(self, dy):
        if self._fa is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        if self._split is None:
            return upsample_nearest_backward(dy, *self._fa)
        handle, xshape, (r0, c0), (h, w) = self._split
        factors = self._fa[0]
        full = np.zeros((dy.shape[0], xshape[1] * factors[0], xshape[2] * factors[1], dy.shape[3]), dy.dtype)
        full[:, r0:r0 + h, c0:c0 + w] = dy
        return self.context.window_input_grad(handle, upsample_nearest_backward(full, *self._fa))

    def extra_repr(self):
        f = self.scale_factor[0] if len(set(self.scale_factor)) == 1 else self.scale_factor
        return f"scale_factor={f}, mode={self.mode!r}"
