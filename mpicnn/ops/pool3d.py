"""3-D max and average pooling (PyTorch semantics, floor mode) on (N, C, D, H, W) volumes,
and nearest-neighbour upsampling by integer factors along any spatial axes.

    Do = (D + 2*pd - KD) // sd + 1                       (Ho, Wo alike)
    max: y[n, c, i, j, k] = max over the window of xpad (padding is -inf, never chosen);
         the gradient goes to the first maximum of each window (as PyTorch's CPU kernel)
    avg: y = sum over the window of xpad (padding is 0) / (KD*KH*KW)   (count_include_pad)

Windows are one ``as_strided`` view of the padded input, (N, C, Do, Ho, Wo, KD, KH, KW);
backward adds the output gradient back through KD*KH*KW strided slices (overlapping
windows add up). With the emu or cupy backend the ops run ``mpicnn.ops.cuda.pool3d``
(``kernels/pool3d.cu``).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backend import kernel_version

__all__ = ["max_pool3d_forward", "max_pool3d_backward", "avg_pool3d_forward",
           "avg_pool3d_backward", "pool3d_output_shape", "upsample_nearest_forward",
           "upsample_nearest_backward"]


def pool3d_output_shape(size, kernel, stride, padding):
    return tuple((s + 2 * p - k) // st + 1 for s, k, st, p in zip(size, kernel, stride, padding))


def _windows(x, kernel, stride, padding, fill):
    if not isinstance(x, np.ndarray) or x.ndim != 5:
        raise ValueError(f"pool3d expects a 5-D NCDHW array, got shape {getattr(x, 'shape', x)!r}")
    out = pool3d_output_shape(x.shape[2:], kernel, stride, padding)
    if min(out) < 1:
        raise ValueError(f"pool3d input of spatial size {x.shape[2:]!r} is smaller than kernel "
                         f"{kernel!r} with padding {padding!r}")
    N, C, D, H, W = x.shape
    pd, ph, pw = padding
    xp = x
    if any(padding):
        xp = np.full((N, C, D + 2 * pd, H + 2 * ph, W + 2 * pw), fill, x.dtype)
        xp[:, :, pd:pd + D, ph:ph + H, pw:pw + W] = x
    s = xp.strides
    view = as_strided(xp, (N, C) + out + tuple(kernel),
                      s[:2] + tuple(si * st for si, st in zip(s[2:], stride)) + s[2:],
                      writeable=False)
    return view, out


def _scatter(g_of_offset, xshape, kernel, stride, padding, out, dtype):
    """dx from per-window-offset gradients: dxpad[window offset (a, p, q)] += g(a, p, q)."""
    N, C, D, H, W = xshape
    pd, ph, pw = padding
    dxp = np.zeros((N, C, D + 2 * pd, H + 2 * ph, W + 2 * pw), dtype)
    (sd, sh, sw), (Do, Ho, Wo) = stride, out
    for a in range(kernel[0]):
        for p in range(kernel[1]):
            for q in range(kernel[2]):
                dxp[:, :, a:a + sd * (Do - 1) + 1:sd, p:p + sh * (Ho - 1) + 1:sh,
                    q:q + sw * (Wo - 1) + 1:sw] += g_of_offset(a, p, q)
    return np.ascontiguousarray(dxp[:, :, pd:pd + D, ph:ph + H, pw:pw + W])


@kernel_version("pool3d")
def max_pool3d_forward(x, kernel, stride, padding):
    """Returns (y, index): index (N, C, Do, Ho, Wo) int64 is the flat window offset of the
    first maximum, what backward needs."""
    view, out = _windows(x, kernel, stride, padding, -np.inf)
    flat = view.reshape(x.shape[:2] + out + (-1,))
    index = np.argmax(flat, axis=-1)
    y = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    return y, index


@kernel_version("pool3d")
def max_pool3d_backward(dy, index, xshape, kernel, stride, padding):
    out = dy.shape[2:]
    KH, KW = kernel[1], kernel[2]
    return _scatter(lambda a, p, q: np.where(index == (a * KH + p) * KW + q, dy, 0),
                    xshape, kernel, stride, padding, out, dy.dtype)


@kernel_version("pool3d")
def avg_pool3d_forward(x, kernel, stride, padding):
    view, out = _windows(x, kernel, stride, padding, 0)
    y = view.sum(axis=(-3, -2, -1), dtype=np.float64) / float(np.prod(kernel))
    return y.astype(x.dtype)


@kernel_version("pool3d")
def avg_pool3d_backward(dy, xshape, kernel, stride, padding):
    g = dy * dy.dtype.type(1.0 / np.prod(kernel))
    return _scatter(lambda a, p, q: g, xshape, kernel, stride, padding, dy.shape[2:], dy.dtype)


@kernel_version("pool3d")
def upsample_nearest_forward(x, factors, axes):
    """Repeat every element ``factors[i]`` times along ``axes[i]`` (integer factors)."""
    for f, ax in zip(factors, axes):
        if f != 1:
            x = np.repeat(x, f, axis=ax)
    return x


@kernel_version("pool3d")
def upsample_nearest_backward(dy, factors, axes):
    """Sum the gradient over each block of repeated elements."""
    shape = []
    sum_axes = []
    for ax, size in enumerate(dy.shape):
        if ax in axes:
            f = factors[axes.index(ax)]
            shape += [size // f, f]
            sum_axes.append(len(shape) - 1)
        else:
            shape.append(size)
    return dy.reshape(shape).sum(axis=tuple(sum_axes))
