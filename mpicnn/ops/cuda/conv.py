"""2-D convolution on NHWC arrays: im2col/col2im kernels (``kernels/conv.cu``) + GEMM.

Same signatures, layouts and results as ``mpicnn.ops.conv`` (x (N,H,W,C), w
(O,C/groups,KH,KW), y (N,Ho,Wo,O)). The GEMMs run through ``xp.matmul`` (cuBLAS on
the GPU); the bias is added and reduced by ``kernels/bias.cu``.

    forward    cols = im2col(x)  (G, n*Ho*Wo, K)   K = KH*KW*Cg
               y    = cols @ wmat (per group)      wmat (G, K, Og)
    backward   dW   = cols^T @ dy                   (cols rebuilt per chunk)
               dX   = col2im(dy @ wmat^T)
               db   = sum of dy over (n, i, j)

Samples are processed in chunks whose ``cols`` buffer stays under ``COLS_BYTES``.
A 1x1, stride-1, unpadded, ungrouped convolution needs no im2col: x is its own cols.
"""
from ...backend import array_module, is_array
from ..conv import _check, _weight_from_matrix, _weight_matrix, pair
from ._launch import Family, float_array, i64, launch1d
from .bias import bias_add, bias_grad

K = Family("conv")

COLS_BYTES = 64 * 2 ** 20  # largest im2col buffer per chunk


class _Geometry:
    def __init__(self, x, w, stride, padding, dilation, groups, Ho, Wo, chunk):
        self.N, self.H, self.W, self.C = x.shape
        O, Cg, self.KH, self.KW = w.shape
        self.G, self.Og, self.Ho, self.Wo = groups, O // groups, Ho, Wo
        self.K = self.KH * self.KW * Cg
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.pointwise = (self.KH, self.KW, stride, padding, groups) == (1, 1, (1, 1), (0, 0), 1)
        if chunk is None:
            chunk = COLS_BYTES // max(1, self.G * Ho * Wo * self.K * x.itemsize)
        self.chunk = max(1, min(int(chunk), self.N))
        self.xp = array_module(x)
        self._buf = None

    def chunks(self):
        for n0 in range(0, self.N, self.chunk):
            yield n0, min(self.N, n0 + self.chunk)

    def buffer(self, nb, dtype):
        """A contiguous (G, nb*Ho*Wo, K) view of one reused buffer."""
        size = self.G * self.chunk * self.Ho * self.Wo * self.K
        if self._buf is None:
            self._buf = self.xp.empty(size, dtype)
        return self._buf[:self.G * nb * self.Ho * self.Wo * self.K].reshape(self.G, -1, self.K)

    def args(self, nb):
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        return tuple(i64(v) for v in (nb, self.H, self.W, self.C, self.G, self.KH, self.KW,
                                      sh, sw, ph, pw, dh, dw, self.Ho, self.Wo))

    def cols(self, x, n0, n1):
        """im2col of samples [n0, n1): (G, (n1-n0)*Ho*Wo, K)."""
        if self.pointwise:
            return x[n0:n1].reshape(1, -1, self.C)
        cols = self.buffer(n1 - n0, x.dtype)
        launch1d(K.fn("im2col", x.dtype), cols.size, (x[n0:n1], cols) + self.args(n1 - n0))
        return cols

    def col2im(self, dcols, dx, n0, n1):
        launch1d(K.fn("col2im", dx.dtype), (n1 - n0) * self.H * self.W * self.C,
                 (dcols, dx[n0:n1]) + self.args(n1 - n0))


def _grouped(a, G, Og):
    """(n, Ho, Wo, G*Og) -> (G, n*Ho*Wo, Og) view."""
    return a.reshape(-1, G, Og).transpose(1, 0, 2)


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, chunk=None):
    """x (N,H,W,C) NHWC, w (O,C/groups,KH,KW), b (O,)|None -> y (N,Ho,Wo,O)."""
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    Ho, Wo = _check(x, w, b, stride, padding, dilation, int(groups))
    x = float_array(x, "conv2d", 4)
    geo = _Geometry(x, w, stride, padding, dilation, int(groups), Ho, Wo, chunk)
    xp, G, Og = geo.xp, geo.G, geo.Og
    wmat = _weight_matrix(w, G)
    y = xp.empty((geo.N, Ho, Wo, G * Og), x.dtype)
    for n0, n1 in geo.chunks():
        cols = geo.cols(x, n0, n1)
        if G == 1:
            xp.matmul(cols[0], wmat[0], out=y[n0:n1].reshape(-1, Og))
        else:
            _grouped(y[n0:n1], G, Og)[...] = xp.matmul(cols, wmat)
    if b is not None:
        bias_add(y, b)
    return y


def conv2d_backward(x, w, dy, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                    need_dw=True, need_db=True, chunk=None):
    """Returns (dx, dw, db); each None when not asked for (shapes as the NumPy op)."""
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    Ho, Wo = _check(x, w, None, stride, padding, dilation, int(groups))
    x = float_array(x, "conv2d backward", 4)
    N, H, W, C = x.shape
    O = w.shape[0]
    if not is_array(dy) or tuple(dy.shape) != (N, Ho, Wo, O):
        raise ValueError(f"conv2d backward expected dy of shape {(N, Ho, Wo, O)!r}, got "
                         f"{getattr(dy, 'shape', dy)!r}")
    if dy.dtype != x.dtype:
        raise TypeError(f"conv2d backward dy dtype {dy.dtype!r} differs from x dtype {x.dtype!r}")
    dy = float_array(dy, "conv2d backward dy", 4)
    geo = _Geometry(x, w, stride, padding, dilation, int(groups), Ho, Wo, chunk)
    xp, G, Og = geo.xp, geo.G, geo.Og
    dx = dw = db = None
    if need_db:
        db = bias_grad(dy)
    if need_dw:
        dwmat = None
        for n0, n1 in geo.chunks():
            cols = geo.cols(x, n0, n1)
            part = xp.matmul(cols.transpose(0, 2, 1), _grouped(dy[n0:n1], G, Og))
            if dwmat is None:
                dwmat = part
            else:
                dwmat += part
        dw = _weight_from_matrix(dwmat, w.shape)
    if need_dx:
        wmatT = _weight_matrix(w, G).transpose(0, 2, 1)  # (G, Og, K)
        if geo.pointwise:
            dx = xp.matmul(dy.reshape(-1, O), wmatT[0]).reshape(N, H, W, C)
        else:
            dx = xp.empty((N, H, W, C), x.dtype)
            for n0, n1 in geo.chunks():
                dcols = geo.buffer(n1 - n0, x.dtype)
                xp.matmul(_grouped(dy[n0:n1], G, Og), wmatT, out=dcols)
                geo.col2im(dcols, dx, n0, n1)
    return dx, dw, db
