"""RawModule, RawKernel: CUDA sources whose kernels launch on a GPU or the emulator.

They mirror CuPy's classes: ``module.get_function(name)(grid, block, args,
shared_mem=0)``. The arrays in ``args`` choose where it runs: CuPy arrays launch on
the GPU through CuPy, NumPy arrays run on the CPU emulator (kernels/emu), and a mix
is a TypeError. With no arrays at all it runs on the emulator.

On the emulator, ``check=`` (or the environment variable ``MPICNN_EMU_CHECK``) turns
on the tools of NVIDIA's compute-sanitizer it imitates: ``memcheck`` (every global and
shared memory access bounds-checked, kernels/emu/check.cpp), ``synccheck`` (every
thread of a block reaches the same barriers) and ``racecheck`` (two threads touch the same
shared memory between barriers, one of them writing; it runs on memcheck's build). A
fault they find is a LaunchError.
"""

import os
import time
from pathlib import Path

import numpy as np

from . import gpu, launch, trace

CHECK_TOOLS = ("memcheck", "synccheck", "racecheck")


def parse_checks(value, where="MPICNN_EMU_CHECK"):
    """``"memcheck,synccheck"`` (or a sequence of names) -> frozenset of tools."""
    names = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in CHECK_TOOLS]
    if unknown:
        raise ValueError(f"{where}: unknown check {unknown[0]!r}; choose from {', '.join(CHECK_TOOLS)}, "
                         "comma-separated")
    return frozenset(names)


def env_checks():
    """The tools MPICNN_EMU_CHECK names (read at each launch, so a test can set it)."""
    return parse_checks(os.environ.get("MPICNN_EMU_CHECK", ""))


class RawModule:
    """CUDA C++ source: ``code`` as a string, or ``path`` to a ``.cu`` file.

    Unlike CuPy, whose ``path`` names a compiled cubin/ptx, ``path`` here is a CUDA
    source file; its directory is on the include path. ``options`` are NVRTC options
    (``-D``/``-I`` also apply on the emulator). ``name_expressions`` instantiate
    templates (``"relu_fwd<float>"``); ``get_function`` takes the same strings.
    ``check``: emulator checks for this module's launches (``"memcheck,synccheck"``);
    None (the default) follows ``MPICNN_EMU_CHECK``.
    """

    def __init__(self, code=None, path=None, options=(), name_expressions=(), check=None):
        if (code is None) == (path is None):
            raise TypeError("RawModule takes exactly one of code= and path=")
        if isinstance(options, str) or isinstance(name_expressions, str):
            raise TypeError("options and name_expressions are sequences of strings")
        self.path = Path(path) if path is not None else None
        self.code = self.path.read_text() if self.path is not None else code
        self.options = tuple(options)
        self.name_expressions = tuple(name_expressions)
        self.display = str(self.path) if self.path is not None else "<source>"
        self._include_dirs = (str(self.path.resolve().parent),) if self.path is not None else ()
        self.check = None if check is None else parse_checks(check, "check=")
        self._functions = {}
        self._emu = {}  # instrumented (None, "memcheck", "racecheck") -> library

    def get_function(self, name):
        """The kernel ``name``: an ``extern "C"`` kernel, or one of ``name_expressions``."""
        kernel = self._functions.get(name)
        if kernel is None:
            kernel = self._functions[name] = Kernel(self, name)
        return kernel

    def checks(self):
        """The emulator checks on for a launch now."""
        return self.check if self.check is not None else env_checks()

    def emulator(self, instrumented=None):
        """The compiled emulator library (built on first use, then cached); ``instrumented``
        ("memcheck" or "racecheck") gives a build with every memory access checked."""
        lib = self._emu.get(instrumented)
        if lib is None:
            from . import emu
            lib = self._emu[instrumented] = emu.load_library(self.code, self.display, self._include_dirs,
                                                             self.options, self.name_expressions, instrumented)
        return lib

    def kernel_names(self):
        """Names ``get_function`` accepts (from the emulator build's launch table)."""
        return list(self.emulator().kernels)

    @property
    def gpu_options(self):
        return self.options + tuple(f"-I{d}" for d in self._include_dirs)

    def __repr__(self):
        return f"RawModule({self.display})"


class Kernel:
    """One kernel of a RawModule; call it as ``k(grid, block, args, shared_mem=0)``.

    ``max_dynamic_shared_size_bytes`` (as in CuPy; cudaFuncSetAttribute on a GPU) opts
    the kernel in to more than 48 KB of shared memory: launches may then give it up to
    that much dynamic shared memory.
    """

    def __init__(self, module, name):
        self.module = module
        self.name = name
        self.max_dynamic_shared_size_bytes = 0

    @property
    def signature(self):
        """Parameter types, e.g. ``['float*', 'float*', 'int']`` (const is not shown)."""
        return [str(p) for p in self.module.emulator().signature(self.name)]

    def __call__(self, grid, block, args, *, shared_mem=0):
        grid = launch.dim3(grid, "grid", self.name)
        block = launch.dim3(block, "block", self.name)
        opt_in = self.max_dynamic_shared_size_bytes
        launch.check(self.name, grid, block, shared_mem, opt_in)
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel {self.name!r}: args must be a tuple, got {type(args).__name__}")
        on_gpu = _on_gpu(self.name, args)
        tracing = trace.enabled()
        m = self.module
        if on_gpu:
            gpu.launch(m.code, m.gpu_options, m.name_expressions, self.name, grid, block,
                       tuple(args), shared_mem, opt_in, trace if tracing else None)
            return
        checks = m.checks()
        # racecheck's build checks bounds too (kernels/emu/build.py)
        lib = m.emulator("racecheck" if "racecheck" in checks else "memcheck" if "memcheck" in checks else None)
        start = time.perf_counter()
        lib.launch(self.name, grid, block, args, shared_mem, launch.shared_limit(opt_in), checks)
        if tracing:
            trace.record(self.name, "emu", (time.perf_counter() - start) * 1e3)

    def __repr__(self):
        return f"<kernel {self.name!r} of {self.module.display}>"


class RawKernel(Kernel):
    """A single kernel from source, as ``cupy.RawKernel(code, name, options)``."""

    def __init__(self, code, name, options=(), check=None):
        super().__init__(RawModule(code=code, options=options, check=check), name)
        self.code = code
        self.options = tuple(options)


def _on_gpu(name, args):
    """True for CuPy arrays, False for NumPy arrays; a mix is an error."""
    host = device = None
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            host = i if host is None else host
        elif gpu.is_device_array(a):
            device = i if device is None else device
    if host is not None and device is not None:
        raise TypeError(f"kernel {name!r}: args[{host}] is a NumPy array and args[{device}] a "
                        "device (CuPy) array; pass only NumPy arrays (CPU emulator) or only CuPy "
                        "arrays (GPU)")
    return device is not None
