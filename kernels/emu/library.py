"""A compiled emulator library loaded with ctypes: its kernel table, and launches.

A library built for memcheck (kernels/emu/check.cpp) runs each launch on copies of
its array arguments placed in a guarded arena: arguments that share memory are
copied as one block (so in-place kernels still see their writes), the regions are
named to the checker (``args[1] (float*; a float32 array of 100 elements)``), and the
copies are written back after the launch, whether it failed or not, as a GPU would
have written them.
"""

import ctypes
import functools
import os
import re
import shutil
import subprocess
import threading

import numpy as np

from ..errors import KernelNotFound, LaunchError
from . import args as argcheck

# Launch flags, as in emu_runtime.h.
_POISON_SHARED, _CHECK_MEM, _CHECK_SYNC, _CHECK_RACE = 1, 2, 4, 8
_ARENA_GAP = 64 * 1024  # unused bytes around each argument's copy: a stray access lands there
_PC = re.compile(r" @pc=0x([0-9a-f]+)")
_ADDR = re.compile(r"@addr=(0x[0-9a-f]+|\(nil\))")


class EmuLibrary:
    def __init__(self, path, display, memcheck=False):
        self.path = path
        self.display = display
        self.memcheck = memcheck
        lib = ctypes.CDLL(str(path))
        lib.emu_kernel_count.restype = ctypes.c_int
        lib.emu_kernel_name.restype = ctypes.c_char_p
        lib.emu_kernel_name.argtypes = [ctypes.c_int]
        lib.emu_kernel_signature.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.emu_launch.restype = ctypes.c_int
        lib.emu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                   ctypes.c_uint, ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
        lib.emu_last_error.restype = ctypes.c_char_p
        lib.emu_fiber_switch_ns.restype = ctypes.c_double
        lib.emu_fiber_switch_ns.argtypes = [ctypes.c_int]
        lib.emu_check_set_args.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_size_t),
                                           ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_char_p),
                                           ctypes.c_size_t, ctypes.c_size_t]
        self._lib = lib
        self._lock = threading.Lock()  # the runtime's scheduler state is per library
        self._arena = np.empty(0, np.uint8)  # memcheck: reused by launches (fresh pages are slow)
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

    def launch(self, name, grid, block, args, shared_mem, shared_limit, checks=frozenset()):
        """``shared_limit``: bytes of static + dynamic shared memory the launch may use;
        ``checks``: the tools of MPICNN_EMU_CHECK that are on (memcheck needs a library
        built for it)."""
        index, params = self._lookup(name)
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel {name!r}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(params):
            sig = ", ".join(map(str, params))
            raise TypeError(f"kernel {name!r} takes {len(params)} arguments ({sig}), got {len(args)}")
        values = [argcheck.convert(name, i, p, a) for i, (p, a) in enumerate(zip(params, args))]
        flags = _POISON_SHARED if os.environ.get("MPICNN_EMU_POISON_SHARED", "") not in ("", "0") else 0
        flags |= _CHECK_SYNC if "synccheck" in checks else 0
        flags |= _CHECK_RACE if "racecheck" in checks else 0
        arena = None
        g = (ctypes.c_uint * 3)(*grid)
        b = (ctypes.c_uint * 3)(*block)
        with self._lock:
            if self.memcheck:
                flags |= _CHECK_MEM
                arena = _Arena(args, params, values, self)
                arena.enter(self._lib)
            argv = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
            try:
                rc = self._lib.emu_launch(index, g, b, shared_mem, shared_limit, flags, argv)
            finally:
                if arena is not None:
                    arena.leave(self._lib)
            if rc != 0:
                message = self._lib.emu_last_error().decode(errors="replace")
                raise LaunchError(self._explain(message, args, arena))

    def _explain(self, message, args, arena):
        """Source lines for code offsets and argument names for addresses in a runtime message."""
        message = _PC.sub(lambda m: _source_line(str(self.path), self.display, m.group(1)), message)
        return _ADDR.sub(lambda m: _name_address(m.group(1), args, arena), message)

    def fiber_switch_ns(self, n=1_000_000):
        with self._lock:
            return self._lib.emu_fiber_switch_ns(n)


class _Arena:
    """Copies of a launch's array arguments, apart from each other, for memcheck."""

    def __init__(self, args, params, values, library):
        arrays = [(i, a) for i, a in enumerate(args) if isinstance(a, np.ndarray) and params[i].pointer]
        spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes, i) for i, a in arrays)
        groups = []  # [lo, hi, members]: arguments that share memory are copied together
        for lo, hi, i in spans:
            if groups and lo < groups[-1][1]:
                groups[-1][1] = max(groups[-1][1], hi)
                groups[-1][2].append(i)
            else:
                groups.append([lo, hi, [i]])
        need = sum(hi - lo + 256 + _ARENA_GAP for lo, hi, _ in groups) + _ARENA_GAP
        if library._arena.nbytes < need:
            library._arena = np.empty(need, np.uint8)
        self.buffer = library._arena
        base = self.buffer.ctypes.data
        self.copies, begs, sizes, labels = [], [], [], []
        at = base + _ARENA_GAP
        for lo, hi, members in groups:
            at += (lo - at) % 256  # the copy keeps the address's alignment
            ctypes.memmove(at, lo, hi - lo)
            self.copies.append((lo, at, hi - lo, any(args[i].flags.writeable for i in members)))
            for i in members:
                a = args[i]
                values[i].value = at + (a.ctypes.data - lo)
                begs.append(values[i].value)
                sizes.append(a.nbytes)
                labels.append(f"args[{i}] ({params[i]}; a {a.dtype} array of {a.size} elements, "
                              f"{a.nbytes} bytes)".encode())
            at += hi - lo + _ARENA_GAP
        self.moved = {i: values[i].value for i, _ in arrays}
        n = len(begs)
        self._begs = (ctypes.c_size_t * max(n, 1))(*begs)
        self._sizes = (ctypes.c_size_t * max(n, 1))(*sizes)
        self._labels = (ctypes.c_char_p * max(n, 1))(*labels)
        self._range = (base, base + self.buffer.nbytes)

    def enter(self, lib):
        lib.emu_check_set_args(len(self.moved), self._begs, self._sizes, self._labels, *self._range)

    def leave(self, lib):
        lib.emu_check_set_args(0, None, None, None, 0, 0)
        for original, copy, nbytes, writeable in self.copies:
            if writeable:
                ctypes.memmove(original, copy, nbytes)


@functools.lru_cache(maxsize=4096)
def _source_line(library, display, offset):
    """`` at file.cu:LINE`` of a code offset in a library built with -g (addr2line)."""
    tool = shutil.which("addr2line")
    if tool:
        out = subprocess.run([tool, "-e", library, "-i", f"0x{offset}"], capture_output=True, text=True)
        first = out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""
        where = first.split(" (discriminator")[0].strip()
        if where and not where.startswith("??"):
            path, _, line = where.rpartition(":")
            if path.endswith("/" + display):  # a relative name (<source>) joined to g++'s directory
                path = display
            return f" at {path}:{line}"
    return f" at code offset 0x{offset} of {library}"


def _name_address(text, args, arena):
    """An address as ``args[i]`` and a byte offset when it lies in an array argument."""
    if text == "(nil)":
        return "address 0"
    address = int(text, 16)
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            start = arena.moved.get(i, a.ctypes.data) if arena is not None else a.ctypes.data
            if start <= address < start + max(a.nbytes, 1):
                return f"byte {address - start} of args[{i}]"
    return f"address {text}"
