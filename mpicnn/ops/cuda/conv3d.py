"""3-D convolution on NCDHW volumes: im2col/col2im kernels (``kernels/conv3d.cu``) + GEMM.

Same signatures, layouts and results as ``mpicnn.ops.conv3d`` (x (N,C,D,H,W), w
(O,C/groups,KD,KH,KW), y (N,O,Do,Ho,Wo)); the GEMMs run through ``xp.matmul`` (cuBLAS
on the GPU).

    forward    cols = im2col3d(x)  (G, n*Do*Ho*Wo, K)   K = KD*KH*KW*Cg
               y    = cols @ wmat (per group), wmat (G, K, Og), made NCDHW
    backward   dW   = cols^T @ dy  (cols rebuilt per chunk)
               dX   = col2im3d(dy @ wmat^T)
               db   = sum of dy over (n, d, h, w)

Samples are processed in chunks whose ``cols`` buffer stays under ``COLS_BYTES``.
"""
import numpy as np

from ...backend import array_module, is_array
from ..conv3d import _check, _weight_from_matrix, _weight_matrix, triple
from ._launch import Family, float_array, i64, launch1d

K = Family("conv3d")

COLS_BYTES = 64 * 2 ** 20  # largest im2col buffer per chunk


class _Geometry:
    def __init__(self, x, w, stride, padding, dilation, groups, out, chunk):
        self.N, self.C = x.shape[:2]
        self.size = x.shape[2:]
        self.kernel = tuple(w.shape[2:])
        self.G, self.Og, self.out = groups, w.shape[0] // groups, out
        self.K = self.kernel[0] * self.kernel[1] * self.kernel[2] * (self.C // groups)
        self.rows = out[0] * out[1] * out[2]  # output voxels per sample
        self.geometry = stride + padding + dilation
        if chunk is None:
            chunk = COLS_BYTES // max(1, self.G * self.rows * self.K * x.itemsize)
        self.chunk = max(1, min(int(chunk), self.N))
        self.xp = array_module(x)
        self._buf = None

    def chunks(self):
        for n0 in range(0, self.N, self.chunk):
            yield n0, min(self.N, n0 + self.chunk)

    def buffer(self, nb, dtype):
        """A contiguous (G, nb*Do*Ho*Wo, K) view of one reused buffer."""
        if self._buf is None:
            self._buf = self.xp.empty(self.G * self.chunk * self.rows * self.K, dtype)
        return self._buf[:self.G * nb * self.rows * self.K].reshape(self.G, nb * self.rows, self.K)

    def args(self, nb):
        return tuple(i64(v) for v in (nb, self.C) + self.size + (self.G,) + self.kernel + self.geometry
                     + self.out)

    def cols(self, x, n0, n1):
        cols = self.buffer(n1 - n0, x.dtype)
        launch1d(K.fn("im2col3d", x.dtype), cols.size, (x[n0:n1], cols) + self.args(n1 - n0))
        return cols

    def col2im(self, dcols, dx, n0, n1):
        launch1d(K.fn("col2im3d", dx.dtype), dx[n0:n1].size, (dcols, dx[n0:n1]) + self.args(n1 - n0))


def _grouped(a, G, Og):
    """(n, Do, Ho, Wo, G*Og) channels-last -> (G, n*Do*Ho*Wo, Og) view."""
    return a.reshape(int(np.prod(a.shape[:-1])), G, Og).transpose(1, 0, 2)  # Og may be 0


def _geometry(x, w, b, stride, padding, dilation, groups, chunk, name):
    stride, padding = triple(stride, "stride"), triple(padding, "padding")
    dilation = triple(dilation, "dilation")
    x = float_array(x, name, 5)
    out = _check(x, w, b, stride, padding, dilation, int(groups))
    return x, _Geometry(x, w, stride, padding, dilation, int(groups), out, chunk)


def conv3d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, chunk=None):
    """x (N,C,D,H,W), w (O,C/groups,KD,KH,KW), b (O,)|None -> y (N,O,Do,Ho,Wo)."""
    x, geo = _geometry(x, w, b, stride, padding, dilation, groups, chunk, "conv3d")
    xp, G, Og = geo.xp, geo.G, geo.Og
    wmat = _weight_matrix(w, G)
    y = xp.empty((geo.N,) + geo.out + (G * Og,), x.dtype)  # channels-last, made NCDHW at the end
    for n0, n1 in geo.chunks():
        _grouped(y[n0:n1], G, Og)[...] = xp.matmul(geo.cols(x, n0, n1), wmat)
    if b is not None:
        y += b
    return xp.ascontiguousarray(y.transpose(0, 4, 1, 2, 3))


def conv3d_backward(x, w, dy, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                    need_dw=True, need_db=True, chunk=None):
    """Returns (dx, dw, db); each None when not asked for (shapes as the NumPy op)."""
    x, geo = _geometry(x, w, None, stride, padding, dilation, groups, chunk, "conv3d backward")
    xp, G, Og = geo.xp, geo.G, geo.Og
    want = (geo.N, G * Og) + geo.out
    if not is_array(dy) or tuple(dy.shape) != want:
        raise ValueError(f"conv3d backward expected dy of shape {want!r}, got {getattr(dy, 'shape', dy)!r}")
    if dy.dtype != x.dtype:
        raise TypeError(f"conv3d backward dy dtype {dy.dtype!r} differs from x dtype {x.dtype!r}")
    dyl = xp.ascontiguousarray(dy.transpose(0, 2, 3, 4, 1))  # (N, Do, Ho, Wo, O)
    dx = dw = db = None
    if need_db:
        db = dyl.reshape(int(np.prod(dyl.shape[:-1])), G * Og).sum(axis=0)
    if need_dw:
        dwmat = xp.zeros((G, geo.K, Og), x.dtype)
        for n0, n1 in geo.chunks():
            dwmat += xp.matmul(geo.cols(x, n0, n1).transpose(0, 2, 1), _grouped(dyl[n0:n1], G, Og))
        dw = _weight_from_matrix(dwmat, w.shape)
    if need_dx:
        wmatT = _weight_matrix(w, G).transpose(0, 2, 1)  # (G, Og, K)
        dx = xp.empty(x.shape, x.dtype)
        for n0, n1 in geo.chunks():
            dcols = geo.buffer(n1 - n0, x.dtype)
            xp.matmul(_grouped(dyl[n0:n1], G, Og), wmatT, out=dcols)
            geo.col2im(dcols, dx, n0, n1)
    return dx, dw, db
