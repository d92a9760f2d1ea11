"""The emulator as a kernel debugger: MPICNN_EMU_CHECK / check= (memcheck, synccheck),
a GPU's shared-memory limits, array arguments refused before launch, and atomics and
volatile that spin-wait as on a GPU.

The buggy kernels are tests/cuda_samples/buggy.cu; each fault must be a LaunchError
naming the kernel, block, thread, the argument or shared buffer and the source line,
and the process must go on working afterwards.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels.loader import declared_instantiations

SAMPLES = Path(__file__).resolve().parent / "cuda_samples"
BUGGY = SAMPLES / "buggy.cu"
REPO = Path(__file__).resolve().parents[1]
CHECKS = "memcheck,synccheck"
rng = np.random.default_rng(7)


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kernel-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPICNN_KERNEL_CACHE", str(cache))
        for var in ("MPICNN_EMU_CHECK", "MPICNN_EMU_POISON_SHARED", "MPICNN_TRACE_KERNELS"):
            mp.delenv(var, raising=False)
        yield cache


@pytest.fixture(scope="module")
def buggy(kernel_cache):
    return kernels.RawModule(path=BUGGY, check=CHECKS)


def sample(name, check=CHECKS):
    return kernels.RawModule(path=SAMPLES / f"{name}.cu", check=check)


def survives():
    """More work after a failed launch gives the right answer."""
    x = np.arange(64, dtype=np.float32)
    kernels.RawModule(path=BUGGY, check=CHECKS).get_function("fill_ramp")((1,), (64,), (x, np.float32(3)))
    np.testing.assert_array_equal(x, 3 * np.arange(64, dtype=np.float32))


# ---- memcheck ----------------------------------------------------------------------

def test_out_of_bounds_global_write(buggy):
    x = np.zeros(100, np.float32)
    with pytest.raises(kernels.LaunchError) as info:
        buggy.get_function("fill_ramp")((128,), (128,), (x, np.float32(2)))
    assert str(info.value) == (
        "kernel 'fill_ramp', block (0,0,0): thread (100,0,0) [warp 3 lane 4]: memcheck: invalid write of 4 "
        "bytes, 0 bytes past the end of args[0] (float*; a float32 array of 100 elements, 400 bytes) "
        f"at {BUGGY}:16")
    np.testing.assert_array_equal(x, 2 * np.arange(100, dtype=np.float32))  # what ran before is kept
    survives()


def test_out_of_bounds_global_read(buggy):
    x = rng.standard_normal(300).astype(np.float32)
    y = np.zeros_like(x)
    with pytest.raises(kernels.LaunchError, match=(
            r"^kernel 'shift_read', block \(2,0,0\): thread \(43,0,0\) \[warp 1 lane 11\]: memcheck: invalid read "
            r"of 4 bytes, 0 bytes past the end of args\[0\] \(float\*; a float32 array of 300 elements, 1200 "
            rf"bytes\) at {BUGGY}:23$")):
        buggy.get_function("shift_read")((3,), (128,), (x, y, np.int32(300)))
    survives()


def test_out_of_bounds_static_shared(buggy):
    x = np.zeros(64, np.float32)
    with pytest.raises(kernels.LaunchError, match=(
            r"^kernel 'tile_reverse', block \(0,0,0\): thread \(32,0,0\) \[warp 1 lane 0\]: memcheck: invalid "
            r"write of 4 bytes, 0 bytes past the end of __shared__ tile \(128 bytes, declared at "
            rf"{BUGGY}:28\) at {BUGGY}:29$")):
        buggy.get_function("tile_reverse")((1,), (64,), (x,))
    x = rng.standard_normal(32).astype(np.float32)
    expect = x[::-1].copy()
    buggy.get_function("tile_reverse")((1,), (32,), (x,))  # the launch it was written for
    np.testing.assert_array_equal(x, expect)


@pytest.mark.parametrize("shared_mem,thread,line", [(64 * 4, 0, 40), (0, 0, 38), (64 * 4 + 4, 1, 40)])
def test_dynamic_shared_memory_too_small(buggy, shared_mem, thread, line):
    x = rng.standard_normal(200).astype(np.float32)
    y = np.zeros_like(x)
    with pytest.raises(kernels.LaunchError, match=(
            rf"^kernel 'window_sum', block \(0,0,0\): thread \({thread},0,0\) .*: memcheck: invalid write of 4 "
            r"bytes, 0 bytes past the end of dynamic shared memory \(extern __shared__ window; the launch gave "
            rf"shared_mem={shared_mem} bytes\) at {BUGGY}:{line}$")):
        buggy.get_function("window_sum")((4,), (64,), (x, y, np.int32(200)), shared_mem=shared_mem)


def test_dynamic_shared_memory_large_enough_is_not_reported(buggy):
    x = rng.standard_normal(200).astype(np.float32)
    y = np.zeros_like(x)
    buggy.get_function("window_sum")((4,), (64,), (x, y, np.int32(200)), shared_mem=66 * 4)
    padded = np.concatenate([x, np.zeros(58, np.float32)])
    expect = padded[:-2].reshape(4, 64) + padded[1:-1].reshape(4, 64) + padded[2:].reshape(4, 64)
    np.testing.assert_allclose(y, expect.ravel()[:200], rtol=1e-6)


def test_in_place_arguments_stay_aliased_under_memcheck(kernel_cache):
    src = 'extern "C" __global__ void twice(const float* x, float* y) { y[threadIdx.x] = 2 * x[threadIdx.x]; }'
    k = kernels.RawKernel(src, "twice", check="memcheck")
    x = np.arange(8, dtype=np.float32)
    k((1,), (8,), (x, x))
    np.testing.assert_array_equal(x, 2 * np.arange(8))
    z = np.arange(9, dtype=np.float32)
    k((1,), (8,), (z[1:], z[:-1]))  # overlapping views: y[i] = 2 x[i + 1], in thread order
    np.testing.assert_array_equal(z, [2, 4, 6, 8, 10, 12, 14, 16, 8])


def test_memcheck_from_the_environment_in_a_fresh_process(kernel_cache):
    """The issue's report: 16384 threads writing a 100-element array. Python lives on."""
    script = textwrap.dedent(f"""
        import numpy as np, kernels
        k = kernels.RawModule(path={str(BUGGY)!r}).get_function("fill_ramp")
        x = np.zeros(100, np.float32)
        try:
            k((128,), (128,), (x, np.float32(1)))
        except kernels.LaunchError as e:
            print("LaunchError:", e)
        y = np.zeros(64, np.float32)
        k((1,), (64,), (y, np.float32(1)))
        print("after:", int(y.sum()))
    """)
    env = dict(os.environ, MPICNN_KERNEL_CACHE=str(kernel_cache), MPICNN_EMU_CHECK="memcheck")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "LaunchError: kernel 'fill_ramp', block (0,0,0): thread (100,0,0)" in proc.stdout
    assert f"past the end of args[0] (float*; a float32 array of 100 elements, 400 bytes) at {BUGGY}:16" \
        in proc.stdout
    assert "after: 2016" in proc.stdout


