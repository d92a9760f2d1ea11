"""GPU launches through CuPy's own RawModule.

CuPy is imported only here, on the first launch with CuPy arrays. A module is compiled
once per (source, options, name expressions, device) and kept for the process; CuPy
also caches the compiled binary on disk.
"""

import threading

from .errors import CompileError

_modules = {}    # (code, options, name_expressions, device) -> cupy.RawModule
_functions = {}  # (that key, kernel name) -> cupy.RawKernel
_lock = threading.Lock()


def is_device_array(x):
    return hasattr(x, "__cuda_array_interface__")


def function(code, options, name_expressions, name):
    import cupy
    key = (code, options, name_expressions, cupy.cuda.runtime.getDevice())
    with _lock:
        fn = _functions.get((key, name))
        if fn is None:
            module = _modules.get(key)
            if module is None:
                module = cupy.RawModule(code=code, options=options,
                                        name_expressions=list(name_expressions) or None)
                _modules[key] = module
            try:
                fn = module.get_function(name)
            except cupy.cuda.compiler.CompileException as e:
                raise CompileError(f"NVRTC could not compile the module of kernel {name!r}:\n{e}",
                                   log=str(e)) from e
            _functions[(key, name)] = fn
        return fn


def launch(code, options, name_expressions, name, grid, block, args, shared_mem, opt_in=0, tracer=None):
    """``opt_in``: the kernel's max_dynamic_shared_size_bytes (0: CUDA's default)."""
    fn = function(code, options, name_expressions, name)
    if opt_in and fn.max_dynamic_shared_size_bytes != opt_in:
        fn.max_dynamic_shared_size_bytes = opt_in
    if tracer is None:
        fn(grid, block, args, shared_mem=shared_mem)
        return
    import cupy
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    fn(grid, block, args, shared_mem=shared_mem)
    end.record()
    tracer.record_gpu(name, start, end)
