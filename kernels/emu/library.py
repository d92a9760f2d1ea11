"""A compiled emulator library loaded with ctypes: its kernel table, and launches."""

import ctypes
import os
import threading

from ..errors import KernelNotFound, LaunchError
from . import args as argcheck

_POISON_SHARED = 1  # EMU_POISON_SHARED in emu_runtime.h


class EmuLibrary:
    def __init__(self, path, display):
        self.path = path
        self.display = display
        lib = ctypes.CDLL(str(path))
        lib.emu_kernel_count.restype = ctypes.c_int
        lib.emu_kernel_name.restype = ctypes.c_char_p
        lib.emu_kernel_name.argtypes = [ctypes.c_int]
        lib.emu_kernel_signature.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.emu_launch.restype = ctypes.c_int
        lib.emu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                   ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
        lib.emu_last_error.restype = ctypes.c_char_p
        lib.emu_fiber_switch_ns.restype = ctypes.c_double
        lib.emu_fiber_switch_ns.argtypes = [ctypes.c_int]
        self._lib = lib
        self._lock = threading.Lock()  # the runtime's scheduler state is per library
        self.kernels = {}
        buf = ctypes.create_string_buffer(4096)
        for i in range(lib.emu_kernel_count()):
            lib.emu_kernel_signature(i, buf, len(buf))
            name = lib.emu_kernel_name(i).decode()
            self.kernels[name] = (i, argcheck.parse_signature(buf.value.decode()))

    def signature(self, name):
        return self._lookup(name)[1]

    def _lookup(self, name):
        try:
            return self.kernels[name]
        except KeyError:
            have = ", ".join(self.kernels) or "none"
            raise KernelNotFound(
                f"{self.display} has no kernel {name!r}; kernels: {have}. Only extern \"C\" kernels "
                "are found by name; templates need name_expressions=[...]") from None

    def launch(self, name, grid, block, args, shared_mem):
        index, params = self._lookup(name)
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel {name!r}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(params):
            sig = ", ".join(map(str, params))
            raise TypeError(f"kernel {name!r} takes {len(params)} arguments ({sig}), got {len(args)}")
        values = [argcheck.convert(name, i, p, a) for i, (p, a) in enumerate(zip(params, args))]
        argv = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
        flags = _POISON_SHARED if os.environ.get("MPICNN_EMU_POISON_SHARED", "") not in ("", "0") else 0
        g = (ctypes.c_uint * 3)(*grid)
        b = (ctypes.c_uint * 3)(*block)
        with self._lock:
            rc = self._lib.emu_launch(index, g, b, shared_mem, flags, argv)
            if rc != 0:
                raise LaunchError(self._lib.emu_last_error().decode(errors="replace"))

    def fiber_switch_ns(self, n=1_000_000):
        with self._lock:
            return self._lib.emu_fiber_switch_ns(n)
