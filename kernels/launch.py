"""Launch configuration: grid and block as CUDA sees them, and CUDA's limits.

The limits are those of current NVIDIA GPUs (compute capability 7.0 to 9.0): a
launch beyond them fails on a GPU, so it fails here too, before any work is done,
with a message naming the kernel and the limit.
"""

import numbers

from .errors import LaunchError

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_DYNAMIC_SHARED = 227 * 1024  # bytes, with opt-in on sm_80 and sm_90
DEFAULT_SHARED = 48 * 1024       # static + dynamic shared memory of a block without opt-in


def dim3(value, what, kernel):
    """``int`` or a tuple of 1 to 3 ints -> ``(x, y, z)``."""
    items = (value,) if isinstance(value, numbers.Integral) else tuple(value) \
        if isinstance(value, (tuple, list)) else None
    if not items or len(items) > 3 or not all(isinstance(v, numbers.Integral) for v in items):
        raise TypeError(f"kernel {kernel!r}: {what} must be an int or a tuple of 1 to 3 ints, "
                        f"got {value!r}")
    return tuple(int(v) for v in items) + (1,) * (3 - len(items))


def shared_limit(opt_in):
    """Bytes of static + dynamic shared memory a block may have, given the kernel's
    ``max_dynamic_shared_size_bytes``."""
    return MAX_DYNAMIC_SHARED if opt_in > DEFAULT_SHARED else DEFAULT_SHARED


def check(kernel, grid, block, shared_mem, opt_in=0):
    """Raises LaunchError when CUDA would refuse this launch (the static shared memory
    is checked by the emulator, which knows it)."""
    for name, dims, limits in (("grid", grid, MAX_GRID), ("block", block, MAX_BLOCK)):
        for axis, d, lim in zip("xyz", dims, limits):
            if not 1 <= d <= lim:
                raise LaunchError(f"kernel {kernel!r}: {name} {dims} has {axis} = {d}; "
                                  f"CUDA allows 1 to {lim}")
    threads = block[0] * block[1] * block[2]
    if threads > MAX_THREADS_PER_BLOCK:
        raise LaunchError(f"kernel {kernel!r}: block {block} has {threads} threads; "
                          f"CUDA allows at most {MAX_THREADS_PER_BLOCK} per block")
    if not isinstance(shared_mem, numbers.Integral) or not 0 <= shared_mem <= MAX_DYNAMIC_SHARED:
        raise LaunchError(f"kernel {kernel!r}: shared_mem={shared_mem!r} bytes; dynamic shared "
                          f"memory is limited to {MAX_DYNAMIC_SHARED} bytes (227 KiB)")
    if not isinstance(opt_in, numbers.Integral) or not 0 <= opt_in <= MAX_DYNAMIC_SHARED:
        raise LaunchError(f"kernel {kernel!r}: max_dynamic_shared_size_bytes={opt_in!r}; CUDA allows 0 to "
                          f"{MAX_DYNAMIC_SHARED}")
    if shared_mem > DEFAULT_SHARED and shared_mem > opt_in:
        raise LaunchError(f"kernel {kernel!r}: shared_mem={shared_mem} bytes is over the {DEFAULT_SHARED} "
                          "bytes (48 KB) a block gets without an opt-in; set "
                          f"kernel.max_dynamic_shared_size_bytes = {shared_mem} first (as "
                          "cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, ...) does)")