def test_null_pointer_is_reported(kernel_cache):
    src = 'extern "C" __global__ void put(float* x) { x[threadIdx.x] = 1.0f; }'
    with pytest.raises(kernels.LaunchError, match=r"thread \(0,0,0\).*invalid write of 4 bytes at address 0x0 "
                                                  r"at <source>:1"):
        kernels.RawKernel(src, "put", check="memcheck")((1,), (4,), (None,))


# ---- synccheck ---------------------------------------------------------------------

def test_barrier_in_a_divergent_branch(buggy):
    x = np.zeros(64, np.float32)
    with pytest.raises(kernels.LaunchError, match=(
            r"^kernel 'half_barrier', block \(0,0,0\): synccheck: thread \(32,0,0\) \[warp 1 lane 0\] exited "
            r"while thread \(0,0,0\) \[warp 0 lane 0\] waits at __syncthreads\(\) at "
            rf"{BUGGY}:50; every thread of a block must reach each barrier")):
        buggy.get_function("half_barrier")((1,), (64,), (x,))
    survives()


def test_divergent_barriers(buggy):
    with pytest.raises(kernels.LaunchError, match=(
            r"'two_barriers', block \(0,0,0\): synccheck: divergent barriers: thread \(1,0,0\) .* reaches "
            rf"__syncthreads\(\) at {BUGGY}:62 while thread \(0,0,0\) .* waits at the one at {BUGGY}:59")):
        buggy.get_function("two_barriers")((1,), (32,), (np.zeros(32, np.float32),))


