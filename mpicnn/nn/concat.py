"""ConcatSkip: a U-Net skip connection, the input concatenated with its block's output."""
from ..backend import array_module
from ..ops.concat import concat_channels, split_channels
from .module import Module, convert

__all__ = ["ConcatSkip"]


def _channel_axis(x):
    return 3 if x.ndim == 4 else 1  # NHWC images inside containers; NCDHW volumes


class ConcatSkip(Module):
    """``torch.cat([x, block(x)], dim=1)``: the skip channels first, then the block's.

    The block must keep the spatial size (a U-Net level: downsample, inner levels,
    upsample back). Under a spatial split each rank concatenates its own block of the map.
    """

    layout = "NHWC"

    def __init__(self, block):
        if not isinstance(block, Module):
            raise TypeError(f"ConcatSkip takes a Module, got {block!r}")
        self.block = block
        self._split = None

    def _forward(self, x):
        y = convert(self.block._forward(convert(x, self.layout, self.block.layout)),
                    self.block.layout, self.layout)
        axis = _channel_axis(x)
        spatial = lambda a: a.shape[:axis] + a.shape[axis + 1:]  # noqa: E731
        if y.ndim != x.ndim or spatial(y) != spatial(x):
            raise ValueError(f"ConcatSkip: the block maps shape {x.shape!r} to {y.shape!r}; it must "
                             f"keep the batch and spatial sizes to concatenate channels")
        self._split = (x.shape[axis], axis)
        return concat_channels(x, y, axis)

    def _backward(self, dy):
        if self._split is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        c, axis = self._split
        dskip, dblock = split_channels(array_module(dy).ascontiguousarray(dy), c, axis)
        db = self.block._backward(convert(dblock, self.layout, self.block.layout))
        return dskip + convert(db, self.block.layout, self.layout)
