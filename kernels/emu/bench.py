"""Speed of the CPU emulator on the test suite's sample kernels.

    python -m kernels.emu.bench [tests/cuda_samples]

Prints the best of a few runs: a 1M-element ReLU (no barriers: threads run as a
plain loop), a 256^3 tiled SGEMM (two __syncthreads per tile), a 1M-element shuffle
reduction (warp shuffles, a barrier, atomics; one thread per element, then a
grid-stride launch) and the cost of one fiber switch.
"""

import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "cuda_samples"


def _best_ms(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) * 1e3)
    return best


def measure(samples=DEFAULT_SAMPLES, repeat=3):
    from .. import RawModule
    samples = Path(samples)
    rng = np.random.default_rng(0)
    n = 1 << 20
    x = rng.standard_normal(n, dtype=np.float32)
    y = np.empty_like(x)

    relu = RawModule(path=samples / "elementwise.cu").get_function("relu")
    relu_ms = _best_ms(lambda: relu((n // 256,), (256,), (x, y, np.int32(n))), repeat)

    size = 256
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), np.float32)
    sgemm = RawModule(path=samples / "sgemm_tiled.cu").get_function("sgemm_tiled")
    sgemm_ms = _best_ms(lambda: sgemm((size // 16, size // 16), (16, 16), (a, b, c, size, size, size)),
                        repeat)

    warp = RawModule(path=samples / "warp_reduce.cu")
    total = np.zeros(1, np.float32)
    reduce = warp.get_function("sum_reduce")
    reduce_ms = _best_ms(lambda: reduce((n // 256,), (256,), (x, total, n)), repeat)
    # The usual launch: a fixed grid, each thread summing many elements first.
    stride_ms = _best_ms(lambda: reduce((256,), (256,), (x, total, n)), repeat)
    switch_ns = warp.emulator().fiber_switch_ns(1_000_000)
    return {"relu_1m_ms": relu_ms, "sgemm_256_ms": sgemm_ms, "shuffle_reduce_1m_ms": reduce_ms,
            "shuffle_reduce_1m_gridstride_ms": stride_ms, "fiber_switch_ns": switch_ns}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    figures = measure(argv[0] if argv else DEFAULT_SAMPLES)
    print(f"1M-element ReLU            {figures['relu_1m_ms']:8.2f} ms")
    print(f"256^3 tiled SGEMM          {figures['sgemm_256_ms']:8.2f} ms")
    print(f"1M-element shuffle reduce  {figures['shuffle_reduce_1m_ms']:8.2f} ms  (1M threads)")
    print(f"  same, grid-stride        {figures['shuffle_reduce_1m_gridstride_ms']:8.2f} ms  "
          "(256 blocks of 256 threads)")
    print(f"fiber switch               {figures['fiber_switch_ns']:8.2f} ns")


if __name__ == "__main__":
    main()
