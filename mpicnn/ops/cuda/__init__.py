"""Launchers of the CUDA kernels (``kernels/*.cu``), one module per op family.

Every public function here has the signature and return values of the NumPy op of
the same name in ``mpicnn.ops`` (or ``mpicnn.nn.optim``), allocates its outputs in
the input's array module (NumPy: the kernels run on the CPU emulator; CuPy: on the
GPU), checks what the kernels assume (dtype float32/float64, shapes, contiguity of
arrays written in place) and launches. GEMMs go to ``xp.matmul`` (cuBLAS on the GPU).
The NumPy ops call these through ``mpicnn.backend.kernel_version`` when the backend
is emu or cupy; they can also be called directly.
"""
