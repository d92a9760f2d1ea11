"""2-D convolution (cross-correlation, PyTorch semantics) on channels-last arrays.

Layouts (the CUDA kernels of ``kernels/conv.cu`` are checked against these functions):

    x    (N, H, W, C)               input, NHWC
    w    (O, C // groups, KH, KW)   weight, PyTorch's OIHW layout
    b    (O,) or None               bias
    y    (N, Ho, Wo, O)             output, NHWC

    Ho = (H + 2*ph - dh*(KH - 1) - 1) // sh + 1      (floor, as PyTorch; Wo alike)

    y[n, i, j, g*Og + o] = b[g*Og + o] + sum_{c < Cg, ki < KH, kj < KW}
        xpad[n, i*sh + ki*dh, j*sw + kj*dw, g*Cg + c] * w[g*Og + o, c, ki, kj]

with Cg = C // groups, Og = O // groups and ``xpad`` the input zero-padded by (ph, pw).

How it is computed (what makes it fast in NumPy; FACTS.md):

* im2col by ONE ``as_strided`` view of the padded input, shape
  (n, Ho, Wo, KH, KW, groups, Cg), copied once per chunk of samples into a
  C-contiguous ``cols`` buffer (groups, n*Ho*Wo, KH*KW*Cg). With dilation 1 the
  (KW, C) axes are adjacent in memory, so the copy moves runs of KW*C values.
* one GEMM per group, ``cols @ wmat`` with the large n*Ho*Wo dimension as the rows of
  the C-contiguous left operand, written straight into the NHWC output.
* samples are processed in chunks (``auto_chunk``: ``cols`` of about 2.5 MB) so the
  buffers stay in cache.
* backward: dW = cols^T @ dY (cols recomputed per chunk, still in cache);
  dX for stride 1 is the transposed convolution, i.e. this same forward applied to dY
  with the flipped, transposed weight and padding dh*(KH-1) - ph; for stride > 1
  (or padding > dilated kernel extent) it is dY @ wmat^T scattered back (col2im) by
  KH*KW strided adds.
* dX with few input channels (<= TAPS_MAX_CHANNELS): one GEMM per kernel tap, each
  added into its shifted window of dX (``_input_grad_taps``).
* K-major im2col buffer when each group has at most 3 channels (``_Im2col``).
* 3x3 stride-1 convolutions with many channels (forward and dX) use Winograd
  F(2x2, 3x3) instead (bottom of this file; ``USE_WINOGRAD = False`` turns it off).
  Passing an explicit ``chunk`` always takes the im2col path.
* wide layers on maps of at most 16 pixels run per kernel tap, skipping the taps that
  read only padding (``_small_map_*``, bottom of this file).
* where it measured faster (``_native_pays``), the native C kernels of
  ``ops/native/native.c`` (direct convolution, one register tile of pixels x output
  channels; ``ops/native.py``) replace all of the above for float32/float64, groups 1:
  convolutions with at most 32 channels (128 where Winograd does not apply), and every
  weight gradient with at least 4 input channels. ``MPICNN_NATIVE=0`` turns them off.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backend import array_module, is_array, kernel_version
from . import native

__all__ = ["conv2d_forward", "conv2d_backward", "conv_output_size", "pair"]

# Samples per im2col chunk: as many as keep the ``cols`` buffer near this size (measured
# on Zen 4: 1-3 MB is best for both small-K and large-K layers), at most MAX_CHUNK.
CHUNK_BYTES = 2_500_000
MAX_CHUNK = 16


def auto_chunk(Ho, Wo, K, itemsize):
    """Samples per chunk so that the im2col buffer (chunk*Ho*Wo, K) is about CHUNK_BYTES."""
    return int(max(1, min(MAX_CHUNK, CHUNK_BYTES // max(1, Ho * Wo * K * itemsize))))


def pair(value, name):
    """``value`` as a pair of Python ints; accepts an int or a 2-sequence of ints."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(size, kernel, stride, padding, dilation=1):
    """Output length along one axis (floor mode, as PyTorch)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check(x, w, b, stride, padding, dilation, groups):
    """Validate a conv's arguments (NumPy or CuPy arrays); returns the output size (Ho, Wo)."""
    if not is_array(x) or x.ndim != 4:
        raise ValueError(f"conv2d expects a 4-D NHWC array, got shape {getattr(x, 'shape', x)!r}")
    if not is_array(w) or w.ndim != 4:
        raise ValueError(f"conv2d weight must be 4-D (O, C/groups, KH, KW), got shape "
                         f"{getattr(w, 'shape', w)!r}")
    if x.dtype != w.dtype:
        raise TypeError(f"conv2d input dtype {x.dtype!r} differs from weight dtype {w.dtype!r}")
    O, Cg, KH, KW = w.shape
    N, H, W, C = x.shape
    if not isinstance(groups, (int, np.integer)) or groups < 1 or C % groups or O % groups:
        raise ValueError(f"groups={groups!r} must be a positive int dividing in_channels {C} "
                         f"and out_channels {O}")
    if C != Cg * groups:
        raise ValueError(f"conv2d expected {Cg * groups} input channels, got {C} "
                         f"(input shape NHWC {x.shape!r})")
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"conv2d bias must have shape {(O,)!r}, got {b.shape!r}")
    for name, v, lo in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if min(v) < lo:
            raise ValueError(f"conv2d {name} must be >= {lo}, got {v!r}")
    Ho = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    Wo = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"conv2d input of spatial size {(H, W)!r} is too small for kernel "
                         f"{(KH, KW)!r} with padding {padding!r} and dilation {dilation!r}")
    return Ho, Wo


