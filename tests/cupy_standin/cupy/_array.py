"""``cupy.ndarray`` of the stand-in: host memory that follows CuPy's rules for device memory.

It holds a NumPy array (``_a``) that only the stand-in touches. From outside:
  - no implicit conversion: ``numpy.asarray(x)`` raises CuPy's TypeError; ``get()``,
    ``cupy.asnumpy`` and ``float()``/``int()``/``bool()``/``item()`` copy to the host
    and are recorded as transfers;
  - NumPy functions and ufuncs reach it only through ``__array_function__`` and
    ``__array_ufunc__``, and only those the stand-in implements (CuPy's); a NumPy array
    mixed with a device array is a TypeError, as in CuPy;
  - no buffer protocol (h5py and MPI see no host memory); ``__cuda_array_interface__``
    gives MPI the pointer only when CUPY_STANDIN_CUDA_AWARE_MPI=1;
  - indexing returns 0-d device arrays, not host scalars; every operation is queued
    work on the stream (see ``standin``).
"""
import numbers
import os
import sys

import numpy

from . import standin
from .cuda import get_default_memory_pool

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def unwrap(x):
    """Operand -> what NumPy computes with; a host ndarray is refused as CuPy does."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, numpy.ndarray):
        raise _unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v) for v in x)
    return x


def wrap(r):
    """A NumPy result -> device arrays (scalars become 0-d arrays, as CuPy returns them)."""
    if isinstance(r, numpy.ndarray):
        return ndarray._of(r)
    if isinstance(r, numpy.generic):
        return ndarray._of(numpy.asarray(r))
    if isinstance(r, tuple):
        return tuple(wrap(v) for v in r)
    if isinstance(r, list):
        return [wrap(v) for v in r]
    return r


def compute(fn, *args, **kwargs):
    """Run ``fn`` as device work on unwrapped operands; wrap what it returns."""
    args = unwrap(args)
    kwargs = {k: unwrap(v) for k, v in kwargs.items()}
    standin.queued()
    return wrap(fn(*args, **kwargs))


def _index(key):
    """An index: device index arrays are used in place; host index arrays and lists are
    copied to the device first (CuPy does that too), so they count as transfers."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, (numpy.ndarray, list)):
        host = numpy.asarray(key)
        standin.transfer("h2d", host.nbytes)
        return host
    return key


class Flags:
    def __init__(self, a):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = a.base is None

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


