"""Pooling on channels-last arrays (PyTorch semantics, floor mode).

Layouts: x (N, H, W, C) NHWC -> y (N, Ho, Wo, C) for the windowed pools,
y (N, C) for the global pools. Ho = (H + 2*ph - KH) // sh + 1 (Wo alike).

max_pool2d:  y[n,i,j,c] = max over the window of x padded with -inf. Backward gives
             the whole dy[n,i,j,c] to ONE element: the first maximum in window order
             (ki, kj row-major), as PyTorch's CPU kernel. Overlapping windows add up.
avg_pool2d:  y = sum over the window of x padded with zeros / (KH*KW)
             (count_include_pad=True, PyTorch's default).
global_avg:  y[n,c] = mean_{h,w} x[n,h,w,c]
global_max:  y[n,c] = max_{h,w} x[n,h,w,c]; gradient to the first maximum in (h, w) order.
global_rms:  y[n,c] = sqrt(mean_{h,w} x[n,h,w,c]^2 + eps);
             dx = dy * x / (H*W*y), and 0 where y == 0.

Tiled windows (window == stride, no padding, sizes divisible, the common 2x2/2 case)
run max pooling in the native C kernels (ops/native) when they are built and the
channels fill whole vectors; otherwise the fast paths reshape x to (N, Ho, KH, Wo, KW,
C) and reduce with strided-slice np.maximum/np.add stages; backward is one broadcast multiply by a first-maximum mask (for few channels
with y and dy repeated along the window columns, so both run over whole rows). Other
geometries take the general path: one strided slice per window position.
"""
import numpy as np

from ..backend import kernel_version
from . import native
from .conv import pair

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_backward", "global_avg_pool_forward", "global_avg_pool_backward",
           "global_max_pool_forward", "global_max_pool_backward", "global_rms_pool_forward",
           "global_rms_pool_backward", "pool_geometry"]


def pool_geometry(xshape, kernel_size, stride=None, padding=0):
    """Normalised ((KH, KW), (sh, sw), (ph, pw), (Ho, Wo)) for NHWC input shape ``xshape``."""
    if len(xshape) != 4:
        raise ValueError(f"pooling expects a 4-D NHWC array, got shape {tuple(xshape)!r}")
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None else pair(stride, "stride")
    p = pair(padding, "padding")
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ValueError(f"pooling needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                         f"kernel_size={kernel_size!r}, stride={stride!r}, padding={padding!r}")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"pooling padding {padding!r} must be at most half the kernel size "
                         f"{kernel_size!r}")
    H, W = xshape[1], xshape[2]
    Ho, Wo = (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"pooling input of spatial size {(H, W)!r} is too small for "
                         f"kernel_size={kernel_size!r} with padding={padding!r}")
    return k, s, p, (Ho, Wo)


def _is_tiled(xshape, k, s, p):
    return k == s and p == (0, 0) and xshape[1] % k[0] == 0 and xshape[2] % k[1] == 0


def _native_tiled(*arrays, backward=False):
    """Whether the native max pool runs: C-contiguous arrays of one float dtype it has,
    with a channel count it runs faster than NumPy (``native.pools``)."""
    dt = arrays[0].dtype
    return (native.pools(dt, arrays[0].shape[-1], backward)
            and all(a.dtype == dt and a.flags.c_contiguous for a in arrays))


def _windows(xp, k, s, out_hw):
    """Yield (ki, kj, view) with view[n, i, j, c] = xp[n, i*sh + ki, j*sw + kj, c], in window order."""
    (KH, KW), (sh, sw), (Ho, Wo) = k, s, out_hw
    for ki in range(KH):
        for kj in range(KW):
            yield ki, kj, xp[:, ki:ki + sh * (Ho - 1) + 1:sh, kj:kj + sw * (Wo - 1) + 1:sw]


def _padded(x, p, value):
    if p == (0, 0):
        return x
    N, H, W, C = x.shape
    xp = np.full((N, H + 2 * p[0], W + 2 * p[1], C), value, x.dtype)
    xp[:, p[0]:p[0] + H, p[1]:p[1] + W] = x
    return xp


def _check_float(x, name):
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"{name} expects a floating-point ndarray, got {getattr(x, 'dtype', type(x))!r}")


# ---------------------------------------------------------------------------- max pool

