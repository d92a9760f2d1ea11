"""Exceptions raised by the kernels package."""


class KernelError(RuntimeError):
    """Base class of every error the kernels package raises on its own."""


class CompileError(KernelError):
    """A kernel source did not compile (g++ for the emulator, or NVRTC).

    ``str(err)`` is the relevant part of the compiler's message, with line numbers
    of the user's ``.cu`` file; ``err.log`` is the compiler's full output.
    """

    def __init__(self, message, log=""):
        super().__init__(message)
        self.log = log


class LaunchError(KernelError):
    """A launch was refused (grid, block or shared memory beyond CUDA's limits) or the
    kernel failed on the emulator (deadlock, failed assert, __trap, exited lanes)."""


class KernelNotFound(KernelError, LookupError):
    """No kernel file or kernel of that name; the message lists what exists."""


class NvrtcUnavailable(KernelError):
    """NVRTC could not be loaded (install ``cupy-cuda12x`` and ``nvidia-cuda-nvrtc-cu12``)."""