def test_early_return_before_a_barrier(kernel_cache):
    k = sample("barriers").get_function("shift_left")
    x = rng.standard_normal(1024).astype(np.float32)
    y = np.zeros_like(x)
    k((4,), (256,), (x, y, np.int32(1024)))  # whole blocks: every thread reaches the barrier...
    with pytest.raises(kernels.LaunchError, match=r"'shift_left', block \(3,0,0\): synccheck: thread \(232,0,0\) "
                                                  r".*exited while thread \(0,0,0\) .*waits at __syncthreads\(\) "
                                                  r"at .*barriers.cu:18"):
        k((4,), (256,), (x, y, np.int32(1000)))  # a ragged last block: threads past n return first


def test_without_synccheck_exited_threads_count_as_arrived(kernel_cache):
    x = np.zeros(64, np.float32)
    kernels.RawModule(path=BUGGY, check="").get_function("half_barrier")((1,), (64,), (x,))
    np.testing.assert_array_equal(x, np.r_[np.full(32, 2.0), np.zeros(32)])


# ---- racecheck ---------------------------------------------------------------------

def test_shared_memory_read_without_a_barrier_is_a_race(kernel_cache):
    k = kernels.RawModule(path=BUGGY, check="racecheck").get_function("rotate")
    x = rng.standard_normal(512).astype(np.float32)
    with pytest.raises(kernels.LaunchError, match=(
            r"^kernel 'rotate', block \(0,0,0\): thread \(1,0,0\) \[warp 0 lane 1\]: racecheck: write-after-read "
            rf"hazard at byte 4 of __shared__ tile \(1024 bytes, declared at {BUGGY}:74\): this thread writes it at "
            rf"{BUGGY}:75 and thread \(0,0,0\) \[warp 0 lane 0\] read it at {BUGGY}:77, with no __syncthreads\(\)")):
        k((2,), (256,), (x, np.int32(0)))
    expect = np.roll(x.reshape(2, 256), -1, axis=1).ravel()
    k((2,), (256,), (x, np.int32(1)))  # with the barriers: no report, and the right answer
    np.testing.assert_array_equal(x, expect)
    survives()


def test_every_thread_adding_into_one_shared_value_is_a_race(kernel_cache):
    with pytest.raises(kernels.LaunchError, match=(
            r"thread \(0,0,0\) .*: racecheck: read-after-write hazard at byte 0 of __shared__ sum \(4 bytes, "
            rf"declared at {BUGGY}:84\): this thread reads it at {BUGGY}:87 and thread \(63,0,0\) \[warp 1 lane 31\] "
            rf"wrote it at {BUGGY}:87")):
        kernels.RawModule(path=BUGGY, check=CHECKS + ",racecheck").get_function("block_total")(
            (1,), (64,), (np.ones(64, np.float32), np.zeros(1, np.float32)))


def test_syncwarp_orders_the_lanes_of_a_warp(kernel_cache):
    k = kernels.RawModule(path=BUGGY, check="racecheck").get_function("lane_swap")
    x = np.arange(32, dtype=np.int32)
    k((1,), (32,), (x, np.int32(1)))
    np.testing.assert_array_equal(x, np.arange(32) ^ 1)
    with pytest.raises(kernels.LaunchError,
                       match=r"thread \(1,0,0\) .*write-after-read hazard at byte 4 of __shared__ lanes"):
        k((1,), (32,), (x, np.int32(0)))


# ---- no false reports on the sample kernels ----------------------------------------

