"""The module-level functions of the stand-in: CuPy's names, NumPy's arithmetic, CuPy's rules.

``IMPLEMENTED`` maps a NumPy function name to the stand-in's function: ``numpy.f(x)`` on
a device array dispatches there through ``__array_function__``. The names are those
CuPy 14 implements (checked against ``dir(cupy)``); a NumPy function missing here raises
NumPy's "no implementation found" TypeError, as with CuPy. A host (NumPy) array among
the operands is a TypeError; the only doors between host and device are ``asarray``,
``array``, ``asnumpy``, ``ndarray.get``/``set`` and scalar conversion, all recorded.
"""
import numpy

from . import standin
from ._array import compute, ndarray, unwrap, wrap

# Functions computing on arrays (device work; results are device arrays).
DEVICE = """
all allclose amax amin angle any append argmax argmin argpartition argsort argwhere around
array_equal array_equiv array_split atleast_1d atleast_2d atleast_3d average bincount
broadcast_arrays broadcast_to choose clip column_stack compress concatenate convolve
copy corrcoef correlate count_nonzero cov cross cumprod cumsum delete diag diagflat
diagonal diff digitize dot dsplit dstack einsum expand_dims extract fix flatnonzero flip
fliplr flipud hsplit hstack imag inner interp isclose isin kron lexsort matrix_transpose
max mean median min moveaxis nan_to_num nanargmax nanargmin nancumsum nanmax nanmean
nanmin nanprod nanstd nansum nanvar nonzero outer pad partition percentile prod ptp
quantile ravel real repeat reshape roll rollaxis rot90 round searchsorted sort split
squeeze stack std sum swapaxes take take_along_axis tensordot tile trace transpose tril
triu unique var vdot vsplit vstack where
""".split()
# Functions answering about arrays or dtypes on the host (no device work).
HOST = "shape ndim size result_type promote_types can_cast issubdtype isscalar broadcast_shapes".split()
UFUNC_EXCLUDED = {"isnat", "matvec", "spacing", "vecdot", "vecmat"}  # not in CuPy 14


def _device(name):
    fn = getattr(numpy, name)

    def f(*args, **kwargs):
        return compute(fn, *args, **kwargs)
    f.__name__ = f.__qualname__ = name
    return f


def _host(name):
    fn = getattr(numpy, name)

    def f(*args, **kwargs):
        args = tuple(a._a if isinstance(a, ndarray) else a for a in args)
        return fn(*args, **kwargs)
    f.__name__ = f.__qualname__ = name
    return f


class ufunc:
    """A CuPy ufunc: NumPy's, on device arrays only."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout

    def __call__(self, *args, **kwargs):
        out = kwargs.get("out")
        outs = out if isinstance(out, tuple) else (out,)
        if out is not None and not all(isinstance(o, ndarray) for o in outs):
            raise TypeError(f"output arrays of cupy ufuncs must be cupy.ndarray, got {type(outs[0])}")
        result = compute(self._u, *args, **kwargs)
        return result if out is None else out

    def reduce(self, *args, **kwargs):
        return compute(self._u.reduce, *args, **kwargs)

    def accumulate(self, *args, **kwargs):
        return compute(self._u.accumulate, *args, **kwargs)

    def outer(self, *args, **kwargs):
        return compute(self._u.outer, *args, **kwargs)

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"


UFUNCS = {n: ufunc(getattr(numpy, n)) for n in dir(numpy)
          if isinstance(getattr(numpy, n), numpy.ufunc) and n not in UFUNC_EXCLUDED}


# ---- creation: memory allocated on the device ----------------------------------------------
def _new(a):
    standin.announce()
    standin.queued()
    return ndarray._of(a)


def empty(shape, dtype=float, order="C"):
    return _new(numpy.empty(shape, dtype, order=order))


def zeros(shape, dtype=float, order="C"):
    return _new(numpy.zeros(shape, dtype, order=order))


def ones(shape, dtype=float, order="C"):
    return _new(numpy.ones(shape, dtype, order=order))


def full(shape, fill_value, dtype=None, order="C"):
    return _new(numpy.full(shape, unwrap(fill_value), dtype, order=order))


def _prototype(a, name):
    if not isinstance(a, ndarray):
        raise TypeError(f"cupy.{name} needs a cupy.ndarray prototype, got {type(a)}")
    return a._a


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    return _new(numpy.empty_like(_prototype(prototype, "empty_like"), dtype, order, shape=shape))


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    return _new(numpy.zeros_like(_prototype(a, "zeros_like"), dtype, order, shape=shape))


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    return _new(numpy.ones_like(_prototype(a, "ones_like"), dtype, order, shape=shape))


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    return _new(numpy.full_like(_prototype(a, "full_like"), unwrap(fill_value), dtype, order, shape=shape))


def arange(start, stop=None, step=1, dtype=None):
    return _new(numpy.arange(start, stop, step, dtype) if stop is not None else numpy.arange(start, dtype=dtype))


def linspace(*args, **kwargs):
    return _new(numpy.linspace(*args, **kwargs))


def eye(N, M=None, k=0, dtype=float, order="C"):
    return _new(numpy.eye(N, M, k, dtype, order))


def identity(n, dtype=float):
    return _new(numpy.identity(n, dtype))


# ---- the doors between host and device ---------------------------------------------------------
def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        if copy is False and (dtype is None or numpy.dtype(dtype) == obj.dtype) and ndmin <= obj.ndim:
            return obj
        return compute(numpy.array, obj, dtype=dtype, order=order, ndmin=ndmin)
    if any(isinstance(v, ndarray) for v in (obj if isinstance(obj, (list, tuple)) else ())):
        # CuPy accepts a list of device arrays and stacks them on the device
        return compute(numpy.array, list(obj), dtype=dtype, order=order, ndmin=ndmin)
    host = numpy.array(obj, dtype=dtype, order=order, ndmin=ndmin, copy=True)
    if host.dtype == object:
        raise ValueError("Unsupported dtype object")
    standin.announce()
    standin.transfer("h2d", host.nbytes)
    return ndarray._of(host)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return array(a, dtype, copy=bool(copy), order=order or "K", blocking=blocking)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):  # CuPy's _core.ascontiguousarray takes a cupy.ndarray only
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                        f"got {type(a).__name__})")
    if a._a.flags.c_contiguous and (dtype is None or numpy.dtype(dtype) == a.dtype):
        return a
    return compute(numpy.ascontiguousarray, a, dtype=dtype)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    host = numpy.asarray(a, order=order)
    if out is None:
        return host
    out[...] = host
    return out


def get_array_module(*args):
    import cupy
    return cupy if any(isinstance(a, ndarray) for a in args) else numpy


def copyto(dst, src, casting="same_kind", where=True):
    if not isinstance(dst, ndarray):
        raise TypeError(f"cupy.copyto: dst must be a cupy.ndarray, got {type(dst)}")
    compute(numpy.copyto, dst, src, casting=casting, where=where)


CREATION = {f.__name__: f for f in (empty, zeros, ones, full, empty_like, zeros_like, ones_like,
                                    full_like, arange, linspace, eye, identity, array, asarray,
                                    ascontiguousarray, copyto)}
FUNCTIONS = {**{n: _device(n) for n in DEVICE}, **{n: _host(n) for n in HOST}, **CREATION}
IMPLEMENTED = {**FUNCTIONS, **UFUNCS}
