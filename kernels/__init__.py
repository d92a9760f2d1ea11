"""CUDA C kernels of mpicnn (``*.cu``), launched through CuPy or the CPU emulator.

The kernel sources, loader and emulator arrive with the kernels issue; until then
the NumPy ops in ``mpicnn.ops`` are the only backend.
"""
