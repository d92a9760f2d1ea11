"""Which kernel backends the kernel tests run on: the emulator always, CuPy when a GPU
is visible or MPICNN_REQUIRE_GPU=1 (jobs/gpu_check.sh: a GPU node must not skip them).
With the CuPy test stand-in first on PYTHONPATH (tests/cupy_standin) "a GPU is visible"
and the cupy parametrisation runs on it (tests/test_cupy_standin.py does that).
KERNEL_TARGETS adds the emulator under MPICNN_EMU_CHECK=memcheck,synccheck, so every
shipped kernel is also run through the emulator's checks (no report may come)."""
import os

import pytest

from mpicnn import backend

GPU = backend.gpu_count() > 0
REQUIRE_GPU = os.environ.get("MPICNN_REQUIRE_GPU") == "1"
CUPY = pytest.param("cupy", marks=pytest.mark.skipif(not (GPU or REQUIRE_GPU), reason="no GPU"))
KERNEL_BACKENDS = ["emu", CUPY]
EMU_CHECKS = "memcheck,synccheck,racecheck"
KERNEL_TARGETS = ["emu", "emu-checked", CUPY]
