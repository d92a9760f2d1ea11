"""CUDA C kernels of mpicnn and the machinery to launch them.

``kernels/*.cu`` are plain CUDA C++ files (one per op family). Launch them as with
CuPy: with CuPy arrays a kernel runs on the GPU through CuPy's RawModule; with NumPy
arrays it runs on the CPU emulator (``kernels/emu``: g++ plus a CUDA emulation header,
threads as fibers), which proves the same CUDA code correct on machines without a GPU.

    import kernels
    mod = kernels.load("activation")                    # kernels/activation.cu
    relu = mod.get_function("relu_forward<float>")      # a `// @instantiate` template
    relu((blocks,), (256,), (x, y, n))                  # NumPy arrays -> emulator

    k = kernels.RawKernel(src, "scale")                 # users' own kernels alike
    k((g,), (b,), (x, np.float32(2.0), n), shared_mem=0)

On the emulator each argument is checked against the kernel's parameter types: a
Python float for a ``float`` parameter (CuPy would pass a double), an array of the
wrong dtype, a non-contiguous array or a wrong argument count is a TypeError. Launches
beyond CUDA's limits (48 KB of static + dynamic shared memory unless
``k.max_dynamic_shared_size_bytes`` opts in) raise LaunchError; a kernel that
deadlocks (spin-waits included), fails an assert or calls __trap raises LaunchError
naming the kernel, block and thread. With ``MPICNN_EMU_CHECK`` (or ``check=``) the
emulator is a debugger: memcheck reports the access past an argument or shared buffer
with its source line, synccheck a barrier not every thread of the block reaches,
racecheck two threads touching the same shared memory between barriers.

Environment:
  MPICNN_EMU_CHECK=memcheck,synccheck,racecheck  emulator checks (any subset)
  MPICNN_TRACE_KERNELS=1     count and time every launch; table on stderr at exit
  MPICNN_KERNEL_CACHE=DIR    emulator libraries (default ~/.cache/mpicnn/kernels)
  MPICNN_EMU_POISON_SHARED=1 fill dynamic shared memory with 0xff (NaN) bytes per block
  MPICNN_EMU_STACK_KB=N      fiber stack size per waiting thread (default 256)
  MPICNN_EMU_CXX=g++         compiler for the emulator
"""

from .errors import CompileError, KernelError, KernelNotFound, LaunchError, NvrtcUnavailable
from .loader import available, load
from .module import Kernel, RawKernel, RawModule
from .nvrtc import compile_ptx, nvrtc_available
from .trace import reset_trace, trace_table

__all__ = ["RawModule", "RawKernel", "Kernel", "load", "available", "compile_ptx",
           "nvrtc_available", "trace_table", "reset_trace", "KernelError", "CompileError",
           "LaunchError", "KernelNotFound", "NvrtcUnavailable"]
