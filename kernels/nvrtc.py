"""Compile CUDA sources to PTX with NVRTC, without a GPU.

NVRTC comes from the pip package ``nvidia-cuda-nvrtc-cu12`` and is driven through
``cupy.cuda.nvrtc`` (package ``cupy-cuda12x``); neither needs a GPU or a driver. The
test suite uses it to prove that every shipped ``.cu`` compiles for sm_70, sm_80 and
sm_90, the architectures the GPU backend supports.
"""

import re
from pathlib import Path

from .errors import CompileError, NvrtcUnavailable

_INSTALL = "pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12"


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # ImportError, or the shared library is missing
        raise NvrtcUnavailable(f"NVRTC is not available ({e}); {_INSTALL}") from None
    return nvrtc


def nvrtc_available():
    try:
        _nvrtc()
        return True
    except NvrtcUnavailable:
        return False


def nvrtc_version():
    return _nvrtc().getVersion()


def _arch(arch):
    m = re.fullmatch(r"(?:sm_|compute_)?(\d+)", str(arch))
    if not m:
        raise ValueError(f"arch should look like 'sm_80', got {arch!r}")
    return f"compute_{m.group(1)}"


def compile_ptx(code=None, *, path=None, arch="sm_80", options=(), name_expressions=()):
    """PTX text of a CUDA source (``code`` string or ``path`` to a ``.cu``) for ``arch``.

    Raises CompileError with NVRTC's log (line numbers of the source) on failure.
    """
    if (code is None) == (path is None):
        raise TypeError("compile_ptx takes exactly one of code and path=")
    nvrtc = _nvrtc()
    name = "<source>"
    opts = [f"--gpu-architecture={_arch(arch)}", *options]
    if path is not None:
        path = Path(path)
        code, name = path.read_text(), str(path)
        opts.append(f"-I{path.resolve().parent}")
    prog = nvrtc.createProgram(code, name, [], [])
    try:
        for expr in name_expressions:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as e:
            log = nvrtc.getProgramLog(prog)
            raise CompileError(f"NVRTC could not compile {name} for {arch}:\n{log.strip() or e}",
                               log=log) from None
        ptx = nvrtc.getPTX(prog)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(prog)