@pytest.mark.parametrize("checks", [CHECKS, CHECKS + ",racecheck"])
def test_sample_kernels_pass_the_checks(kernel_cache, checks):
    a = rng.standard_normal((37, 29)).astype(np.float32)
    b = rng.standard_normal((29, 50)).astype(np.float32)
    c = np.zeros((37, 50), np.float32)
    sample("sgemm_tiled", checks).get_function("sgemm_tiled")((4, 3), (16, 16), (a, b, c, 37, 50, 29))
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    x = rng.standard_normal(10_007).astype(np.float32)
    total = np.zeros(1, np.float32)
    sample("warp_reduce", checks).get_function("sum_reduce")((40,), (256,), (x, total, np.int32(x.size)))
    assert total[0] == pytest.approx(x.astype(np.float64).sum(), rel=1e-4, abs=1e-2)
    hist = np.zeros(37, np.float32)
    sample("atomics", checks).get_function("histogram")((13,), (128,),
                                                        (x, x.size, np.float32(-2), np.float32(2), hist, 37))
    assert hist.sum() == x.size
    d = rng.standard_normal(1000)
    out = np.zeros(8)
    sample("dynamic_smem", checks).get_function("block_sum_double")((8,), (128,), (d, out, 1000), shared_mem=128 * 8)
    np.testing.assert_allclose(out, np.pad(d, (0, 24)).reshape(8, 128).sum(1))
    mod = sample("templates", checks)
    mod = kernels.RawModule(path=SAMPLES / "templates.cu", name_expressions=("block_sum<double, 128>",),
                            check=checks)
    mod.get_function("block_sum<double, 128>")((8,), (128,), (d, out, 1000))
    np.testing.assert_allclose(out, np.pad(d, (0, 24)).reshape(8, 128).sum(1))
    out3 = np.full((3, 5, 10), -1, np.int32)
    sample("index3d", checks).get_function("fill_index3d")((3, 2, 2), (4, 3, 2), (out3, 10, 5, 3))
    assert (out3 >= 0).all()
    flags = rng.integers(0, 2, 128).astype(np.int32)
    outs = [np.zeros(4, t) for t in (np.uint32, np.int32, np.int32, np.int32)]
    sample("warp_reduce", checks).get_function("votes")((2,), (64,), (flags, *outs))
    assert outs[3].tolist() == flags.reshape(4, 32).sum(1).tolist()


# ---- limits and argument checks (default mode) -------------------------------------

def test_80_kb_of_static_shared_memory_is_refused(kernel_cache):
    src = textwrap.dedent("""
        extern "C" __global__ void big(float* x)
        {
            __shared__ float huge[20480];
            huge[threadIdx.x] = x[threadIdx.x];
            __syncthreads();
            x[threadIdx.x] = huge[threadIdx.x];
        }
    """)
    k = kernels.RawKernel(src, "big")
    with pytest.raises(kernels.LaunchError, match=r"kernel 'big'.*81920 bytes of static __shared__ memory; a GPU "
                                                  r"allows at most 49152 bytes \(48 KB\).*__shared__ huge at <source>:4"):
        k((1,), (32,), (np.zeros(32, np.float32),))
    with pytest.raises(kernels.LaunchError, match=r"^kernel 'big': 81920 bytes of static __shared__ memory"):
        k((1,), (32,), (np.zeros(32, np.float32),))  # now known before the launch