class ndarray:
    """Multi-dimensional array "on the device" (host memory, CuPy's rules)."""

    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the cupy stand-in allocates its own memory (no memptr/strides)")
        standin.announce()
        self._a = numpy.empty(shape, dtype, order=order)
        get_default_memory_pool()._allocated(self)

    @classmethod
    def _of(cls, a):
        obj = cls.__new__(cls)
        obj._a = a
        if a.base is None:
            get_default_memory_pool()._allocated(obj)
        return obj

    # ---- what NumPy, h5py and MPI see ---------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        standin.implicit("__array__")
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method not in ("__call__", "reduce", "accumulate", "outer"):
            return NotImplemented
        out = kwargs.get("out")
        outs = out if isinstance(out, tuple) else (out,)
        if out is not None and not all(isinstance(o, ndarray) for o in outs):
            raise TypeError(f"output arrays of cupy ufuncs must be cupy.ndarray, got {out!r:.60}")
        result = compute(ufunc if method == "__call__" else getattr(ufunc, method), *inputs, **kwargs)
        return result if out is None else (outs[0] if len(outs) == 1 else outs)

    def __array_function__(self, func, types, args, kwargs):
        from . import _functions
        impl = _functions.IMPLEMENTED.get(func.__name__) if func.__module__ == "numpy" else None
        if impl is None or not all(issubclass(t, (ndarray, numpy.ndarray)) for t in types):
            return NotImplemented  # NumPy then raises "no implementation found for ..."
        return impl(*args, **kwargs)

    @property
    def __cuda_array_interface__(self):
        if not _is_presence_test(sys._getframe(1)):
            if not standin.mpi_read(self._a.nbytes):
                raise TypeError("cupy stand-in: MPI is not CUDA-aware (CUPY_STANDIN_CUDA_AWARE_MPI is not 1)")
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "descr": a.dtype.descr, "version": 3,
                "stream": 1, "strides": None if a.flags.c_contiguous else a.strides,
                "data": (a.ctypes.data if a.size else 0, False)}

    # ---- explicit transfers ---------------------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is None:
            host = numpy.array(self._a, order=order, copy=True)
        else:
            if not isinstance(out, numpy.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != self.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if out.shape != self.shape:
                raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {out.shape}")
            if not out.flags.c_contiguous:
                raise RuntimeError("Cannot get to a non-contiguous numpy.ndarray")
            numpy.copyto(out, self._a)
            host = out
        standin.transfer("d2h", self._a.nbytes)
        return host

    def set(self, arr, stream=None):
        if not isinstance(arr, numpy.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not self._a.flags.c_contiguous:
            raise RuntimeError("Cannot set to non-contiguous array")
        standin.transfer("h2d", arr.nbytes)
        numpy.copyto(self._a, arr)

    def _scalar(self):
        if self._a.size != 1:
            raise TypeError("only size-1 arrays can be converted to Python scalars")
        standin.transfer("d2h", self._a.nbytes)
        return self._a.reshape(()).item()

    def __float__(self):
        return float(self._scalar())

    def __int__(self):
        return int(self._scalar())

    def __complex__(self):
        return complex(self._scalar())

    def __bool__(self):
        if self._a.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous. "
                             "Use a.any() or a.all()")
        return bool(self._scalar())

    def item(self):
        if self._a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self._scalar()

    def tolist(self):
        return self.get().tolist()

    def tobytes(self, order="C"):
        return self.get().tobytes(order)

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec) if self._a.ndim else format(self._scalar(), spec)

    # ---- attributes -----------------------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    strides = property(lambda self: self._a.strides)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: Flags(self._a))
    T = property(lambda self: ndarray._of(self._a.T))

    @property
    def data(self):
        from .cuda import MemoryPointer
        return MemoryPointer(self._a.ctypes.data)

    @property
    def device(self):
        from .cuda import Device
        return Device()

    @property
    def base(self):
        return ndarray._of(self._a.base) if isinstance(self._a.base, numpy.ndarray) else None

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # ---- indexing -------------------------------------------------------------------------
    def __getitem__(self, key):
        standin.queued()
        return wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        key = _index(key)
        if isinstance(value, ndarray):
            self._a[key] = value._a
        elif isinstance(value, numpy.ndarray):
            if value.ndim:  # CuPy fills with a host value: only a 0-d one is a scalar
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            self._a[key] = value[()]
        elif isinstance(value, (numbers.Number, numpy.generic)):
            self._a[key] = value
        else:
            raise TypeError(f"Unsupported type {type(value)}")
        standin.queued()

    # ---- methods CuPy has -------------------------------------------------------------------
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and numpy.dtype(dtype) == self.dtype:
            return self
        return compute(self._a.astype, dtype, order=order)

    def copy(self, order="C"):
        return compute(self._a.copy, order=order)

    def view(self, dtype=None):
        return ndarray._of(self._a.view() if dtype is None else self._a.view(dtype))

    def fill(self, value):
        if isinstance(value, numpy.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value[()]
        elif isinstance(value, ndarray):
            raise TypeError("cupy.ndarray.fill takes a scalar")
        standin.queued()
        self._a.fill(value)

    def reshape(self, *shape, order="C"):
        return ndarray._of(self._a.reshape(*shape, order=order))

    def __iadd__(self, other):
        return self._inplace(numpy.add, other)

    def __isub__(self, other):
        return self._inplace(numpy.subtract, other)

    def __imul__(self, other):
        return self._inplace(numpy.multiply, other)

    def __itruediv__(self, other):
        return self._inplace(numpy.true_divide, other)

    def __ipow__(self, other):
        return self._inplace(numpy.power, other)

    def _inplace(self, ufunc, other):
        ufunc(self._a, unwrap(other), out=self._a)
        standin.queued()
        return self


def _method(name, view=False):
    def m(self, *args, **kwargs):
        if view:
            return ndarray._of(getattr(self._a, name)(*args, **kwargs))
        return compute(getattr(self._a, name), *args, **kwargs)
    m.__name__ = name
    return m


for _name in ("transpose", "swapaxes", "squeeze", "ravel"):
    setattr(ndarray, _name, _method(_name, view=True))
for _name in ("flatten", "sum", "prod", "mean", "var", "std", "max", "min", "argmax", "argmin",
              "any", "all", "cumsum", "cumprod", "clip", "dot", "take", "repeat", "nonzero",
              "sort", "argsort", "round", "conj", "diagonal", "trace", "ptp", "partition",
              "argpartition", "compress", "choose"):
    setattr(ndarray, _name, _method(_name))


def _binary(ufunc, reflected=False):
    def op(self, other):
        if isinstance(other, numpy.ndarray):
            raise _unsupported(other)
        if not isinstance(other, (ndarray, numbers.Number, numpy.generic)):
            return NotImplemented
        return compute(ufunc, other, self) if reflected else compute(ufunc, self, other)
    return op


for _name, _ufunc in (("add", numpy.add), ("sub", numpy.subtract), ("mul", numpy.multiply),
                      ("truediv", numpy.true_divide), ("floordiv", numpy.floor_divide),
                      ("mod", numpy.remainder), ("pow", numpy.power), ("matmul", numpy.matmul),
                      ("and", numpy.bitwise_and), ("or", numpy.bitwise_or), ("xor", numpy.bitwise_xor),
                      ("lshift", numpy.left_shift), ("rshift", numpy.right_shift)):
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_name}__", _binary(_ufunc, reflected=True))
for _name, _ufunc in (("eq", numpy.equal), ("ne", numpy.not_equal), ("lt", numpy.less),
                      ("le", numpy.less_equal), ("gt", numpy.greater), ("ge", numpy.greater_equal)):
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
for _name, _ufunc in (("neg", numpy.negative), ("pos", numpy.positive), ("abs", numpy.absolute),
                      ("invert", numpy.invert)):
    setattr(ndarray, f"__{_name}__", lambda self, _u=_ufunc: compute(_u, self))


_PRESENCE_TESTS = {(os.path.join("kernels", "gpu.py"), "is_device_array")}


def _is_presence_test(frame):
    """True when the reader only asks whether this is a device array (kernels/gpu.py's
    ``hasattr``); anything else that reads the interface takes the device pointer, and in
    this project that is MPI (mpi4py reads it from C, so its caller's frame shows)."""
    code = frame.f_code
    return any(code.co_name == fn and code.co_filename.endswith(path) for path, fn in _PRESENCE_TESTS)
