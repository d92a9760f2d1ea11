"""mpicnn's CuPy TEST STAND-IN: the part of CuPy's API mpicnn uses, with CuPy's rules, on
host memory and the CPU emulator. NOT a GPU, never shipped; it says so on stderr.

Put ``tests/cupy_standin`` first on PYTHONPATH and ``import cupy`` gets this package:

    PYTHONPATH=$PWD/tests/cupy_standin:$PWD mpiexec -n 2 python -m mpicnn.train --backend cupy

It is strict where CuPy is strict (no implicit conversion to NumPy, no NumPy arrays mixed
into device operations, no buffer protocol for h5py or MPI) and it records what a GPU
run would do at the host/device boundary (``cupy.standin``: transfers, stream
synchronisations, device pointers handed to MPI) so tests can count them.
"""
import numpy

from . import cuda, standin
from ._array import ndarray
from ._functions import FUNCTIONS, UFUNCS, asnumpy, get_array_module
from ._kernel import RawKernel, RawModule
from .cuda import get_default_memory_pool

__version__ = "14.2.0+standin"
IS_STANDIN = True

globals().update(FUNCTIONS)
globals().update(UFUNCS)

# dtypes and constants are NumPy's, as in CuPy
dtype = numpy.dtype
for _name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64", "complex64", "complex128", "intp", "uintp",
              "integer", "floating", "number", "generic", "inf", "nan", "pi", "e", "newaxis",
              "finfo", "iinfo"):
    globals()[_name] = getattr(numpy, _name)
float_ = numpy.float64
int_ = numpy.int64

standin.announce()