def test_static_plus_dynamic_shared_memory_over_48_kb_needs_an_opt_in(kernel_cache):
    src = textwrap.dedent("""
        extern "C" __global__ void both(float* x)
        {
            __shared__ float fixed[8192];
            extern __shared__ float more[];
            fixed[threadIdx.x] = x[threadIdx.x];
            more[threadIdx.x] = fixed[threadIdx.x];
            __syncthreads();
            x[threadIdx.x] = more[threadIdx.x] + 1.0f;
        }
    """)
    k = kernels.RawKernel(src, "both")
    x = np.zeros(32, np.float32)
    over = r"32768 bytes of static __shared__ memory \+ shared_mem=16388 bytes is over the 49152 bytes.*" \
        r"max_dynamic_shared_size_bytes"
    with pytest.raises(kernels.LaunchError, match=r"^kernel 'both', block \(0,0,0\): " + over):
        k((1,), (32,), (x,), shared_mem=16 * 1024 + 4)  # found as the kernel runs, the first time
    with pytest.raises(kernels.LaunchError, match=r"^kernel 'both': " + over):
        k((1,), (32,), (x,), shared_mem=16 * 1024 + 4)  # then before it runs
    x[:] = 0
    k((1,), (32,), (x,), shared_mem=16 * 1024)  # 32 KB + 16 KB: allowed
    np.testing.assert_array_equal(x, 1)
    with pytest.raises(kernels.LaunchError, match=r"shared_mem=65536 bytes is over the 49152 bytes \(48 KB\).*"
                                                  r"kernel.max_dynamic_shared_size_bytes = 65536"):
        k((1,), (32,), (x,), shared_mem=64 * 1024)
    k.max_dynamic_shared_size_bytes = 64 * 1024
    k((1,), (32,), (x,), shared_mem=64 * 1024)
    np.testing.assert_array_equal(x, 2)
    k.max_dynamic_shared_size_bytes = 200 * 1024
    with pytest.raises(kernels.LaunchError, match=r"32768 bytes of static __shared__ memory \+ "
                                                  r"shared_mem=204800 bytes is over the 232448 bytes"):
        k((1,), (32,), (x,), shared_mem=200 * 1024)


@pytest.mark.parametrize("make,what", [
    (lambda a: a[:, ::2], "a strided view"),
    (lambda a: a.T, r"Fortran-ordered \(a transpose\?\)"),
])
def test_non_contiguous_arrays_are_refused(kernel_cache, make, what):
    k = kernels.RawModule(path=SAMPLES / "elementwise.cu").get_function("relu")
    a = rng.standard_normal((16, 16)).astype(np.float32)
    y = np.zeros(128, np.float32)
    with pytest.raises(TypeError, match=rf"kernel 'relu': args\[0\] should be float\* \(a C-contiguous array\), got "
                                        rf"a float32 array of shape .* that is {what}.*ascontiguousarray"):
        k((1,), (128,), (make(a)[:, :8] if what == "a strided view" else make(a), y, np.int32(128)))
    assert (y == 0).all()


def test_unknown_check_is_refused(kernel_cache, monkeypatch):
    with pytest.raises(ValueError, match=r"check=: unknown check 'memchek'; choose from memcheck, synccheck, "
                                         r"racecheck, comma-separated"):
        kernels.RawModule(code="", check="memchek")
    monkeypatch.setenv("MPICNN_EMU_CHECK", "initcheck")
    k = kernels.RawModule(path=SAMPLES / "elementwise.cu").get_function("relu")
    with pytest.raises(ValueError, match=r"MPICNN_EMU_CHECK: unknown check 'initcheck'"):
        k((1,), (32,), (np.zeros(32, np.float32), np.zeros(32, np.float32), np.int32(32)))


# ---- atomics and volatile ----------------------------------------------------------

