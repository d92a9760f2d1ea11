"""3-D convolution (cross-correlation, PyTorch semantics) on channels-first volumes.

Layouts:

    x    (N, C, D, H, W)                  input, NCDHW (PyTorch's)
    w    (O, C // groups, KD, KH, KW)     weight
    b    (O,) or None                     bias
    y    (N, O, Do, Ho, Wo)               output, NCDHW

    Do = (D + 2*pd - dd*(KD - 1) - 1) // sd + 1      (floor, as PyTorch; Ho, Wo alike)

    y[n, g*Og + o, i, j, k] = b[g*Og + o] + sum_{c < Cg, a < KD, p < KH, q < KW}
        xpad[n, g*Cg + c, i*sd + a*dd, j*sh + p*dh, k*sw + q*dw] * w[g*Og + o, c, a, p, q]

How: the padded input is made channels-last once (N, D', H', W', C); one ``as_strided``
view of it, (G, n, Do, Ho, Wo, KD, KH, KW, Cg), is copied per chunk of samples into a
``cols`` buffer (G, n*Do*Ho*Wo, KD*KH*KW*Cg) and multiplied by the weight matrix
(G, K, Og): one GEMM per group. Backward: dW = cols^T @ dY per chunk; dX = dY @ wmat^T
scattered back (col2im) by KD*KH*KW strided adds into the padded input gradient.
With the emu or cupy backend the ops run ``mpicnn.ops.cuda.conv3d`` (``kernels/conv3d.cu``).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backend import array_module, is_array, kernel_version
from .conv import conv_output_size

__all__ = ["conv3d_forward", "conv3d_backward", "triple", "conv3d_output_shape"]

# Samples per chunk: as many as keep ``cols`` near this size (at least one sample).
CHUNK_BYTES = 8_000_000


def triple(value, name):
    """``value`` as a triple of Python ints; accepts an int or a 3-sequence of ints."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if is_int(value):
        return (int(value),) * 3
    if isinstance(value, (tuple, list)) and len(value) == 3 and all(is_int(v) for v in value):
        return tuple(int(v) for v in value)
    raise TypeError(f"{name} must be an int or a triple of ints, got {value!r}")


def conv3d_output_shape(size, kernel, stride, padding, dilation):
    """(Do, Ho, Wo) for an input of spatial ``size`` (D, H, W)."""
    return tuple(conv_output_size(s, k, st, p, d)
                 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation))


def _check(x, w, b, stride, padding, dilation, groups):
    if not is_array(x) or x.ndim != 5:
        raise ValueError(f"conv3d expects a 5-D NCDHW array, got shape {getattr(x, 'shape', x)!r}")
    if not is_array(w) or w.ndim != 5:
        raise ValueError(f"conv3d weight must be 5-D (O, C/groups, KD, KH, KW), got shape "
                         f"{getattr(w, 'shape', w)!r}")
    if x.dtype != w.dtype:
        raise TypeError(f"conv3d input dtype {x.dtype!r} differs from weight dtype {w.dtype!r}")
    O, Cg = w.shape[:2]
    C = x.shape[1]
    if groups < 1 or C % groups or O % groups or C != Cg * groups:
        raise ValueError(f"conv3d: weight {w.shape!r} with groups={groups!r} does not fit "
                         f"{C} input channels (input shape {x.shape!r})")
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"conv3d bias must have shape {(O,)!r}, got {b.shape!r}")
    out = conv3d_output_shape(x.shape[2:], w.shape[2:], stride, padding, dilation)
    if min(out) < 1:
        raise ValueError(f"conv3d input of spatial size {x.shape[2:]!r} is too small for kernel "
                         f"{w.shape[2:]!r} with padding {padding!r} and dilation {dilation!r}")
    return out


def _padded_channels_last(x, padding):
    """(N, C, D, H, W) -> zero-padded (N, D+2pd, H+2ph, W+2pw, C), C-contiguous."""
    N, C, D, H, W = x.shape
    pd, ph, pw = padding
    xp = np.zeros((N, D + 2 * pd, H + 2 * ph, W + 2 * pw, C), x.dtype)
    xp[:, pd:pd + D, ph:ph + H, pw:pw + W] = x.transpose(0, 2, 3, 4, 1)
    return xp


