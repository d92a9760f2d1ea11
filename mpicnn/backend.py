"""The one place that picks the backend: which arrays hold tensors and who runs the ops.

    numpy  NumPy arrays; the NumPy/BLAS code of ``mpicnn.ops`` (the reference)
    emu    NumPy arrays; the CUDA kernels of ``kernels/*.cu`` on the CPU emulator
    cupy   CuPy arrays on a GPU; the same kernels through CuPy, GEMMs on cuBLAS
    auto   cupy when ``cupy.cuda.runtime.getDeviceCount() > 0`` succeeds, else numpy

``use(name, local_rank=0)`` selects one for the whole process (each MPI rank calls it
once, before building the model); with cupy the rank takes GPU
``local_rank % device_count``, so pass the node-local rank
(``COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()``).

Ops dispatch with one decorator: ``@kernel_version("pool")`` on a NumPy op makes it
call the function of the same name in ``mpicnn.ops.cuda.pool`` whenever the backend
runs kernels (emu or cupy). With the numpy backend the cost is one attribute test
per call. ``op.numpy`` is always the NumPy reference.

Models are built on the host (NumPy) and moved with ``to_backend(model, optimizer)``;
input batches go through ``asarray`` and anything MPI, HDF5 or printing needs comes
back with ``to_host``. This module imports no CuPy unless the cupy backend is used or
a CuPy array is met.
"""
import contextlib
import functools
import importlib

import numpy as np

__all__ = ["NAMES", "use", "current", "runs_kernels", "xp", "gpu_count", "using",
           "array_module", "is_array", "asarray", "to_host", "to_backend", "synchronize",
           "kernel_version"]

NAMES = ("numpy", "emu", "cupy", "auto")


class _State:
    name = "numpy"
    kernels = False  # True for emu and cupy: decorated ops call their kernel version
    xp = np
    device = None


_state = _State()


def _cupy():
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise RuntimeError("the cupy backend needs CuPy: pip install cupy-cuda12x "
                           f"(import failed: {e})") from e
    return cupy


def gpu_count():
    """Number of visible CUDA devices; 0 when CuPy is missing or no driver answers."""
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # ImportError, CUDARuntimeError (no driver), ...
        return 0


def use(name, local_rank=0):
    """Select backend ``name`` (numpy, emu, cupy or auto) for this process; returns the
    name actually chosen (auto resolves to cupy or numpy)."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    if name == "auto":
        name = "cupy" if gpu_count() > 0 else "numpy"
    if name == "cupy":
        cupy = _cupy()
        count = gpu_count()
        if count < 1:
            raise RuntimeError("backend 'cupy' needs a visible CUDA GPU; none was found "
                               "(check CUDA_VISIBLE_DEVICES and the driver), or use --backend numpy|emu")
        if not isinstance(local_rank, (int, np.integer)) or local_rank < 0:
            raise ValueError(f"local_rank must be a non-negative int, got {local_rank!r}")
        device = cupy.cuda.Device(int(local_rank) % count)
        device.use()
        _state.xp, _state.device = cupy, device.id
    else:
        if name == "emu":
            importlib.import_module("kernels")  # fail here, not at the first op, if it is broken
        _state.xp, _state.device = np, None
    _state.name = name
    _state.kernels = name in ("emu", "cupy")
    return name


def current():
    """Name of the selected backend: numpy, emu or cupy."""
    return _state.name


def runs_kernels():
    """True when ops run the CUDA kernels (emu or cupy)."""
    return _state.kernels


def xp():
    """The array module of the current backend (numpy or cupy)."""
    return _state.xp


@contextlib.contextmanager
def using(name, local_rank=0):
    """``with using("emu"):`` run a block on another backend, then restore the previous one."""
    saved = (_state.name, _state.kernels, _state.xp, _state.device)
    try:
        use(name, local_rank)
        yield _state.name
    finally:
        _state.name, _state.kernels, _state.xp, _state.device = saved
        if _state.device is not None:
            _cupy().cuda.Device(_state.device).use()


def _is_cupy(x):
    return type(x).__module__.partition(".")[0] == "cupy"


def array_module(x):
    """numpy or cupy, whichever ``x`` belongs to (as ``cupy.get_array_module``)."""
    if isinstance(x, np.ndarray) or not _is_cupy(x):
        return np
    return _cupy()


def is_array(x):
    """True for a NumPy or CuPy ndarray."""
    return isinstance(x, np.ndarray) or (_is_cupy(x) and hasattr(x, "ndim") and hasattr(x, "dtype"))


def asarray(x, dtype=None):
    """``x`` as an array of the current backend (copied to the GPU for cupy)."""
    return _state.xp.asarray(x, dtype=dtype)


def to_host(x):
    """``x`` as a NumPy array (copied from the GPU when it is a CuPy array)."""
    if isinstance(x, np.ndarray) or not _is_cupy(x):
        return np.asarray(x)
    return x.get()


def synchronize():
    """Wait for the GPU's queued work (no-op without cupy); call before timing or MPI."""
    if _state.name == "cupy":
        _cupy().cuda.get_current_stream().synchronize()


def to_backend(model, optimizer=None):
    """Move ``model``'s parameters (data and grad), buffers and ``optimizer``'s state to
    the current backend's arrays, in place; returns ``model``. Call it before
    anything keeps references to those arrays (gradient buckets, optimizers made later
    are fine: they allocate like the parameters)."""
    mod = _state.xp
    for p in model.parameters():
        p.data = mod.asarray(p.data)
        p.grad = mod.asarray(p.grad)
    for m in model.modules():
        for name in m.buffer_names:
            buf = getattr(m, name, None)
            if is_array(buf) and buf.ndim > 0:  # 0-d counters stay host Python-side state
                setattr(m, name, mod.asarray(buf))
    if optimizer is not None:
        for arrays in optimizer.state.values():
            for key, value in arrays.items():
                arrays[key] = mod.asarray(value)
    return model


def kernel_version(family, name=None):
    """Decorator: the NumPy op it wraps calls ``mpicnn.ops.cuda.<family>.<name>`` (the
    op's own name by default) with the same arguments whenever the backend runs
    kernels. The kernel function must take the same arguments and return the same
    values. Methods work too (the kernel version then receives ``self`` first)."""
    def decorate(numpy_op):
        kernel_name = name or numpy_op.__name__
        resolved = []

        @functools.wraps(numpy_op)
        def op(*args, **kwargs):
            if _state.kernels:
                if not resolved:
                    module = importlib.import_module(f"{__package__}.ops.cuda.{family}")
                    resolved.append(getattr(module, kernel_name))
                return resolved[0](*args, **kwargs)
            return numpy_op(*args, **kwargs)

        op.numpy = numpy_op
        op.kernel = (family, kernel_name)
        return op
    return decorate
