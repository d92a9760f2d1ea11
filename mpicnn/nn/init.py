"""Random parameter initialisation from one module-level generator.

Every rank builds the model with the same seed and so the same parameters.
``manual_seed(seed)`` resets the generator (PCG64 via ``numpy.random.default_rng``);
functions take ``rng=`` to use another generator instead. Values are drawn in float64
and rounded once to the requested dtype, so float32 and float64 models start from the
same numbers up to rounding.

``deferred()``: inside it, random draws advance the generator exactly as usual but
return a placeholder that holds no memory (a read-only zero-stride view) and remembers
the generator state it started from; ``materialize(placeholder)`` redraws the same
numbers later. A pipeline stage builds the whole model this way and materializes only
its own layers, so a model that does not fit one rank can still be pipelined.
"""
import math
from contextlib import contextmanager

import numpy as np

__all__ = ["manual_seed", "get_rng", "set_rng", "uniform", "normal", "zeros", "ones",
           "fan_in", "kaiming_uniform", "seed_int", "deferred", "is_deferred", "materialize"]

_rng = np.random.default_rng(0)
_deferring = False
_recipes = {}  # id(placeholder) -> (placeholder, bit generator class, state, draw(rng))
_SKIP_CHUNK = 1 << 20  # values drawn at a time while skipping a deferred draw (8 MB)


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
    dt = _dtype(dtype)
    return _draw(get_rng(rng), shape, dt, lambda g, size: g.uniform(-bound, bound, size=size))


def normal(shape, std=1.0, dtype=np.float32, rng=None, mean=0.0):
    """N(mean, std^2) of ``shape`` in ``dtype``."""
    dt = _dtype(dtype)
    return _draw(get_rng(rng), shape, dt, lambda g, size: g.normal(mean, std, size=size))


def _draw(g, shape, dtype, sample):
    """``sample(g, shape)`` in ``dtype``, or under ``deferred()`` a placeholder for it. The
    generator consumes its values one after another, so skipping them in chunks leaves it
    where the whole draw would."""
    if not _deferring:
        return sample(g, shape).astype(dtype)
    state = g.bit_generator.state
    n = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    for lo in range(0, n, _SKIP_CHUNK):
        sample(g, min(_SKIP_CHUNK, n - lo))
    placeholder = np.broadcast_to(np.zeros((), dtype), shape)
    _recipes[id(placeholder)] = (placeholder, type(g.bit_generator), state,
                                 lambda r: sample(r, shape).astype(dtype))
    return placeholder


@contextmanager
def deferred():
    """Draws inside the block return placeholders (see the module docstring)."""
    global _deferring
    previous, _deferring = _deferring, True
    try:
        yield
    finally:
        _deferring = previous


def is_deferred(array):
    return id(array) in _recipes and _recipes[id(array)][0] is array


def materialize(array):
    """The values a deferred draw stands for (bit for bit what the draw would have given);
    any other array unchanged. The placeholder is forgotten."""
    if not is_deferred(array):
        return array
    _, kind, state, draw = _recipes.pop(id(array))
    bits = kind()
    bits.state = state
    return draw(np.random.Generator(bits))


def forget(array):
    """Drop the recipe of a placeholder that will never be materialized."""
    if is_deferred(array):
        del _recipes[id(array)]


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