# Where the native kernels beat im2col + BLAS (and Winograd), one thread, Zen 4, measured
# per pass against the NumPy code (best of 7, bench conv's shapes): forward and input
# gradient up to 32 channels in and out (16->16 at 32x32: 6.7 -> 3.0 ms forward, 6.4 ->
# 3.1 ms input gradient), and up to 128 where Winograd does not apply (64->64 at 8x8:
# 3.7 -> 3.1 ms; 64->128 stride 2: 1.7 -> 1.6 ms); wider layers keep BLAS's blocking. The
# weight gradient (a GEMM with a huge inner dimension, accumulated in registers) wins
# from 4 input channels up (16->16: 7.2 -> 3.3 ms; 256->256 at 8x8: 54 -> 50 ms); with
# 1-3 channels its tiles are too thin, except where ``native.runs_along_rows`` and
# ``native.taps_weight_grad`` have kernels of their own for them.
NATIVE_MAX_CHANNELS = 32
NATIVE_NO_WINOGRAD_MAX_CHANNELS = 128
NATIVE_DW_MIN_CHANNELS = 4


def uses_native(dtype, groups, pass_, C, O, winograd=False, stride=(1, 1), kernel=(1, 1), dilation=(1, 1)):
    """Whether conv2d_forward/backward run ``pass_`` ("fwd", "dx" or "dw") of a NumPy
    convolution with C input and O output channels in the native kernels (``winograd``:
    whether that pass would otherwise take the Winograd path; ``kernel``: (KH, KW)). The
    planner asks too."""
    if not native.supports(dtype, groups):
        return False
    if pass_ == "dw":
        return (C >= NATIVE_DW_MIN_CHANNELS or native.runs_along_rows(dtype, C, O, stride)
                or native.taps_weight_grad(C, kernel[1], dilation))
    widest = max(C, O)
    return widest <= NATIVE_MAX_CHANNELS or (widest <= NATIVE_NO_WINOGRAD_MAX_CHANNELS and not winograd)


def conv_paths(dtype, wshape, stride, padding, dilation, groups, in_hw):
    """Which code runs each pass of a NumPy convolution (pairs for stride, padding and
    dilation): {"fwd": .., "dw": .., "dx": ..} with values "native", "winograd", "taps"
    (small maps, below) or "im2col" (which also stands for the per-tap and col2im input
    gradients of few channels). For the
    benchmarks' tables and the planner's workspace."""
    O, Cg, KH, KW = wshape
    C = Cg * groups
    Ho = conv_output_size(in_hw[0], KH, stride[0], padding[0], dilation[0])
    Wo = conv_output_size(in_hw[1], KW, stride[1], padding[1], dilation[1])
    qh, qw = dilation[0] * (KH - 1) - padding[0], dilation[1] * (KW - 1) - padding[1]
    wino = {"fwd": _winograd_applies(wshape, stride, dilation, groups, padding, (Ho, Wo)),
            "dx": tuple(stride) == (1, 1) and qh >= 0 and qw >= 0
            and _winograd_applies(wshape, (1, 1), dilation, groups, (qh, qw), in_hw), "dw": False}
    if _small_map_applies(wshape, stride, padding, groups, (Ho, Wo)):
        return dict.fromkeys(("fwd", "dw", "dx"), "taps")
    return {p: "native" if uses_native(dtype, groups, p, C, O, wino[p], stride, (KH, KW), dilation) else "winograd" if wino[p] else "im2col"
            for p in ("fwd", "dw", "dx")}