@pytest.mark.parametrize("check", ["", "memcheck", "racecheck"])
def test_spin_wait_on_a_flag_another_thread_sets(kernel_cache, check):
    x = rng.integers(1, 1000, 5).astype(np.int32)
    flags, out = np.zeros(5, np.int32), np.zeros(5, np.int32)
    sample("spin", check).get_function("handoff")((5,), (64,), (x, flags, out))
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("check", ["", "memcheck", "racecheck"])
def test_volatile_spin_wait_on_a_flag_another_thread_sets(kernel_cache, check):
    """A plain volatile load in a loop: memcheck sees the repeated load, the default mode's
    watchdog the thread that loops without changing a register; either way the thread
    yields to the one that sets the flag, as on a GPU."""
    x = rng.integers(1, 1000, 5).astype(np.int32)
    flags, out = np.zeros(5, np.int32), np.zeros(5, np.int32)
    sample("spin", check).get_function("handoff_volatile")((5,), (64,), (x, flags, out))
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("check", ["", "memcheck"])
def test_volatile_spin_wait_on_a_later_block_is_a_deadlock(kernel_cache, check):
    k = kernels.RawModule(path=SAMPLES / "nvidia_style.cu", check=check).get_function("chained_offsets")
    counts = rng.integers(0, 9, 6).astype(np.int32)
    offsets, flags = np.zeros(6, np.int32), np.zeros(6, np.int32)
    with pytest.raises(kernels.LaunchError, match=(
            r"^kernel 'chained_offsets', block \(0,0,0\): deadlock in a spin-wait: thread \(0,0,0\) \[warp 0 lane 0\] "
            r"(loops on memory without changing anything \(a spin on a volatile or plain load, seen by the watchdog\)|"
            r"repeats atomics that change nothing \(the last at byte 4 of args\[2\]\)) and no thread of the block can "
            r"change that \(1 spin, 0 wait at __syncthreads, 31 exited\); blocks run one after another")):
        k((6,), (32,), (counts, offsets, flags, np.int32(1)))  # block b waits for block b + 1
    flags[:] = 0
    k((6,), (32,), (counts, offsets, flags, np.int32(0)))  # for block b - 1: the chain the emulator runs
    np.testing.assert_array_equal(offsets, np.cumsum(counts) - counts)


def test_a_long_loop_without_runtime_calls_is_not_a_spin(kernel_cache):
    """One thread iterating ~0.3 s on a float in SSE registers while its block's other
    threads have exited: the watchdog looks at it many times and must leave it be."""
    src = textwrap.dedent("""
        extern "C" __global__ void grow(double* x, double limit)
        {
            if (threadIdx.x != 0) return;
            double v = x[0];
            while (v < limit) v = v * 1.000000001;
            x[0] = v;
        }
    """)
    x = np.ones(1)
    kernels.RawKernel(src, "grow")((1,), (32,), (x, 1.3))
    assert 1.3 <= x[0] < 1.3 * (1 + 2e-9)


def test_spin_wait_on_a_later_block_is_a_deadlock(kernel_cache):
    k = sample("spin", "").get_function("wait_for_block")
    flags = np.zeros(6, np.int32)
    k((6,), (32,), (flags, np.int32(0)))  # each block waits for the one before: they run in order
    assert (flags == 1).all()
    flags = np.zeros(6, np.int32)
    with pytest.raises(kernels.LaunchError, match=(
            r"'wait_for_block', block \(0,0,0\): deadlock in a spin-wait: thread \(0,0,0\) .* repeats atomics that "
            r"change nothing \(the last at byte 4 of args\[0\]\).*blocks run one after another")):
        k((6,), (32,), (flags, np.int32(1)))


def test_spin_lock_with_atomic_cas(kernel_cache):
    x = rng.integers(0, 100, 256).astype(np.int32)
    lock, total = np.zeros(1, np.int32), np.zeros(1, np.int32)
    sample("spin", CHECKS).get_function("lock_sum")((4,), (64,), (x, lock, total))
    assert total[0] == x.sum() and lock[0] == 0


def test_cooperative_groups_reduce(kernel_cache):
    src = textwrap.dedent("""
        #include <cooperative_groups.h>
        #include <cooperative_groups/reduce.h>
        namespace cg = cooperative_groups;
        extern "C" __global__ void tile_stats(const int* x, int* sums, int* maxima)
        {
            cg::thread_block block = cg::this_thread_block();
            cg::thread_block_tile<32> tile = cg::tiled_partition<32>(block);
            int v = x[block.thread_rank()];
            int s = cg::reduce(tile, v, cg::plus<int>());
            int m = cg::reduce(tile, v, cg::greater<int>());
            if (tile.thread_rank() == 0) {
                sums[tile.meta_group_rank()] = s;
                maxima[tile.meta_group_rank()] = m;
            }
        }
    """)
    x = rng.integers(-500, 500, 128).astype(np.int32)
    sums, maxima = np.zeros(4, np.int32), np.zeros(4, np.int32)
    kernels.RawKernel(src, "tile_stats", check=CHECKS)((1,), (128,), (x, sums, maxima))
    np.testing.assert_array_equal(sums, x.reshape(4, 32).sum(1))
    np.testing.assert_array_equal(maxima, x.reshape(4, 32).max(1))


