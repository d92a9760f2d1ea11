"""``cupy.RawModule``/``cupy.RawKernel`` of the stand-in: the CUDA source runs on mpicnn's
CPU emulator (``kernels/emu``), with the device arrays' memory as the kernel's pointers.

As with CuPy, arguments are device arrays (passed as pointers) and scalars; a NumPy array
is a TypeError, and more dynamic shared memory than ``max_dynamic_shared_size_bytes``
(48 KiB unless raised) fails the launch as on a GPU. Compilation happens at
``get_function``, as with NVRTC, and its errors are ``cuda.compiler.CompileException``.
"""
import numpy

from . import standin
from ._array import ndarray
from .cuda.compiler import CompileException
from .cuda.driver import CUDADriverError

DEFAULT_DYNAMIC_SHARED = 48 * 1024


class RawModule:
    def __init__(self, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        import kernels
        if path is not None or code is None:
            raise NotImplementedError("the cupy stand-in runs CUDA source (code=...), not compiled "
                                      "cubin/ptx files (path=...)")
        standin.announce()
        self.code = code
        self.options = tuple(options)
        self.name_expressions = tuple(name_expressions or ())
        self._source = kernels.RawModule(code=code, options=self.options,
                                         name_expressions=self.name_expressions)

    def _library(self):
        import kernels
        try:
            return self._source.emulator()
        except kernels.CompileError as e:
            raise CompileException(str(e), self.code, "<source>", self.options) from None

    def get_function(self, name):
        library = self._library()
        library.signature(name)  # an unknown name fails here, as cuModuleGetFunction does
        return RawKernel._of(self, name)


class RawKernel:
    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=False):
        self._module = RawModule(code=code, options=options)
        self.name = name
        self.max_dynamic_shared_size_bytes = DEFAULT_DYNAMIC_SHARED

    @classmethod
    def _of(cls, module, name):
        k = cls.__new__(cls)
        k._module, k.name = module, name
        k.max_dynamic_shared_size_bytes = DEFAULT_DYNAMIC_SHARED
        return k

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        from kernels import launch
        grid = launch.dim3(grid, "grid", self.name)
        block = launch.dim3(block, "block", self.name)
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: kernel {self.name!r} asks for {shared_mem} "
                                  f"bytes of dynamic shared memory; max_dynamic_shared_size_bytes is "
                                  f"{self.max_dynamic_shared_size_bytes}")
        launch.check(self.name, grid, block, shared_mem, self.max_dynamic_shared_size_bytes)
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be a tuple, got {type(args).__name__}")
        memory = []
        for a in args:
            if isinstance(a, numpy.ndarray):
                raise TypeError(f"Unsupported type {type(a)}")
            memory.append(a._a if isinstance(a, ndarray) else a)
        standin.queued()
        self._module._library().launch(self.name, grid, block, memory, shared_mem,
                                       launch.shared_limit(self.max_dynamic_shared_size_bytes))
