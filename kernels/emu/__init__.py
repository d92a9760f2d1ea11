"""CPU emulator for CUDA kernels: g++ compiles the ``.cu`` after ``cuda_emu.h``; blocks
run one after another and the threads of a block as fibers (see runtime.cpp).

``load_library(code, display, ...)`` returns an :class:`EmuLibrary` (compiled once,
cached on disk and memoized per process); users go through ``kernels.RawModule``.
"""

import threading

from .build import cache_dir, emulator_version, stats
from .library import EmuLibrary

__all__ = ["load_library", "EmuLibrary", "cache_dir", "emulator_version", "stats"]

_loaded = {}
_lock = threading.Lock()


def load_library(code, display, include_dirs=(), options=(), name_expressions=(), instrumented=None):
    """``instrumented``: None, "memcheck" or "racecheck" (kernels/emu/build.py)."""
    from . import build
    key = (code, display, tuple(include_dirs), tuple(options), tuple(name_expressions),
           str(cache_dir()), tuple(build._runtime_flags()), instrumented)
    with _lock:
        lib = _loaded.get(key)
        if lib is None:
            path = build.library(code, display, include_dirs, options, name_expressions, instrumented)
            lib = _loaded[key] = EmuLibrary(path, display, memcheck=instrumented is not None)
        return lib


def forget_loaded():
    """Drops the in-process memo (tests use it to check the disk cache)."""
    with _lock:
        _loaded.clear()
