"""Dropout with a counter-based mask (see ``mpicnn.ops.dropout`` for the hash)."""
import numpy as np

from ..backend import asarray, is_array
from ..ops.dropout import dropout_keep, dropout_scale_mask
from . import init
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """``Dropout(p=0.5)``: in training, zero each element with probability p and scale the
    rest by 1/(1-p); identity in eval mode.

    The mask depends only on (layer seed, ``context.step``, GLOBAL sample index
    ``context.sample_offset + n``, NCHW element index), so it is the same however the
    batch is split over ranks and whatever the internal layout. The layer seed is drawn
    from the init RNG at construction (``self.seed``; saved by whoever saves the model
    config, not in the state_dict).

    ``channel_offset``: the global index of the input's first channel (feature of a 2-D
    input) when it holds only a block of them (``mpicnn.parallel.channel``).
    """

    layout = "NHWC"
    channel_offset = 0

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p!r}")
        self.p = p
        self.seed = init.seed_int(rng)
        self._mask = None

    def _apply(self, x, layout):
        if not self.training or self.p == 0.0:
            self._mask = False
            return x
        if not is_array(x) or x.dtype.kind != "f" or x.ndim < 1:
            raise TypeError(f"{self!r} expects a floating-point array, got {getattr(x, 'dtype', type(x))!r}")
        ctx = self.context
        if (ctx.spatial and x.ndim == 4) or self.channel_offset:
            self._mask = self._block_mask(x, layout)
        else:
            self._mask = dropout_scale_mask(self.seed, ctx.step, ctx.sample_offset, x.shape, self.p,
                                            x.dtype, layout)
        return x * self._mask

    def _block_mask(self, x, layout):
        """The mask of this rank's block of a map split over height/width and/or channels
        (features): the serial run's hash keyed on the GLOBAL element index
        (c*H + h)*W + w (c for a 2-D input), so every block drops what the 1-rank run
        drops. Built with the NumPy hash on the host (the kernel indexes local maps)."""
        ctx = self.context
        channel_axis = 1 if layout == "NCHW" and x.ndim == 4 else -1
        c0 = self.channel_offset
        c = np.arange(c0, c0 + x.shape[channel_axis], dtype=np.uint64)
        if x.ndim == 2:
            index = c
        elif x.ndim == 4:
            hw = x.shape[1:3] if layout == "NHWC" else x.shape[2:4]
            (h0, H), (w0, W) = ctx.origin(self, hw) if ctx.spatial else ((0, hw[0]), (0, hw[1]))
            h = np.arange(h0, h0 + hw[0], dtype=np.uint64)[:, None, None]
            w = np.arange(w0, w0 + hw[1], dtype=np.uint64)[None, :, None]
            index = (c[None, None, :] * np.uint64(H) + h) * np.uint64(W) + w  # (h, w, C)
            if layout != "NHWC":
                index = np.ascontiguousarray(index.transpose(2, 0, 1))
        else:
            raise ValueError(f"{self!r} on a channel block expects a 2-D or 4-D input, got shape {x.shape!r}")
        keep = dropout_keep(self.seed, ctx.step, ctx.sample_offset, x.shape[0], index, self.p)
        scale = x.dtype.type(0.0 if self.p >= 1.0 else 1.0 / (1.0 - self.p))
        mask = keep.astype(x.dtype)
        mask *= scale
        return asarray(mask)

    def _unapply(self, dy):
        if self._mask is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        if self._mask is False:
            return dy
        if dy.shape != self._mask.shape:
            raise ValueError(f"{self!r} backward: dy shape {dy.shape!r} differs from forward "
                             f"shape {self._mask.shape!r}")
        return dy * self._mask

    # NHWC internally (what containers call) ...
    def _forward(self, x):
        return self._apply(x, "NHWC")

    def _backward(self, dy):
        return self._unapply(dy)

    # ... and NCHW publicly, without converting (the mask is built in the caller's layout).
    def forward(self, x):
        return self._apply(x, "NCHW")

    def backward(self, dy):
        return self._unapply(dy)

    def extra_repr(self):
        return f"p={self.p}"