def _weight_matrix(w, groups):
    """(O, Cg, KD, KH, KW) -> (G, KD*KH*KW*Cg, Og), rows ordered (a, p, q, c) like ``cols``."""
    O, Cg, KD, KH, KW = w.shape
    wm = w.reshape(groups, O // groups, Cg, KD, KH, KW).transpose(0, 3, 4, 5, 2, 1)
    return array_module(w).ascontiguousarray(wm).reshape(groups, KD * KH * KW * Cg, O // groups)


def _weight_from_matrix(wmat, shape):
    """Inverse of ``_weight_matrix``: (G, KD*KH*KW*Cg, Og) -> (O, Cg, KD, KH, KW)."""
    O, Cg, KD, KH, KW = shape
    G = wmat.shape[0]
    w = wmat.reshape(G, KD, KH, KW, Cg, O // G).transpose(0, 5, 4, 1, 2, 3)
    return array_module(wmat).ascontiguousarray(w).reshape(shape)


def _cols(xp, n0, n1, kernel, stride, dilation, groups, out):
    """im2col of samples [n0, n1) of the padded channels-last input: (G, m, K)."""
    sub = xp[n0:n1]
    s0, s1, s2, s3, s4 = sub.strides
    Cg = xp.shape[4] // groups
    view = as_strided(sub, (groups, n1 - n0) + out + kernel + (Cg,),
                      (s4 * Cg, s0, s1 * stride[0], s2 * stride[1], s3 * stride[2],
                       s1 * dilation[0], s2 * dilation[1], s3 * dilation[2], s4), writeable=False)
    # copies (not contiguous); sizes spelled out: a rank may hold no channels (Cg = 0)
    return view.reshape(groups, (n1 - n0) * int(np.prod(out)), int(np.prod(kernel)) * Cg)


def _chunk(out, K, groups, itemsize):
    return max(1, CHUNK_BYTES // max(1, int(np.prod(out)) * K * groups * itemsize))


@kernel_version("conv3d")
def conv3d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """x (N,C,D,H,W), w (O,C/groups,KD,KH,KW), b (O,)|None -> y (N,O,Do,Ho,Wo)."""
    stride, padding = triple(stride, "stride"), triple(padding, "padding")
    dilation = triple(dilation, "dilation")
    out = _check(x, w, b, stride, padding, dilation, groups)
    N, O = x.shape[0], w.shape[0]
    kernel = w.shape[2:]
    wmat = _weight_matrix(w, groups)
    xp = _padded_channels_last(x, padding)
    y = np.empty((N,) + out + (O,), x.dtype)
    step = _chunk(out, wmat.shape[1], groups, x.itemsize)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        cols = _cols(xp, n0, n1, kernel, stride, dilation, groups, out)
        yc = np.matmul(cols, wmat)  # (G, m, Og)
        y[n0:n1] = yc.transpose(1, 0, 2).reshape((n1 - n0,) + out + (O,))
    if b is not None:
        y += b
    return np.ascontiguousarray(y.transpose(0, 4, 1, 2, 3))


@kernel_version("conv3d")
def conv3d_backward(x, w, dy, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                    need_dw=True, need_db=True):
    """Returns (dx, dw, db) in x's dtype, each None when not asked for.
    x (N,C,D,H,W), dy (N,O,Do,Ho,Wo)."""
    stride, padding = triple(stride, "stride"), triple(padding, "padding")
    dilation = triple(dilation, "dilation")
    out = _check(x, w, None, stride, padding, dilation, groups)
    N, C, D, H, W = x.shape
    O = w.shape[0]
    kernel = w.shape[2:]
    G, Og, Cg = groups, O // groups, C // groups
    if dy.shape != (N, O) + out:
        raise ValueError(f"conv3d backward expected dy of shape {(N, O) + out!r}, got {dy.shape!r}")
    if dy.dtype != x.dtype:
        raise TypeError(f"conv3d backward dy dtype {dy.dtype!r} differs from x dtype {x.dtype!r}")
    dyl = np.ascontiguousarray(dy.transpose(0, 2, 3, 4, 1))  # (N, Do, Ho, Wo, O)
    m = N * int(np.prod(out))  # rows spelled out: a channel rank may hold no outputs (O = 0)
    db = dyl.reshape(m, O).sum(axis=0) if need_db else None
    wmat = _weight_matrix(w, G)
    K = wmat.shape[1]
    step = _chunk(out, K, G, x.itemsize)
    dw = dxp = None
    if need_dw:
        dwmat = np.zeros_like(wmat)
        xp = _padded_channels_last(x, padding)
    if need_dx:
        dxp = np.zeros((N,) + tuple(s + 2 * p for s, p in zip((D, H, W), padding)) + (C,), x.dtype)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        dyc = dyl[n0:n1].reshape((n1 - n0) * int(np.prod(out)), G, Og).transpose(1, 0, 2)  # (G, m, Og)
        if need_dw:
            cols = _cols(xp, n0, n1, kernel, stride, dilation, G, out)
            dwmat += np.matmul(cols.transpose(0, 2, 1), dyc)
        if need_dx:
            _col2im(np.matmul(dyc, wmat.transpose(0, 2, 1)), dxp[n0:n1], kernel, stride,
                    dilation, out, Cg)
    if need_dw:
        dw = _weight_from_matrix(dwmat, w.shape)
    dx = None
    if need_dx:
        pd, ph, pw = padding
        dx = np.ascontiguousarray(dxp[:, pd:pd + D, ph:ph + H, pw:pw + W].transpose(0, 4, 1, 2, 3))
    return dx, dw, db


def _col2im(dcols, dxp, kernel, stride, dilation, out, Cg):
    """Add the column gradients (G, n*Do*Ho*Wo, K) into the padded channels-last dxp."""
    G = dcols.shape[0]
    n = dxp.shape[0]
    KD, KH, KW = kernel
    d = dcols.reshape((G, n) + out + (KD, KH, KW, Cg)).transpose(1, 2, 3, 4, 5, 6, 7, 0, 8)
    d = d.reshape((n,) + out + (KD, KH, KW, G * Cg))
    (sd, sh, sw), (dd, dh, dw), (Do, Ho, Wo) = stride, dilation, out
    for a in range(KD):
        for p in range(KH):
            for q in range(KW):
                dxp[:, a * dd:a * dd + sd * (Do - 1) + 1:sd,
                    p * dh:p * dh + sh * (Ho - 1) + 1:sh,
                    q * dw:q * dw + sw * (Wo - 1) + 1:sw] += d[:, :, :, :, a, p, q]