@kernel_version("pool")
def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """x (N,H,W,C) -> y (N,Ho,Wo,C). Backward needs x and y."""
    _check_float(x, "max_pool2d")
    k, s, p, (Ho, Wo) = pool_geometry(x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    if _is_tiled(x.shape, k, s, p) and _native_tiled(x):
        return native.max_pool_forward(x, k)
    if _is_tiled(x.shape, k, s, p):
        x6 = x.reshape(N, Ho, k[0], Wo, k[1], C)
        # Stage 1 over window rows: inner runs of W*C contiguous values.
        r = x6[:, :, 0].copy() if k[0] == 1 else np.maximum(x6[:, :, 0], x6[:, :, 1])
        for i in range(2, k[0]):
            np.maximum(r, x6[:, :, i], out=r)
        # Stage 2 over window columns: inner runs of C values.
        if k[1] == 1:
            return np.ascontiguousarray(r[:, :, :, 0])
        y = np.maximum(r[:, :, :, 0], r[:, :, :, 1])
        for j in range(2, k[1]):
            np.maximum(y, r[:, :, :, j], out=y)
        return y
    y = None
    for _, _, v in _windows(_padded(x, p, -np.inf), k, s, (Ho, Wo)):
        if y is None:
            y = v.copy()
        else:
            np.maximum(y, v, out=y)
    return y


# Max-pool backward repeats y and dy along the window columns below this many channels
# (2x faster for lenet5's 6 and 16 channels; slower from 64 channels on).
REPEAT_MAX_CHANNELS = 64


def _first_only(masks):
    """Clear every True that has an earlier True at the same place (masks in window order)."""
    taken = None
    for idx, m in enumerate(masks):
        if taken is None:
            taken = m.copy() if len(masks) > 2 else m
            continue
        np.greater(m, taken, out=m)  # m & ~taken
        if idx < len(masks) - 1:
            np.logical_or(taken, m, out=taken)


@kernel_version("pool")
def max_pool2d_backward(dy, x, y, kernel_size, stride=None, padding=0):
    """dy (N,Ho,Wo,C), x and y from forward -> dx (N,H,W,C)."""
    k, s, p, (Ho, Wo) = pool_geometry(x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    if dy.shape != y.shape:
        raise ValueError(f"max_pool2d backward: dy shape {dy.shape!r} differs from y shape {y.shape!r}")
    if _is_tiled(x.shape, k, s, p) and _native_tiled(x, y, dy, backward=True):
        return native.max_pool_backward(dy, x, y, k)
    if _is_tiled(x.shape, k, s, p):
        shape6 = (N, Ho, k[0], Wo, k[1], C)
        rows = (N, Ho, k[0], W * C)  # the same memory as shape6, window columns folded in
        if C < REPEAT_MAX_CHANNELS:
            # y and dy repeated along the window columns once: the compare and the
            # multiply then run over whole rows of W*C values instead of runs of C.
            mask = np.equal(x.reshape(rows), np.repeat(y, k[1], axis=2).reshape(N, Ho, 1, W * C))
            g = np.repeat(dy, k[1], axis=2).reshape(N, Ho, 1, W * C)
        else:
            mask = np.equal(x.reshape(shape6), y[:, :, None, :, None, :]).reshape(rows)
            g = None
        # Ties (e.g. zeros after a ReLU) give a window several Trues; keep the first.
        # Counting the Trues is cheap and lets tie-free inputs skip the fix.
        if k[0] * k[1] > 1 and np.count_nonzero(mask) != y.size:
            m6 = mask.reshape(shape6)
            _first_only([m6[:, :, i, :, j] for i in range(k[0]) for j in range(k[1])])
        dx = np.empty(x.shape, dy.dtype)
        if g is not None:
            np.multiply(mask, g, out=dx.reshape(rows))
        else:
            np.multiply(mask.reshape(shape6), dy[:, :, None, :, None, :], out=dx.reshape(shape6))
        return dx
    xp = _padded(x, p, -np.inf)
    dxp = np.zeros(xp.shape, dy.dtype)
    views = list(_windows(xp, k, s, (Ho, Wo)))
    masks = [np.equal(v, y) for _, _, v in views]
    _first_only(masks)
    grads = dict(((ki, kj), g) for (ki, kj, g) in _windows(dxp, k, s, (Ho, Wo)))
    for (ki, kj, _), m in zip(views, masks):
        grads[ki, kj] += dy * m
    return np.ascontiguousarray(dxp[:, p[0]:p[0] + H, p[1]:p[1] + W])


# ---------------------------------------------------------------------------- average pool

@kernel_version("pool")
def avg_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """x (N,H,W,C) -> y (N,Ho,Wo,C), zero padding counted in the divisor."""
    _check_float(x, "avg_pool2d")
    k, s, p, (Ho, Wo) = pool_geometry(x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    scale = x.dtype.type(1.0 / (k[0] * k[1]))
    if _is_tiled(x.shape, k, s, p):
        x6 = x.reshape(N, Ho, k[0], Wo, k[1], C)
        r = x6[:, :, 0].copy()
        for i in range(1, k[0]):
            r += x6[:, :, i]
        y = r[:, :, :, 0].copy()
        for j in range(1, k[1]):
            y += r[:, :, :, j]
        y *= scale
        return y
    y = None
    for _, _, v in _windows(_padded(x, p, 0), k, s, (Ho, Wo)):
        if y is None:
            y = v.copy()
        else:
            y += v
    y *= scale
    return y


@kernel_version("pool")
def avg_pool2d_backward(dy, xshape, kernel_size, stride=None, padding=0):
    """dy (N,Ho,Wo,C) -> dx of shape ``xshape`` (N,H,W,C)."""
    k, s, p, (Ho, Wo) = pool_geometry(xshape, kernel_size, stride, padding)
    N, H, W, C = xshape
    if dy.shape != (N, Ho, Wo, C):
        raise ValueError(f"avg_pool2d backward: expected dy of shape {(N, Ho, Wo, C)!r}, got {dy.shape!r}")
    g = dy * dy.dtype.type(1.0 / (k[0] * k[1]))
    if _is_tiled(xshape, k, s, p):
        dx = np.empty(xshape, dy.dtype)
        np.copyto(dx.reshape(N, Ho, k[0], Wo, k[1], C), g[:, :, None, :, None, :])
        return dx
    dxp = np.zeros((N, H + 2 * p[0], W + 2 * p[1], C), dy.dtype)
    for _, _, v in _windows(dxp, k, s, (Ho, Wo)):
        v += g
    return np.ascontiguousarray(dxp[:, p[0]:p[0] + H, p[1]:p[1] + W])


# ---------------------------------------------------------------------------- global pools

def _check4(x, name):
    _check_float(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D NHWC array, got shape {x.shape!r}")


@kernel_version("pool")
def global_avg_pool_forward(x):
    """x (N,H,W,C) -> y (N,C) = mean over H, W (accumulated in float64, rounded once)."""
    _check4(x, "global_avg_pool")
    N, H, W, C = x.shape
    s = np.add.reduce(x.reshape(N, H * W, C), axis=1, dtype=np.float64)
    return (s / (H * W)).astype(x.dtype)


@kernel_version("pool")
def global_avg_pool_backward(dy, xshape):
    """dy (N,C) -> dx (N,H,W,C) = dy / (H*W) broadcast."""
    N, H, W, C = xshape
    if dy.shape != (N, C):
        raise ValueError(f"global_avg_pool backward: expected dy of shape {(N, C)!r}, got {dy.shape!r}")
    dx = np.empty(xshape, dy.dtype)
    np.copyto(dx, (dy * dy.dtype.type(1.0 / (H * W)))[:, None, None, :])
    return dx


@kernel_version("pool")
def global_max_pool_forward(x):
    """x (N,H,W,C) -> (y (N,C), index (N,C) of the first maximum in h*W + w order)."""
    _check4(x, "global_max_pool")
    N, H, W, C = x.shape
    x3 = x.reshape(N, H * W, C)
    index = np.argmax(x3, axis=1)
    y = np.take_along_axis(x3, index[:, None, :], axis=1)[:, 0]
    return y, index


@kernel_version("pool")
def global_max_pool_backward(dy, index, xshape):
    """dy (N,C), index from forward -> dx (N,H,W,C)."""
    N, H, W, C = xshape
    if dy.shape != (N, C):
        raise ValueError(f"global_max_pool backward: expected dy of shape {(N, C)!r}, got {dy.shape!r}")
    dx = np.zeros((N, H * W, C), dy.dtype)
    np.put_along_axis(dx, index[:, None, :], dy[:, None, :], axis=1)
    return dx.reshape(xshape)


@kernel_version("pool")
def global_rms_pool_forward(x, eps=0.0):
    """x (N,H,W,C) -> y (N,C) = sqrt(mean over H, W of x^2 + eps)."""
    _check4(x, "global_rms_pool")
    N, H, W, C = x.shape
    x3 = x.reshape(N, H * W, C)
    ms = np.einsum("nkc,nkc->nc", x3, x3, dtype=np.float64) / (H * W)
    return np.sqrt(ms + eps).astype(x.dtype)


@kernel_version("pool")
def global_rms_pool_backward(dy, x, y):
    """dy (N,C), x and y from forward -> dx = dy * x / (H*W*y), 0 where y == 0."""
    N, H, W, C = x.shape
    if dy.shape != (N, C):
        raise ValueError(f"global_rms_pool backward: expected dy of shape {(N, C)!r}, got {dy.shape!r}")
    denom = y * y.dtype.type(H * W)
    g = np.divide(dy, denom, out=np.zeros_like(dy), where=denom != 0)
    return x * g[:, None, None, :]
