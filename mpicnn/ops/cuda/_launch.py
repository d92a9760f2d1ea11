"""What every launcher shares: kernel lookup, launch shapes, argument and input checks.

Each ``kernels/<family>.cu`` holds templates instantiated for float and double; a
``Family`` loads the file through ``kernels.load`` (which caches the compiled code
per source, options and device) and hands out ``fn(name, dtype)`` -> the
``name<float>`` or ``name<double>`` kernel. Launches follow CuPy's convention,
``k(grid, block, args)``: CuPy arrays run on the GPU, NumPy arrays on the emulator.
"""
import math

import numpy as np

from ...backend import array_module, is_array

# No fused multiply-add: every product rounds before it is added, as in NumPy, so the
# elementwise kernels give the reference's bits (they are memory-bound: no cost).
OPTIONS = ("--fmad=false",)
THREADS = 256          # block size of 1-D launches
MAX_BLOCKS = 8192      # grid-stride loops cover the rest
COLS_BLOCK = (32, 8)   # block of the per-channel reductions (fixed by the .cu files)

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


class Family:
    """The kernels of ``kernels/<family>.cu``: ``fn(name, dtype)`` is the template
    instantiation ``name<float>`` or ``name<double>`` (the file declares them with
    ``// @instantiate`` lines), ``fn(name)`` an ``extern "C"`` kernel."""

    def __init__(self, family):
        self.family = family
        self._functions = {}

    def fn(self, name, dtype=None):
        key = (name, None if dtype is None else np.dtype(dtype))
        f = self._functions.get(key)
        if f is None:
            import kernels
            module = kernels.load(self.family, options=OPTIONS)
            f = module.get_function(name if dtype is None else f"{name}<{ctype(dtype)}>")
            self._functions[key] = f
        return f


def ctype(dtype):
    dt = np.dtype(dtype)
    try:
        return _CTYPES[dt]
    except KeyError:
        raise TypeError(f"the CUDA kernels support float32 and float64, got dtype {dt!r}") from None


def i64(v):
    return np.int64(v)


def grid1d(n):
    """Grid for a 1-D grid-stride launch over ``n`` elements (at least one block)."""
    return (max(1, min(MAX_BLOCKS, math.ceil(n / THREADS))),)


def launch1d(kernel, n, args):
    kernel(grid1d(n), (THREADS,), args)


def partial_rows(rows):
    """P, the number of block rows of a two-stage per-channel reduction over ``rows``:
    each block row covers about 32 rows per thread row, at most 256 of them."""
    return max(1, min(256, rows // (COLS_BLOCK[1] * 32)))


def float_array(x, name, ndim=None):
    """Check ``x`` is a float32/float64 ndarray (of ``ndim`` axes); return it C-contiguous."""
    if not is_array(x):
        raise TypeError(f"{name} expects a NumPy or CuPy array, got {type(x).__name__}")
    ctype(x.dtype)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} expects a {ndim}-D array, got shape {x.shape!r}")
    return array_module(x).ascontiguousarray(x)


def writable(a, name, shape, dtype):
    """Check an array the kernel writes in place: C-contiguous, right shape and dtype."""
    if not is_array(a):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape!r}, expected {tuple(shape)!r}")
    if a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype!r}, expected {np.dtype(dtype)!r}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous for the kernel to write it in place")
    return a


def like(x, values, dtype):
    """``values`` (host or device) as a contiguous array of ``dtype`` in ``x``'s module."""
    return array_module(x).ascontiguousarray(array_module(x).asarray(values, dtype=dtype))
