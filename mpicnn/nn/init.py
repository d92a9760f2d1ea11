"""Random parameter initialisation from one module-level generator.

Every rank builds the model with the same seed and so the same parameters.
``manual_seed(seed)`` resets the generator (PCG64 via ``numpy.random.default_rng``);
functions take ``rng=`` to use another generator instead. Values are drawn in float64
and rounded once to the requested dtype, so float32 and float64 models start from the
same numbers up to rounding.
"""
import math

import numpy as np

__all__ = ["manual_seed", "get_rng", "set_rng", "uniform", "normal", "zeros", "ones",
           "fan_in", "kaiming_uniform", "seed_int"]

_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Reset the module generator to ``seed``; returns it."""
    global _rng
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _rng = np.random.default_rng(int(seed))
    return _rng


def get_rng(rng=None):
    """``rng`` if given, else the module generator."""
    return _rng if rng is None else rng


def set_rng(rng):
    """Replace the module generator (e.g. one restored from a checkpoint's bit_generator state)."""
    global _rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"set_rng needs a numpy.random.Generator, got {rng!r}")
    _rng = rng


def _dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"parameters must have a floating dtype, got {dtype!r}")
    return dt


def uniform(shape, bound, dtype=np.float32, rng=None):
    """U(-bound, bound) of ``shape`` in ``dtype``."""
    return get_rng(rng).uniform(-bound, bound, size=shape).astype(_dtype(dtype))


def normal(shape, std=1.0, dtype=np.float32, rng=None, mean=0.0):
    """N(mean, std^2) of ``shape`` in ``dtype``."""
    return get_rng(rng).normal(mean, std, size=shape).astype(_dtype(dtype))


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, _dtype(dtype))


def ones(shape, dtype=np.float32):
    return np.ones(shape, _dtype(dtype))


def fan_in(shape):
    """Inputs per output unit: shape[1] * prod(shape[2:]) (PyTorch's convention)."""
    return int(shape[1] * math.prod(shape[2:])) if len(shape) > 1 else int(shape[0])


def kaiming_uniform(shape, a=math.sqrt(5), dtype=np.float32, rng=None):
    """PyTorch's ``kaiming_uniform_(w, a)``: U(-b, b), b = sqrt(6 / ((1 + a^2) fan_in)).

    With the default a = sqrt(5) this is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the
    default init of PyTorch's Conv2d and Linear weights.
    """
    gain = math.sqrt(2.0 / (1 + a * a))
    bound = gain * math.sqrt(3.0 / max(1, fan_in(shape)))
    return uniform(shape, bound, dtype, rng)


def seed_int(rng=None):
    """A 63-bit integer seed drawn from the generator (e.g. a Dropout layer's seed)."""
    return int(get_rng(rng).integers(0, 2 ** 63, dtype=np.int64))
