"""BatchNorm3d: BatchNorm2d's statistics and running averages over (N, D, H, W)."""
from ..backend import array_module, is_array
from .norm import BatchNorm2d

__all__ = ["BatchNorm3d"]


class BatchNorm3d(BatchNorm2d):
    """``BatchNorm3d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, dtype=np.float32)`` as ``torch.nn.BatchNorm3d``, on
    (N, C, D, H, W) volumes; statistics shared over ranks like BatchNorm2d's."""

    layout = "NCHW"  # volumes are channels-first (layout conversions leave 5-D arrays alone)

    def forward(self, x):
        return self._forward(x)

    def backward(self, dy):
        return self._backward(dy)

    def _forward(self, x):
        if not is_array(x) or x.ndim != 5:
            raise ValueError(f"{self!r} expects a 5-D (N, C, D, H, W) input, got shape "
                             f"{getattr(x, 'shape', x)!r}")
        # The channels-last ops see (N, D*H, W, C): BatchNorm2d's checks and statistics.
        N, C, D, H, W = x.shape
        xp = array_module(x)
        xl = xp.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)).reshape(N, D * H, W, C)
        y = super()._forward(xl)
        return xp.ascontiguousarray(y.reshape(N, D, H, W, C).transpose(0, 4, 1, 2, 3))

    def _backward(self, dy):
        N, C, D, H, W = dy.shape
        xp = array_module(dy)
        dl = xp.ascontiguousarray(dy.transpose(0, 2, 3, 4, 1)).reshape(N, D * H, W, C)
        dx = super()._backward(dl)
        return xp.ascontiguousarray(dx.reshape(N, D, H, W, C).transpose(0, 4, 1, 2, 3))
