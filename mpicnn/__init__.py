"""mpicnn: a from-scratch CNN trainer for MPI clusters (NumPy, CUDA through CuPy)."""

__version__ = "0.1.0"