# ---- code written as NVIDIA's samples write it -------------------------------------

@pytest.mark.parametrize("check", ["", CHECKS, "racecheck"])
def test_nvidia_style_kernels(kernel_cache, check):
    """SharedMemory<T> with extern __shared__ in a template struct, template block sizes,
    cg::reduce, `static __shared__` in a __device__ function, threadFenceReduction and a
    chained scan on volatile flags: right results, and no report under memcheck,synccheck."""
    mod = kernels.RawModule(path=SAMPLES / "nvidia_style.cu", check=check,
                            name_expressions=declared_instantiations((SAMPLES / "nvidia_style.cu").read_text()))
    cg = kernels.RawModule(path=SAMPLES / "cg" / "cg_style.cu", check=check,
                           name_expressions=("reduce6_cg<float, 256, true>", "cg_block_sum<double>"))
    x = rng.standard_normal(4096).astype(np.float32)
    partial = np.zeros(8, np.float32)
    for reduce6 in (mod.get_function("reduce6<float, 256, true>"), cg.get_function("reduce6_cg<float, 256, true>")):
        partial[:] = 0
        reduce6((8,), (256,), (x, partial, np.uint32(x.size)), shared_mem=256 * 4)
        assert partial.sum() == pytest.approx(x.astype(np.float64).sum(), rel=1e-5, abs=1e-3)
    d = rng.standard_normal(1000)
    sums = np.zeros(5)
    mod.get_function("reduce6<double, 128, false>")((5,), (128,), (d, sums, np.uint32(d.size)), shared_mem=128 * 8)
    assert sums.sum() == pytest.approx(d.sum(), rel=1e-12)
    sums[:] = 0
    cg.get_function("cg_block_sum<double>")((5,), (96,), (d, sums, np.uint32(d.size)))
    assert sums.sum() == pytest.approx(d.sum(), rel=1e-12)
    a = rng.standard_normal((6, 300)).astype(np.float32)
    y = np.zeros_like(a)
    mod.get_function("softmax_rows")((6,), (128,), (a, y, np.int32(300)))
    e = np.exp(a.astype(np.float64) - a.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    total = np.zeros(1, np.float32)
    for _ in range(2):  # the last block resets the counter for the next launch
        partial[:] = 0
        mod.get_function("fence_sum")((7,), (64,), (x, partial, total, np.uint32(x.size)))
        assert total[0] == pytest.approx(x.astype(np.float64).sum(), rel=1e-5, abs=1e-3)
    counts = rng.integers(0, 9, 6).astype(np.int32)
    offsets, flags = np.zeros(6, np.int32), np.zeros(6, np.int32)
    mod.get_function("chained_offsets")((6,), (32,), (counts, offsets, flags, np.int32(0)))
    np.testing.assert_array_equal(offsets, np.cumsum(counts) - counts)


def test_static_shared_in_a_device_function_is_guarded_by_memcheck(kernel_cache):
    src = textwrap.dedent("""
        __device__ float stash(float v)
        {
            static __shared__ float slots[32];
            slots[threadIdx.x] = v;
            __syncthreads();
            return slots[31 - threadIdx.x];
        }
        extern "C" __global__ void mirror(float* x) { x[threadIdx.x] = stash(x[threadIdx.x]); }
    """)
    k = kernels.RawKernel(src, "mirror", check=CHECKS)
    x = np.arange(32, dtype=np.float32)
    k((1,), (32,), (x,))
    np.testing.assert_array_equal(x, np.arange(32)[::-1])
    with pytest.raises(kernels.LaunchError, match=r"thread \(32,0,0\).*invalid write of 4 bytes, 0 bytes past the "
                                                  r"end of __shared__ slots \(128 bytes, declared at <source>:4\) "
                                                  r"at <source>:5$"):
        k((1,), (64,), (np.zeros(64, np.float32),))
