"""Upsample: nearest-neighbour enlargement of images (4-D) and volumes (5-D)."""
import numpy as np

from ..ops.pool3d import upsample_nearest_backward, upsample_nearest_forward
from .module import Module

__all__ = ["Upsample"]


class Upsample(Module):
    """``Upsample(scale_factor, mode="nearest")`` as ``torch.nn.Upsample`` for integer
    scale factors: one per spatial axis (2 for images, 3 for volumes) or one for all.

    Each output element copies its input element, so a map split over ranks upsamples
    block by block: the layer is pointwise for the spatial split.
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
        self._fa = None

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
        return upsample_nearest_forward(x, *self._fa)

    def _backward(self, dy):
        if self._fa is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return upsample_nearest_backward(dy, *self._fa)

    def extra_repr(self):
        f = self.scale_factor[0] if len(set(self.scale_factor)) == 1 else self.scale_factor
        return f"scale_factor={f}, mode={self.mode!r}"
