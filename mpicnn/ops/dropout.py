"""Dropout with a counter-based mask: identical whatever the batch split or layout.

The keep/drop decision for one element is a pure function of five integers:

    seed   the layer's seed (uint64, drawn from the init RNG when the layer is built)
    step   the optimizer step (``Context.step``)
    n      the GLOBAL sample index (``Context.sample_offset`` + local sample index)
    e      the element index within the sample in NCHW order: (c*H + h)*W + w for
           4-D inputs, f for (N, F) inputs (C-order flat index of x[n] in general)
    p      the drop probability

computed with splitmix64 (all arithmetic modulo 2**64):

    GOLDEN = 0x9E3779B97F4A7C15
    mix64(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
               z = (z ^ (z >> 27)) * 0x94D049BB133111EB
               return z ^ (z >> 31)
    k_step    = mix64(seed + GOLDEN * (step + 1))
    k_sample  = mix64(k_step + GOLDEN * (n + 1))
    r         = mix64(k_sample + GOLDEN * (e + 1))
    keep      = (r >> 11) >= T,    T = floor(p * 2**53)      (an exact integer for float64 p)
    y         = x * keep / (1 - p)   (the scale 1/(1-p) rounded once to x's dtype; 0 if p == 1)

A CUDA kernel reproduces it bit for bit with unsigned long long arithmetic.
"""
import numpy as np

from ..backend import kernel_version

__all__ = ["GOLDEN", "mix64", "dropout_keep", "dropout_scale_mask", "dropout_threshold",
           "nchw_element_index"]

GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(z):
    """splitmix64 finaliser. ``z``: Python int (returns int) or uint64 ndarray (in place)."""
    if isinstance(z, np.ndarray):
        if z.dtype != np.uint64:
            raise TypeError(f"mix64 needs a uint64 array, got {z.dtype!r}")
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
        return z
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def dropout_threshold(p):
    """T = floor(p * 2**53) for 0 <= p <= 1."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p!r}")
    return int(p * 2.0 ** 53)


def dropout_keep(seed, step, sample_offset, nsamples, element_index, p):
    """Boolean keep mask of shape (nsamples,) + element_index.shape.

    ``element_index``: uint64 array of NCHW element indices e (any shape, e.g. (H, W, C)
    holding (c*H + h)*W + w for an NHWC array).
    """
    k_step = mix64((int(seed) + GOLDEN * (int(step) + 1)) & _M64)
    n = np.arange(sample_offset + 1, sample_offset + nsamples + 1, dtype=np.uint64)
    k_sample = mix64(n * np.uint64(GOLDEN) + np.uint64(k_step))
    e1 = (np.asarray(element_index, np.uint64) + np.uint64(1)) * np.uint64(GOLDEN)
    r = k_sample.reshape((-1,) + (1,) * e1.ndim) + e1
    mix64(r)
    r >>= np.uint64(11)
    return r >= np.uint64(dropout_threshold(p))


def nchw_element_index(shape_nhwc):
    """uint64 (H, W, C) array of NCHW element indices (c*H + h)*W + w."""
    H, W, C = shape_nhwc
    h = np.arange(H, dtype=np.uint64)[:, None, None]
    w = np.arange(W, dtype=np.uint64)[None, :, None]
    c = np.arange(C, dtype=np.uint64)[None, None, :]
    return (c * np.uint64(H) + h) * np.uint64(W) + w


@kernel_version("dropout")
def dropout_scale_mask(seed, step, sample_offset, shape, p, dtype, layout="NHWC"):
    """keep / (1 - p) as an array of ``shape`` and ``dtype`` (multiply x and dy by it).

    ``shape`` is the local array's shape; 4-D shapes are read in ``layout`` ("NHWC" or
    "NCHW"), other ranks as (N, ...) with C-order element indices.
    """
    N = shape[0]
    if len(shape) == 4 and layout == "NHWC":
        index = nchw_element_index(shape[1:])
    else:
        index = np.arange(int(np.prod(shape[1:], dtype=np.int64)), dtype=np.uint64).reshape(shape[1:])
    keep = dropout_keep(seed, step, sample_offset, N, index, p)
    p = float(p)
    scale = np.dtype(dtype).type(0.0 if p >= 1.0 else 1.0 / (1.0 - p))
    mask = keep.astype(dtype)
    mask *= scale
    return mask
