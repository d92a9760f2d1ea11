"""MPI on GPU arrays: hand CuPy arrays straight to MPI when the library is CUDA-aware,
otherwise stage them through host buffers.

mpi4py 4.1 has no query for CUDA support (FACTS.md). ``cuda_aware()`` asks, in order:
``MPICNN_CUDA_AWARE=1|0`` (the user knows best), ``MPIX_Query_cuda_support()`` in the
loaded libmpi (MPICH, Open MPI), and the MPI-4.1 info key ``mpi_memory_alloc_kinds``
(a CUDA-aware build lists ``cuda``). The CuPy stream is synchronised before MPI reads
or writes a device buffer, on both paths (``before`` for sends, ``before_receive`` for
receives).
"""
import ctypes
import os
from functools import lru_cache

import numpy as np
from mpi4py import MPI

from .. import backend
from ..errors import UserError

ENV = "MPICNN_CUDA_AWARE"


def _query_library():
    for name in ("libmpi.so.12", "libmpi.so.40", "libmpi.so"):
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        query = getattr(lib, "MPIX_Query_cuda_support", None)
        if query is not None:
            query.restype = ctypes.c_int
            return bool(query())
    return None


@lru_cache(maxsize=None)
def cuda_aware():
    value = os.environ.get(ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise UserError(f"{ENV}={value!r}: use 1 (MPI reads GPU memory) or 0 (stage through the host)")
    found = _query_library()
    if found is not None:
        return found
    try:
        kinds = MPI.COMM_WORLD.Get_info().Get("mpi_memory_alloc_kinds") or ""
    except (AttributeError, MPI.Exception):
        kinds = ""
    return "cuda" in kinds


class MPIBuffer:
    """What MPI reads and writes for ``array``: the array itself, or a host mirror.

    Call ``before()`` before the MPI call and ``after()`` once it has completed.
    """

    def __init__(self, array, staged=None):
        self.array = array
        device = not isinstance(array, np.ndarray)
        self.staged = device and not cuda_aware() if staged is None else staged
        self.host = np.empty(array.shape, array.dtype) if self.staged else None
        self.device = device

    @property
    def buf(self):
        return self.host if self.staged else self.array

    def before(self):
        if self.device:
            backend.synchronize()
        if self.staged:
            if self.device:
                self.array.get(out=self.host)
            else:
                np.copyto(self.host, self.array)

    def before_receive(self):
        """Call before posting a receive into the buffer. MPI writes device memory outside
        CuPy's stream order, and the memory pool may have handed this block out while
        queued kernels still use its previous owner: wait for them first."""
        if self.device and not self.staged:
            backend.synchronize()

    def after(self):
        if self.staged:
            if self.device:
                self.array.set(self.host)
            else:
                np.copyto(self.array, self.host)