def _native_pays(x, groups, pass_, C, O, winograd=False, stride=(1, 1), kernel=(1, 1), dilation=(1, 1)):
    return isinstance(x, np.ndarray) and uses_native(x.dtype, groups, pass_, C, O, winograd, stride, kernel,
                                                     dilation)


def _weight_matrix(w, groups):
    """(O, Cg, KH, KW) -> (groups, KH*KW*Cg, Og), rows ordered (ki, kj, c) like ``cols``."""
    O, Cg, KH, KW = w.shape
    Og = O // groups
    wm = w.reshape(groups, Og, Cg, KH, KW).transpose(0, 3, 4, 2, 1)
    return array_module(w).ascontiguousarray(wm).reshape(groups, KH * KW * Cg, Og)


def _weight_from_matrix(wmat, shape):
    """Inverse of ``_weight_matrix``: (groups, KH*KW*Cg, Og) -> (O, Cg, KH, KW)."""
    O, Cg, KH, KW = shape
    G = wmat.shape[0]
    w = wmat.reshape(G, KH, KW, Cg, O // G).transpose(0, 4, 3, 1, 2)
    return array_module(wmat).ascontiguousarray(w).reshape(shape)


# Im2col buffers are K-major when each group has at most this many channels (below):
# RGB first layers gain ~15% (forward + dW), lenet5's 6-channel conv loses ~50%.
KMAJOR_MAX_CHANNELS = 3


class _Im2col:
    """Chunked im2col of an NHWC array: ``cols(n0, n1)`` -> (G, (n1-n0)*Ho*Wo, KH*KW*Cg).

    Keeps one zero-bordered padding buffer and one ``cols`` buffer for all chunks. With
    few channels per group (first layers) the buffer is K-major, (G, K, rows), and
    ``cols`` a transposed view of it (BLAS reads either): each (tap, channel) copies
    runs of Wo values instead of runs of KW*Cg (1.2 ms -> 0.3 ms for lenet5's first conv).
    """

    def __init__(self, x, KH, KW, stride, padding, dilation, groups, Ho, Wo, chunk, ones=False):
        self.x, self.KH, self.KW = x, KH, KW
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.Ho, self.Wo = Ho, Wo
        N, H, W, C = x.shape
        if chunk is None:
            chunk = auto_chunk(Ho, Wo, KH * KW * (C // groups), x.itemsize)
        nc = max(1, min(chunk, N))
        self.step = nc
        ph, pw = padding
        self.xpad = None
        if ph or pw:
            self.xpad = np.zeros((nc, H + 2 * ph, W + 2 * pw, C), x.dtype)
        K = KH * KW * (C // groups)
        self.K = K
        self.kmajor = C // groups <= KMAJOR_MAX_CHANNELS
        # With ``ones`` a last column of ones folds the bias into the GEMM (forward) and
        # yields db from the dW GEMM (backward).
        if self.kmajor:
            self.buf = np.empty((groups, K + bool(ones), nc * Ho * Wo), x.dtype)
            if ones:
                self.buf[:, K] = 1
        else:
            self.buf = np.empty((groups, nc * Ho * Wo, K + bool(ones)), x.dtype)
            if ones:
                self.buf[:, :, K] = 1

    def __call__(self, n0, n1):
        x, (ph, pw), (sh, sw), (dh, dw) = self.x, self.padding, self.stride, self.dilation
        nb, G, Ho, Wo = n1 - n0, self.groups, self.Ho, self.Wo
        N, H, W, C = x.shape
        if self.xpad is not None:
            xp = self.xpad[:nb]
            xp[:, ph:ph + H, pw:pw + W] = x[n0:n1]
        else:
            xp = x[n0:n1]
        s0, s1, s2, s3 = xp.strides
        Cg = C // G
        if self.kmajor:
            view = as_strided(xp, (G, self.KH, self.KW, Cg, nb, Ho, Wo),
                              (s3 * Cg, s1 * dh, s2 * dw, s3, s0, s1 * sh, s2 * sw), writeable=False)
            b0, b1, b2 = self.buf.strides
            dest = as_strided(self.buf, view.shape,
                              (b0, b1 * self.KW * Cg, b1 * Cg, b1, b2 * Ho * Wo, b2 * Wo, b2))
            np.copyto(dest, view)
            return self.buf[:, :, :nb * Ho * Wo].transpose(0, 2, 1)
        view = as_strided(xp, (G, nb, Ho, Wo, self.KH, self.KW, Cg),
                          (s3 * Cg, s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), writeable=False)
        cols = self.buf[:, :nb * Ho * Wo]
        np.copyto(cols[:, :, :self.K].reshape(view.shape), view)
        return cols


def _conv_nhwc(x, wmat, KH, KW, stride, padding, dilation, out, chunk):
    """out[...] = conv(x) for NHWC x and weight matrix ``wmat`` (G, K or K+1, Og);
    K+1 rows: the last row is the bias, matched by a ones column in ``cols``."""
    N = x.shape[0]
    G, Kw, Og = wmat.shape
    Ho, Wo = out.shape[1:3]
    K = KH * KW * (x.shape[3] // G)
    im2col = _Im2col(x, KH, KW, stride, padding, dilation, G, Ho, Wo, chunk, ones=Kw == K + 1)
    step = im2col.step
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        cols = im2col(n0, n1)
        yc = out[n0:n1].reshape(-1, G, Og).transpose(1, 0, 2)
        np.matmul(cols, wmat, out=yc)
    return out


@kernel_version("conv")
def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, chunk=None):
    """Convolution forward. x (N,H,W,C) NHWC, w (O,C/groups,KH,KW), b (O,)|None -> y (N,Ho,Wo,O).

    Backward needs only x (and w); nothing else is returned. ``chunk``: samples per
    im2col buffer (None: ``auto_chunk``).
    """
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    dilation = pair(dilation, "dilation")
    Ho, Wo = _check(x, w, b, stride, padding, dilation, groups)
    O, _, KH, KW = w.shape
    if chunk is None and _small_map_applies(w.shape, stride, padding, groups, (Ho, Wo)):
        return _small_map_forward(x, w, b, padding, dilation, np.empty((x.shape[0], Ho, Wo, O), x.dtype))
    winograd = chunk is None and _winograd_applies(w.shape, stride, dilation, groups, padding, (Ho, Wo))
    if chunk is None and _native_pays(x, groups, "fwd", x.shape[3], O, winograd):
        return native.forward(np.ascontiguousarray(x), w, b, stride, padding, dilation, Ho, Wo)
    y = np.empty((x.shape[0], Ho, Wo, O), x.dtype)
    if winograd:
        return _conv3x3_winograd(x, _winograd_weight(w), b, padding, y)
    wmat = _weight_matrix(w, groups)
    if b is not None:
        wmat = np.concatenate([wmat, b.reshape(groups, 1, O // groups)], axis=1)
    _conv_nhwc(x, wmat, KH, KW, stride, padding, dilation, y, chunk)
    return y


@kernel_version("conv")
def conv2d_backward(x, w, dy, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                    need_dw=True, need_db=True, chunk=None):
    """Convolution backward: returns (dx, dw, db); each is None when not asked for.

    x (N,H,W,C) NHWC, w (O,C/groups,KH,KW), dy (N,Ho,Wo,O) NHWC ->
    dx (N,H,W,C), dw (O,C/groups,KH,KW), db (O,), all in x.dtype.
    """
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    dilation = pair(dilation, "dilation")
    Ho, Wo = _check(x, w, None, stride, padding, dilation, groups)
    N, H, W, C = x.shape
    O, Cg, KH, KW = w.shape
    G, Og = groups, O // groups
    if dy.shape != (N, Ho, Wo, O):
        raise ValueError(f"conv2d backward expected dy of shape {(N, Ho, Wo, O)!r}, got {dy.shape!r}")
    if dy.dtype != x.dtype:
        raise TypeError(f"conv2d backward dy dtype {dy.dtype!r} differs from x dtype {x.dtype!r}")
    dy = np.ascontiguousarray(dy)
    dx = dw = db = None
    if need_db and not need_dw:
        # Sum over (n, i, j) as a GEMV with a ones vector (BLAS speed, no float64 temp).
        db = np.ones(N * Ho * Wo, dy.dtype) @ dy.reshape(-1, O)
    small = chunk is None and _small_map_applies(w.shape, stride, padding, groups, (Ho, Wo))
    if need_dw and small:
        dw = _small_map_weight_grad(x, dy, w.shape, padding, dilation)
        if need_db:
            db = np.ones(N * Ho * Wo, dy.dtype) @ dy.reshape(-1, O)
    elif need_dw and chunk is None and _native_pays(x, groups, "dw", C, O, stride=stride, kernel=(KH, KW),
                                                         dilation=dilation):
        dw = native.weight_grad(np.ascontiguousarray(x), dy, w.shape, stride, padding, dilation)
        if need_db:
            db = np.ones(N * Ho * Wo, dy.dtype) @ dy.reshape(-1, O)
    elif need_dw:
        K = KH * KW * Cg
        dwmat = np.zeros((G, K + bool(need_db), Og), x.dtype)
        tmp = np.empty_like(dwmat)
        im2col = _Im2col(x, KH, KW, stride, padding, dilation, G, Ho, Wo, chunk, ones=need_db)
        step = im2col.step
        for n0 in range(0, N, step):
            n1 = min(N, n0 + step)
            cols = im2col(n0, n1)
            dyc = dy[n0:n1].reshape(-1, G, Og).transpose(1, 0, 2)
            np.matmul(cols.transpose(0, 2, 1), dyc, out=tmp)
            dwmat += tmp
        dw = _weight_from_matrix(dwmat[:, :K], w.shape)
        if need_db:
            db = dwmat[:, K].reshape(O)  # the ones column's row: sum of dy
    if need_dx and small:
        dx = _small_map_input_grad(dy, w, (N, H, W, C), padding, dilation)
    elif need_dx:
        dx = _conv_input_grad(dy, w, (N, H, W, C), stride, padding, dilation, groups, chunk)
    return dx, dw, db


# Input gradients of convolutions with at most this many input channels take the
# per-tap path (``_input_grad_taps``): lenet5's 6-channel conv 2.8 ms -> 1.4 ms.
TAPS_MAX_CHANNELS = 8


def _conv_input_grad(dy, w, xshape, stride, padding, dilation, groups, chunk):
    N, H, W, C = xshape
    O, Cg, KH, KW = w.shape
    G, Og = groups, O // groups
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    qh, qw = dh * (KH - 1) - ph, dw * (KW - 1) - pw
    Ho, Wo = dy.shape[1:3]
    winograd = (chunk is None and (sh, sw) == (1, 1) and qh >= 0 and qw >= 0
                and _winograd_applies(w.shape, (1, 1), dilation, G, (qh, qw), (H, W)))
    if chunk is None and _native_pays(dy, G, "dx", C, O, winograd):
        return native.input_grad(dy, w, xshape, stride, padding, dilation)
    if chunk is None and G == 1 and C <= TAPS_MAX_CHANNELS:
        return _input_grad_taps(dy, w, xshape, stride, padding, dilation)
    if (sh, sw) == (1, 1) and qh >= 0 and qw >= 0:
        # Transposed convolution: correlate dY (padded by q) with the flipped weight,
        # input and output channels swapped within each group.
        wt = w.reshape(G, Og, Cg, KH, KW).transpose(0, 2, 1, 3, 4)[:, :, :, ::-1, ::-1]
        wt = wt.reshape(C, Og, KH, KW)
        dx = np.empty(xshape, dy.dtype)
        if chunk is None and _winograd_applies(wt.shape, (1, 1), dilation, G, (qh, qw), (H, W)):
            return _conv3x3_winograd(dy, _winograd_weight(wt), None, (qh, qw), dx)
        return _conv_nhwc(dy, _weight_matrix(wt, G), KH, KW, (1, 1), (qh, qw), dilation, dx, chunk)
    # General stride: dcols = dY @ wmat^T, then scatter-add (col2im) into padded dX.
    wmatT = _weight_matrix(w, G).transpose(0, 2, 1)  # (G, Og, K)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    dxp = np.zeros((N, Hp, Wp, C), dy.dtype)
    dxg = dxp.reshape(N, Hp, Wp, G, Cg)  # a view: groups split out of the channel axis
    if chunk is None:
        chunk = auto_chunk(Ho, Wo, KH * KW * Cg, dy.itemsize)
    nc = max(1, min(chunk, N))
    dcols = np.empty((G, nc * Ho * Wo, KH * KW * Cg), dy.dtype)
    for n0 in range(0, N, nc):
        n1 = min(N, n0 + nc)
        nb = n1 - n0
        dc = dcols[:, :nb * Ho * Wo]
        np.matmul(dy[n0:n1].reshape(-1, G, Og).transpose(1, 0, 2), wmatT, out=dc)
        dc = dc.reshape(G, nb, Ho, Wo, KH, KW, Cg).transpose(1, 2, 3, 4, 5, 0, 6)
        for ki in range(KH):
            if G == 1 and dw == 1:
                # Taps kj0 .. kj0+sw-1 land on consecutive columns (sw*j + kj): one add
                # with runs of sw*C values instead of sw adds with runs of C (the adds
                # are bound by NumPy's per-run cost; dX of convnet's 16-channel stride-2
                # layer 6.2 -> 5.6 ms).
                s0, s1, s2, s3 = dxp.strides
                for kj0 in range(0, KW, sw):
                    width = min(sw, KW - kj0)
                    dest = as_strided(dxp[n0:n1, ki * dh, kj0], (nb, Ho, Wo, width, C),
                                      (s0, s1 * sh, s2 * sw, s2, s3))
                    dest += dc[:, :, :, ki, kj0:kj0 + width, 0]
                continue
            rows = slice(ki * dh, ki * dh + sh * (Ho - 1) + 1, sh)
            for kj in range(KW):
                cols = slice(kj * dw, kj * dw + sw * (Wo - 1) + 1, sw)
                dxg[n0:n1, rows, cols] += dc[:, :, :, ki, kj]
    return np.ascontiguousarray(dxp[:, ph:ph + H, pw:pw + W])


def _input_grad_taps(dy, w, xshape, stride, padding, dilation):
    """dX for groups 1 with few input channels C: per kernel tap (ki, kj) one GEMM
    dY (rows, O) @ w[:, :, ki, kj] (O, C), added into the tap's shifted window of the
    padded dX. Each add moves runs of Wo*C values (stride 1), where col2im of one big
    GEMM's output would move runs of C, and the transposed convolution's GEMM would
    have only C columns."""
    N, H, W, C = xshape
    O, _, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = dy.shape[1:3]
    taps = np.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(KH * KW, O, C)
    dxp = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dy.dtype)
    nc = max(1, min(N, CHUNK_BYTES // (KH * KW * Ho * Wo * C * dy.itemsize)))
    dcols = np.empty((KH * KW, nc * Ho * Wo, C), dy.dtype)
    for n0 in range(0, N, nc):
        n1 = min(N, n0 + nc)
        dc = dcols[:, :(n1 - n0) * Ho * Wo]
        np.matmul(dy[n0:n1].reshape(1, -1, O), taps, out=dc)
        for ki in range(KH):
            rows = slice(ki * dh, ki * dh + sh * (Ho - 1) + 1, sh)
            for kj in range(KW):
                cols = slice(kj * dw, kj * dw + sw * (Wo - 1) + 1, sw)
                dxp[n0:n1, rows, cols] += dc[ki * KW + kj].reshape(n1 - n0, Ho, Wo, C)
    if ph or pw:
        return np.ascontiguousarray(dxp[:, ph:ph + H, pw:pw + W])
    return dxp


# ---------------------------------------------------------------------------- small maps
#
# On maps of a few pixels most kernel taps of a padded convolution read only padding:
# VGG-11's 3x3 layers on 2x2 maps use 16 of im2col's 36 (pixel, tap) pairs, on 4x4 maps
# 100 of 144. There each pass runs per tap, as one GEMM over the output pixels whose
# input that tap reaches (stride 1): no work on padding, and the GEMMs keep every
# channel (512x512 on 2x2 maps: forward 20 -> 9 ms).
SMALL_MAP_MAX_PIXELS = 16
SMALL_MAP_MIN_CHANNELS = 128


def _small_map_applies(wshape, stride, padding, groups, out_hw):
    O, Cg, KH, KW = wshape
    return (stride == (1, 1) and groups == 1 and max(padding) > 0 and out_hw[0] * out_hw[1] <= SMALL_MAP_MAX_PIXELS
            and min(Cg, O) >= SMALL_MAP_MIN_CHANNELS)


def _tap_windows(in_hw, out_hw, KH, KW, padding, dilation):
    """Per tap (ki, kj) with any reach: (ki, kj, output rows, output cols, input rows,
    input cols) as slices; stride 1."""
    for ki in range(KH):
        oi = ki * dilation[0] - padding[0]  # input row of output row 0
        i0, i1 = max(0, -oi), min(out_hw[0], in_hw[0] - oi)
        for kj in range(KW):
            oj = kj * dilation[1] - padding[1]
            j0, j1 = max(0, -oj), min(out_hw[1], in_hw[1] - oj)
            if i0 < i1 and j0 < j1:
                yield ki, kj, slice(i0, i1), slice(j0, j1), slice(i0 + oi, i1 + oi), slice(j0 + oj, j1 + oj)


def _tap_gemm(a, m):
    """(N, h, w, K) window (copied to rows) @ (K, M) -> (N, h, w, M): one 2-D GEMM, not a
    stack of per-row ones."""
    return (np.ascontiguousarray(a).reshape(-1, a.shape[3]) @ m).reshape(a.shape[:3] + (m.shape[1],))


def _small_map_forward(x, w, b, padding, dilation, out):
    out[...] = 0 if b is None else b
    taps = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # (KH, KW, C, O)
    for ki, kj, orows, ocols, irows, icols in _tap_windows(x.shape[1:3], out.shape[1:3], *w.shape[2:], padding,
                                                           dilation):
        out[:, orows, ocols] += _tap_gemm(x[:, irows, icols], taps[ki, kj])
    return out


def _small_map_input_grad(dy, w, xshape, padding, dilation):
    dx = np.zeros(xshape, dy.dtype)
    taps = np.ascontiguousarray(w.transpose(2, 3, 0, 1))  # (KH, KW, O, C)
    for ki, kj, orows, ocols, irows, icols in _tap_windows(xshape[1:3], dy.shape[1:3], *w.shape[2:], padding,
                                                           dilation):
        dx[:, irows, icols] += _tap_gemm(dy[:, orows, ocols], taps[ki, kj])
    return dx


def _small_map_weight_grad(x, dy, wshape, padding, dilation):
    O, C, KH, KW = wshape
    dw = np.zeros((KH, KW, C, O), x.dtype)
    for ki, kj, orows, ocols, irows, icols in _tap_windows(x.shape[1:3], dy.shape[1:3], KH, KW, padding,
                                                           dilation):
        dw[ki, kj] = x[:, irows, icols].reshape(-1, C).T @ dy[:, orows, ocols].reshape(-1, O)
    return np.ascontiguousarray(dw.transpose(3, 2, 0, 1))


# ---------------------------------------------------------------------------- Winograd
#
# Fast path for 3x3, stride 1, dilation 1, groups 1 convolutions with enough channels
# (forward, and the input gradient, which is such a convolution too): Winograd
# F(2x2, 3x3) (Lavin & Gray 2015). Each 2x2 output tile comes from a 4x4 input tile d:
#
#     Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise over the 4x4 positions)
#
# so the 16 positions become 16 independent GEMMs (tiles, C) @ (C, O) with 2.25x fewer
# multiplications than im2col. The transforms are adds of strided slices; the row
# transform runs on whole rows (long contiguous runs in NHWC).

# When it pays (measured on Zen 4, one thread, noisy): 32->64 channels at 16x16 gains
# ~10-15% per pass, 56x56 images much more (im2col of one whole image no longer fits
# cache); 16-channel layers and 8x8 maps are slower than im2col, so they keep it.
WINOGRAD_MIN_CHANNELS = 32   # below this the (tiles, C) @ (C, O) GEMMs are too thin
WINOGRAD_MIN_PIXELS = 256    # output pixels per image: fewer and the transforms dominate
# ... except with many channels, where the GEMMs outweigh the transforms even on 8x8
# maps (VGG-11's 256->256 layer: 60 -> 49 ms forward); 4x4 maps stay slower.
WINOGRAD_WIDE_CHANNELS = 256
WINOGRAD_WIDE_MIN_PIXELS = 64
WINOGRAD_CHUNK_BYTES = 1_500_000
USE_WINOGRAD = True

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _winograd_applies(wshape, stride, dilation, groups, padding, out_hw):
    O, Cg, KH, KW = wshape
    return (USE_WINOGRAD and (KH, KW) == (3, 3) and stride == (1, 1) and dilation == (1, 1)
            and groups == 1 and max(padding) <= 2
            and ((min(Cg, O) >= WINOGRAD_MIN_CHANNELS and out_hw[0] * out_hw[1] >= WINOGRAD_MIN_PIXELS)
                 or (min(Cg, O) >= WINOGRAD_WIDE_CHANNELS and out_hw[0] * out_hw[1] >= WINOGRAD_WIDE_MIN_PIXELS)))


def _winograd_weight(w):
    """(O, C, 3, 3) -> U (16, C, O) = G g G^T per (o, c), positions (a, b) row-major.

    Two GEMMs over all (o, c) at once (a 3-operand einsum took 14 ms for 256x256)."""
    G = _G.astype(w.dtype)
    O, C = w.shape[:2]
    rows = np.ascontiguousarray(w.transpose(2, 0, 1, 3)).reshape(3, O * C * 3)  # [i, (o, c, j)]
    t = (G @ rows).reshape(4 * O * C, 3)                                          # [(a, o, c), j]
    u = (t @ G.T).reshape(4, O, C, 4)                                              # [a, o, c, b]
    return np.ascontiguousarray(u.transpose(0, 3, 2, 1)).reshape(16, C, O)


def _conv3x3_winograd(x, U, bias, padding, out, chunk=None):
    """out[...] = conv3x3(x) + bias, stride 1, for NHWC x and U from ``_winograd_weight``."""
    N, H, W, C = x.shape
    O = U.shape[2]
    Ho, Wo = out.shape[1:3]
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    ph, pw = padding
    Hp, Wp = 2 * th + 2, 2 * tw + 2          # >= H + 2*ph: extra zero rows/cols if odd
    exact = (2 * th, 2 * tw) == (Ho, Wo)
    if chunk is None:
        chunk = max(1, min(MAX_CHUNK, WINOGRAD_CHUNK_BYTES // (16 * th * tw * max(C, O) * x.itemsize)))
    nc = max(1, min(chunk, N))
    dt = x.dtype
    xp = np.zeros((nc, Hp, Wp, C), dt)
    T = np.empty((4, nc, th, Wp, C), dt)
    V = np.empty((4, 4, nc * th * tw, C), dt)
    M = np.empty((16, nc * th * tw, O), dt)
    S = np.empty((2, 4, nc * th * tw, O), dt)
    ybuf = None if exact else np.empty((nc, 2 * th, 2 * tw, O), dt)
    for n0 in range(0, N, nc):
        n1 = min(N, n0 + nc)
        nb = n1 - n0
        P = nb * th * tw
        xb = xp[:nb]
        xb[:, ph:ph + H, pw:pw + W] = x[n0:n1]
        # B^T d: over tile rows, on whole padded rows (runs of Wp*C values).
        R = [xb[:, r:r + 2 * th:2] for r in range(4)]
        Tb = T[:, :nb]
        np.subtract(R[0], R[2], out=Tb[0])
        np.add(R[1], R[2], out=Tb[1])
        np.subtract(R[2], R[1], out=Tb[2])
        np.subtract(R[1], R[3], out=Tb[3])
        # (B^T d) B: over tile columns, all four rows at once.
        Cc = [Tb[:, :, :, c:c + 2 * tw:2] for c in range(4)]
        Vb = V[:, :, :P].reshape(4, 4, nb, th, tw, C)
        np.subtract(Cc[0], Cc[2], out=Vb[:, 0])
        np.add(Cc[1], Cc[2], out=Vb[:, 1])
        np.subtract(Cc[2], Cc[1], out=Vb[:, 2])
        np.subtract(Cc[1], Cc[3], out=Vb[:, 3])
        # 16 GEMMs: (P, C) @ (C, O).
        Mb = M[:, :P]
        np.matmul(V[:, :, :P].reshape(16, P, C), U, out=Mb)
        M4 = Mb.reshape(4, 4, P, O)
        # A^T M: over tile rows.
        Sb = S[:, :, :P]
        np.add(M4[0], M4[1], out=Sb[0])
        Sb[0] += M4[2]
        np.subtract(M4[1], M4[2], out=Sb[1])
        Sb[1] -= M4[3]
        if bias is not None:
            Sb[:, 1] += bias  # column 1 feeds both output columns once
        # (A^T M) A: over tile columns, written straight into the NHWC output.
        yb = out[n0:n1] if exact else ybuf[:nb]
        y6 = yb.reshape(nb, th, 2, tw, 2, O)
        S5 = Sb.reshape(2, 4, nb, th, tw, O)
        for j in range(2):
            dest = np.moveaxis(y6[:, :, :, :, j], 2, 0)  # (2, nb, th, tw, O)
            if j == 0:
                np.add(S5[:, 0], S5[:, 1], out=dest)
                dest += S5[:, 2]
            else:
                np.subtract(S5[:, 1], S5[:, 2], out=dest)
                dest -= S5[:, 3]
        if not exact:
            out[n0:n1] = yb[:, :Ho, :Wo]
    return out
