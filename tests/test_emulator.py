"""The kernels package: the CPU emulator against NumPy, the launch API, NVRTC.

Sample kernels in tests/cuda_samples are written as ordinary CUDA programmers write
them; each runs on the emulator (NumPy arrays) and is checked against a NumPy
reference. The emulator's libraries go to a fresh cache directory for this module,
shared by all its tests (module-scoped fixtures), so each sample compiles once.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import emu
from kernels.emu import build
from kernels.loader import KERNEL_DIR, declared_instantiations
from tools import require

SAMPLES = Path(__file__).resolve().parent / "cuda_samples"
REPO = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(1234)


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kernel-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPICNN_KERNEL_CACHE", str(cache))
        mp.delenv("MPICNN_EMU_POISON_SHARED", raising=False)
        mp.delenv("MPICNN_TRACE_KERNELS", raising=False)
        yield cache


def sample(name, **kw):
    return kernels.RawModule(path=SAMPLES / f"{name}.cu", **kw)


@pytest.fixture(scope="module")
def sgemm(kernel_cache):
    return sample("sgemm_tiled").get_function("sgemm_tiled")


@pytest.fixture(scope="module")
def warp(kernel_cache):
    return sample("warp_reduce")


@pytest.fixture(scope="module")
def atomics(kernel_cache):
    return sample("atomics")


@pytest.fixture(scope="module")
def dynsmem(kernel_cache):
    return sample("dynamic_smem")


@pytest.fixture(scope="module")
def barriers(kernel_cache):
    return sample("barriers")


@pytest.fixture(scope="module")
def elementwise(kernel_cache):
    return sample("elementwise")


@pytest.fixture(scope="module")
def faults(kernel_cache):
    return sample("faults")


def blocks(n, block):
    return (n + block - 1) // block


# ---- results against NumPy -----------------------------------------------------------

@pytest.mark.parametrize("m,n,k", [(37, 50, 29), (1, 1, 1), (16, 32, 48), (65, 17, 100)])
def test_tiled_sgemm_with_barriers_matches_numpy(sgemm, m, n, k):
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.full((m, n), np.nan, np.float32)
    sgemm((blocks(n, 16), blocks(m, 16)), (16, 16), (a, b, c, m, n, k))
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_warp_shuffles_down_xor_up_idx(warp):
    n = 4 * 64
    x = rng.standard_normal(n, dtype=np.float32)
    down, xor = np.zeros(n // 32, np.float32), np.zeros(n // 32, np.float32)
    scan, bcast = np.zeros(n, np.float32), np.zeros(n, np.float32)
    warp.get_function("warp_ops")((4,), (64,), (x, down, xor, scan, bcast))
    per_warp = x.reshape(-1, 32).astype(np.float64)
    np.testing.assert_allclose(down, per_warp.sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xor, per_warp.sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scan.reshape(-1, 32), per_warp.cumsum(1), rtol=1e-5, atol=1e-5)
    src = 31 - np.arange(n // 32) % 32
    np.testing.assert_array_equal(bcast.reshape(-1, 32), np.repeat(x.reshape(-1, 32)[np.arange(n // 32), src][:, None], 32, 1))


def test_shuffle_width_8_sums_groups_of_8(warp):
    x = rng.standard_normal(128)
    out = np.zeros_like(x)
    warp.get_function("segment_sum8")((2,), (64,), (x, out))
    np.testing.assert_allclose(out.reshape(-1, 8), np.repeat(x.reshape(-1, 8).sum(1, keepdims=True), 8, 1))


def test_ballot_any_all(warp):
    flags = np.zeros((4, 32), np.int32)
    flags[1] = 1
    flags[2] = rng.integers(0, 2, 32)
    flags[3, 7] = 5
    ballots = np.zeros(4, np.uint32)
    anys, alls, counts = (np.full(4, -1, np.int32) for _ in range(3))
    warp.get_function("votes")((2,), (64,), (flags.ravel(), ballots, anys, alls, counts))
    expect = [int(sum(1 << i for i in range(32) if f[i])) for f in flags]
    assert ballots.tolist() == expect
    assert anys.tolist() == [0, 1, int(flags[2].any()), 1]
    assert alls.tolist() == [0, 1, int(flags[2].all()), 0]
    assert counts.tolist() == [int((f != 0).sum()) for f in flags]


@pytest.mark.parametrize("grid", [64, blocks(100_003, 256)])
def test_shuffle_reduction_with_atomic_add(warp, grid):
    x = rng.standard_normal(100_003, dtype=np.float32)
    total = np.zeros(1, np.float32)
    warp.get_function("sum_reduce")((grid,), (256,), (x, total, np.int32(x.size)))
    assert total[0] == pytest.approx(x.astype(np.float64).sum(), rel=1e-4, abs=1e-2)


def test_float_histogram_with_shared_and_global_atomic_add(atomics):
    x = rng.uniform(-2.5, 2.5, 10_007).astype(np.float32)
    bins, lo, hi = 37, np.float32(-2), np.float32(2)
    hist = np.zeros(bins, np.float32)
    atomics.get_function("histogram")((13,), (128,), (x, x.size, lo, hi, hist, bins))
    idx = ((x - lo) / (hi - lo) * np.float32(bins)).astype(np.int32).clip(0, bins - 1)
    np.testing.assert_array_equal(hist, np.bincount(idx, minlength=bins))


def test_float_max_with_atomic_cas(atomics):
    x = -np.abs(rng.standard_normal(5000, dtype=np.float32)) - 1
    out = np.array([-np.inf], np.float32)
    atomics.get_function("max_reduce")((7,), (96,), (x, x.size, out))
    assert out[0] == x.max()


def test_integer_atomics(atomics):
    x = rng.integers(-1000, 1000, 3001, dtype=np.int32)
    lo, hi = np.array([2**31 - 1], np.int32), np.array([-2**31], np.int32)
    count, low_sum = np.zeros(1, np.uint32), np.zeros(1, np.uint64)
    atomics.get_function("int_atomics")((blocks(x.size, 128),), (128,), (x, x.size, lo, hi, count, low_sum))
    assert (lo[0], hi[0], count[0]) == (x.min(), x.max(), x.size)
    assert low_sum[0] == (x & 0xFF).sum()


def test_dynamic_shared_memory(dynsmem):
    x = rng.standard_normal(6 * 64, dtype=np.float32)
    y = np.zeros_like(x)
    dynsmem.get_function("reverse_blocks")((6,), (64,), (x, y), shared_mem=64 * 4)
    np.testing.assert_array_equal(y.reshape(6, 64), x.reshape(6, 64)[:, ::-1])
    d = rng.standard_normal(1000)
    out = np.zeros(blocks(d.size, 128))
    dynsmem.get_function("block_sum_double")((out.size,), (128,), (d, out, d.size), shared_mem=128 * 8)
    np.testing.assert_allclose(out, np.pad(d, (0, out.size * 128 - d.size)).reshape(-1, 128).sum(1))


def test_poisoned_shared_memory_reads_as_nan(dynsmem, monkeypatch):
    monkeypatch.setenv("MPICNN_EMU_POISON_SHARED", "1")
    out = np.zeros(64, np.float32)
    dynsmem.get_function("peek_shared")((2,), (32,), (out,), shared_mem=32 * 4)
    assert np.isnan(out).all()
    x = rng.standard_normal(64, dtype=np.float32)
    y = np.zeros_like(x)
    dynsmem.get_function("reverse_blocks")((2,), (32,), (x, y), shared_mem=32 * 4)
    np.testing.assert_array_equal(y.reshape(2, 32), x.reshape(2, 32)[:, ::-1])


def test_templates_through_name_expressions(kernel_cache):
    names = ("axpy<float>", "axpy<double>", "block_sum<float, 128>", "block_sum<double, 128>")
    mod = sample("templates", name_expressions=names)
    assert mod.kernel_names() == list(names)
    for dtype, scalar in ((np.float32, np.float32(1.5)), (np.float64, 1.5)):
        name = "float" if dtype is np.float32 else "double"
        x = rng.standard_normal(1000).astype(dtype)
        y = rng.standard_normal(1000).astype(dtype)
        expect = 1.5 * x + y
        mod.get_function(f"axpy<{name}>")((3,), (64,), (scalar, x, y, x.size))
        np.testing.assert_allclose(y, expect, rtol=1e-6)
        out = np.zeros(8, dtype)
        mod.get_function(f"block_sum<{name}, 128>")((8,), (128,), (x, out, x.size))
        np.testing.assert_allclose(out, np.pad(x, (0, 24)).reshape(8, 128).sum(1), rtol=1e-5, atol=1e-5)


def test_3d_grid_and_block_index_math(kernel_cache):
    X, Y, Z = 10, 5, 3
    block, grid = (4, 3, 2), (3, 2, 2)
    out = np.full((Z, Y, X), -1, np.int32)
    sample("index3d").get_function("fill_index3d")(grid, block, (out, X, Y, Z))
    z, y, x = np.meshgrid(np.arange(Z), np.arange(Y), np.arange(X), indexing="ij")
    (bx, tx), (by, ty), (bz, tz) = (divmod(c, b) for c, b in ((x, 4), (y, 3), (z, 2)))
    bid = bx + grid[0] * (by + grid[1] * bz)
    np.testing.assert_array_equal(out, bid * 24 + tx + 4 * (ty + 3 * tz))


def test_threads_may_exit_before_a_barrier(barriers):
    n = 1000
    x = rng.standard_normal(n, dtype=np.float32)
    y = np.zeros_like(x)
    barriers.get_function("shift_left")((blocks(n, 256),), (256,), (x, y, n))
    expect = x.copy()
    for start in range(0, n, 256):
        stop = min(start + 256, n)
        expect[start:stop - 1] = x[start + 1:stop]
    np.testing.assert_array_equal(y, expect)


def test_syncthreads_count_and_or(barriers):
    n, block = 1000, 128
    x = rng.uniform(0, 1, n).astype(np.float32)
    x[128:256] = 0.9  # a block where all are above
    x[256:384] = 0.1  # and one where none is
    counts, alls, anys = (np.full(blocks(n, block), -1, np.int32) for _ in range(3))
    barriers.get_function("count_above")((counts.size,), (block,), (x, n, np.float32(0.5), counts, alls, anys))
    above = np.pad(x > 0.5, (0, counts.size * block - n)).reshape(-1, block)
    valid = np.pad(np.ones(n, bool), (0, counts.size * block - n)).reshape(-1, block)
    assert counts.tolist() == above.sum(1).tolist()
    assert alls.tolist() == (above | ~valid).all(1).astype(int).tolist()
    assert anys.tolist() == above.any(1).astype(int).tolist()
    assert alls[1] == 1 and anys[2] == 0


def test_grid_stride_loop(barriers):
    x = rng.standard_normal(10_000, dtype=np.float32)
    expect = x * np.float32(3)
    barriers.get_function("scale_gridstride")((3,), (64,), (x, np.float32(3), x.size))
    np.testing.assert_array_equal(x, expect)


def test_relu_and_portable_inline_asm_fallback(elementwise):
    x = rng.standard_normal(1000, dtype=np.float32)
    y = np.zeros_like(x)
    elementwise.get_function("relu")((4,), (256,), (x, y, x.size))
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    lanes = np.zeros(96, np.uint32)
    elementwise.get_function("lane_ids")((2,), (48,), (lanes,))
    np.testing.assert_array_equal(lanes, np.tile(np.arange(48) % 32, 2))


def test_vector_types_and_alignment_check(kernel_cache):
    k = sample("vectors").get_function("scale4")
    v = rng.standard_normal(4 * 50, dtype=np.float32)
    expect = 2 * v.reshape(-1, 4) + np.arange(1, 5, dtype=np.float32)
    k((1,), (64,), (v, np.float32(2), 50))
    np.testing.assert_array_equal(v.reshape(-1, 4), expect)
    with pytest.raises(TypeError, match=r"args\[0\].*aligned to 16 bytes"):
        k((1,), (64,), (v[1:197], np.float32(2), 49))
    with pytest.raises(TypeError, match=r"args\[0\] should be float4\*, whose elements are 16 bytes, got a float32 "
                                        r"array of 796 bytes, not a whole number of them"):
        k((1,), (64,), (v[:199], np.float32(2), 49))


def test_activemask_match_reduce_and_partial_masks(kernel_cache):
    """sm_70/sm_80 warp intrinsics (inline: NVRTC would need arch guards for sm_70)."""
    src = textwrap.dedent("""
        extern "C" __global__ void warp_extras(const int* keys, const float* x, unsigned int* active,
                                               int* reduced, unsigned int* any_eq, unsigned int* all_eq,
                                               int* all_pred, float* halves)
        {
            int t = threadIdx.x, lane = t % 32;
            if (lane % 2 == 0) {                    // divergent: each side sees its own lanes
                unsigned int m = __activemask();
                active[t] = m;
                reduced[t] = __reduce_add_sync(m, lane);
            } else {
                unsigned int m = __activemask();
                active[t] = m;
                reduced[t] = __reduce_max_sync(m, lane);
            }
            any_eq[t] = __match_any_sync(0xffffffffu, keys[t]);
            all_eq[t] = __match_all_sync(0xffffffffu, keys[t] / 100, &all_pred[t]);
            unsigned int half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
            halves[t] = __shfl_sync(half, x[t], (lane & 16) + 3);
            __syncwarp(half);
        }
    """)
    keys = rng.integers(0, 4, 64, dtype=np.int32)
    keys[32:] = 7  # second warp: all equal
    x = rng.standard_normal(64, dtype=np.float32)
    active, any_eq, all_eq = (np.zeros(64, np.uint32) for _ in range(3))
    reduced, all_pred = np.zeros(64, np.int32), np.zeros(64, np.int32)
    halves = np.zeros(64, np.float32)
    kernels.RawKernel(src, "warp_extras")((1,), (64,), (keys, x, active, reduced, any_eq, all_eq, all_pred, halves))
    lane = np.arange(64) % 32
    np.testing.assert_array_equal(active, np.where(lane % 2 == 0, 0x55555555, 0xAAAAAAAA))
    np.testing.assert_array_equal(reduced, np.where(lane % 2 == 0, sum(range(0, 32, 2)), 31))
    for w in range(2):
        k = keys[32 * w:32 * w + 32]
        expect = [sum(1 << j for j in range(32) if k[j] == k[i]) for i in range(32)]
        np.testing.assert_array_equal(any_eq[32 * w:32 * w + 32], expect)
    np.testing.assert_array_equal(all_eq, np.repeat([0xFFFFFFFF if (keys[:32] // 100 == 0).all() else 0, 0xFFFFFFFF], 32))
    np.testing.assert_array_equal(all_pred, all_eq != 0)
    np.testing.assert_array_equal(halves, x[(np.arange(64) // 32) * 32 + (lane & 16) + 3])


def test_device_printf_reaches_stdout(kernel_cache, capfd):
    src = 'extern "C" __global__ void hello(int n) { if (threadIdx.x == 1) printf("thread %d of %d\\n", threadIdx.x, n); }'
    kernels.RawKernel(src, "hello")((1,), (4,), (4,))
    assert capfd.readouterr().out == "thread 1 of 4\n"


def test_struct_passed_by_value(kernel_cache):
    src = textwrap.dedent("""
        struct Affine { int n; float scale; double shift; };
        extern "C" __global__ void affine(float* x, Affine p)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < p.n) x[i] = x[i] * p.scale + (float)p.shift;
        }
    """)
    params = np.array([(5, 2.0, 0.5)], dtype=np.dtype([("n", "i4"), ("scale", "f4"), ("shift", "f8")], align=True))
    x = np.arange(8, dtype=np.float32)
    k = kernels.RawKernel(src, "affine")
    k((1,), (8,), (x, params[0]))
    np.testing.assert_array_equal(x, [0.5, 2.5, 4.5, 6.5, 8.5, 5, 6, 7])
    with pytest.raises(TypeError, match=r"args\[1\] should be struct of 16 bytes"):
        k((1,), (8,), (x, 5))


def test_cooperative_groups_tiles_and_block(kernel_cache):
    src = textwrap.dedent("""
        #include <cooperative_groups.h>
        namespace cg = cooperative_groups;
        extern "C" __global__ void tile_sums(const int* x, int* out)
        {
            cg::thread_block block = cg::this_thread_block();
            cg::thread_block_tile<16> tile = cg::tiled_partition<16>(block);
            int v = x[block.thread_rank()];
            for (int d = tile.size() / 2; d > 0; d /= 2) v += tile.shfl_down(v, d);
            block.sync();
            if (tile.thread_rank() == 0) out[tile.meta_group_rank()] = v;
        }
    """)
    x = rng.integers(0, 100, 64, dtype=np.int32)
    out = np.zeros(4, np.int32)
    kernels.RawKernel(src, "tile_sums")((1,), (64,), (x, out))
    np.testing.assert_array_equal(out, x.reshape(4, 16).sum(1))


def test_portable_ucontext_fibers(kernel_cache, monkeypatch):
    """The fallback used off x86-64, forced here: barriers, shuffles and deadlock reports."""
    monkeypatch.setenv("MPICNN_EMU_FIBERS", "ucontext")
    a = rng.standard_normal((40, 20), dtype=np.float32)
    b = rng.standard_normal((20, 30), dtype=np.float32)
    c = np.zeros((40, 30), np.float32)
    sample("sgemm_tiled").get_function("sgemm_tiled")((2, 3), (16, 16), (a, b, c, 40, 30, 20))
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    x = rng.standard_normal(5000, dtype=np.float32)
    total = np.zeros(1, np.float32)
    sample("warp_reduce").get_function("sum_reduce")((8,), (128,), (x, total, x.size))
    assert total[0] == pytest.approx(x.astype(np.float64).sum(), rel=1e-4, abs=1e-3)
    with pytest.raises(kernels.LaunchError, match="deadlock"):
        sample("faults").get_function("divergent_shuffle")((1,), (32,), (np.zeros(32, np.float32),))


# ---- argument checks ---------------------------------------------------------------

def test_python_float_for_float_parameter_is_refused(barriers):
    x = np.ones(10, np.float32)
    with pytest.raises(TypeError, match=r"'scale_gridstride': args\[1\] should be float.*Python float.*numpy\.float32"):
        barriers.get_function("scale_gridstride")((1,), (32,), (x, 2.0, 10))
    assert (x == 1).all()  # nothing ran


def test_float64_array_for_float_pointer_is_refused(elementwise):
    with pytest.raises(TypeError, match=r"'relu': args\[0\] should be float\*.*float32.*float64"):
        elementwise.get_function("relu")((1,), (32,), (np.ones(8), np.ones(8, np.float32), 8))


def test_wrong_argument_count_is_refused(elementwise):
    with pytest.raises(TypeError, match=r"'relu' takes 3 arguments \(float\*, float\*, int\), got 2"):
        elementwise.get_function("relu")((1,), (32,), (np.ones(8, np.float32), 8))


def test_integer_arguments(elementwise):
    relu = elementwise.get_function("relu")
    x, y = np.ones(8, np.float32), np.zeros(8, np.float32)
    for n in (8, np.int32(8), np.int64(8), np.uint64(8)):  # what a GPU reads correctly
        relu((1,), (32,), (x, y, n))
    with pytest.raises(TypeError, match=r"args\[2\] should be int \(4 bytes\), got numpy.uint16 8 of 2 bytes"):
        relu((1,), (32,), (x, y, np.uint16(8)))  # a GPU would read 2 bytes of garbage
    with pytest.raises(TypeError, match=r"args\[2\].*out of its range"):
        relu((1,), (32,), (x, y, 2**40))
    with pytest.raises(TypeError, match=r"args\[2\] should be int.*numpy\.float32"):
        relu((1,), (32,), (x, y, np.float32(8)))
    with pytest.raises(TypeError, match=r"args\[1\] should be float\*.*\(an array\)"):
        relu((1,), (32,), (x, 8, 8))
    assert relu.signature == ["float*", "float*", "int"]


def test_numpy_and_device_arrays_mixed_is_refused(elementwise):
    class FakeDeviceArray:
        __cuda_array_interface__ = {"shape": (8,), "typestr": "<f4", "data": (0, False), "version": 3}
    with pytest.raises(TypeError, match=r"args\[0\] is a NumPy array and args\[1\] a device"):
        elementwise.get_function("relu")((1,), (32,), (np.ones(8, np.float32), FakeDeviceArray(), 8))


@pytest.mark.parametrize("grid,block,shared,match", [
    ((1,), (1025,), 0, r"block \(1025, 1, 1\) has x = 1025; CUDA allows 1 to 1024"),
    ((1,), (64, 32), 0, r"2048 threads; CUDA allows at most 1024 per block"),
    ((1,), (1, 1, 65), 0, r"z = 65; CUDA allows 1 to 64"),
    ((1, 65536), (32,), 0, r"grid \(1, 65536, 1\) has y = 65536"),
    ((0,), (32,), 0, r"grid \(0, 1, 1\) has x = 0"),
    ((1,), (32,), 227 * 1024 + 1, r"limited to 232448 bytes"),
])
def test_launch_limits(elementwise, grid, block, shared, match):
    x = np.ones(8, np.float32)
    with pytest.raises(kernels.LaunchError, match="kernel 'relu': .*" + match):
        elementwise.get_function("relu")(grid, block, (x, x, 8), shared_mem=shared)


def test_unknown_kernel_lists_the_kernels(elementwise):
    with pytest.raises(kernels.KernelNotFound, match=r"has no kernel 'rleu'; kernels: relu, lane_ids"):
        elementwise.get_function("rleu")((1,), (1,), ())


# ---- failures are reported, never hung --------------------------------------------

def test_deadlock_is_an_error_not_a_hang(faults, kernel_cache):
    faults.emulator()  # compile here; the child process loads it from the disk cache
    script = textwrap.dedent(f"""
        import numpy as np, kernels
        m = kernels.RawModule(path={str(SAMPLES / 'faults.cu')!r})
        try:
            m.get_function("divergent_shuffle")((1,), (32,), (np.zeros(32, np.float32),))
        except kernels.LaunchError as e:
            print("LaunchError:", e)
    """)
    env = dict(os.environ, MPICNN_KERNEL_CACHE=str(kernel_cache))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    msg = proc.stdout
    assert "LaunchError: kernel 'divergent_shuffle', block (0,0,0): deadlock" in msg
    assert "16 wait at __syncthreads, 16 at warp collectives" in msg
    assert "waits in __shfl_down_sync (mask 0xffffffff) for thread (16,0,0)" in msg


def test_lane_exited_before_shuffle_is_reported(faults):
    with pytest.raises(kernels.LaunchError, match=r"'shuffle_after_exit'.*thread \(16,0,0\).*exited.*__shfl_sync"):
        faults.get_function("shuffle_after_exit")((1,), (32,), (np.zeros(32, np.float32),))


def test_trap_names_kernel_block_and_thread(faults):
    x = np.ones(300, np.float32)
    x[200] = -1
    with pytest.raises(kernels.LaunchError, match=r"'trap_if_negative', block \(1,0,0\): thread \(72,0,0\) .*__trap"):
        faults.get_function("trap_if_negative")((3,), (128,), (x, x.size))
    faults.get_function("trap_if_negative")((3,), (128,), (np.ones(300, np.float32), 300))  # usable after


def test_failed_assert_is_a_launch_error(kernel_cache):
    src = textwrap.dedent("""
        #include <assert.h>
        extern "C" __global__ void positive(const float* x) { assert(x[threadIdx.x] > 0.0f); }
    """)
    k = kernels.RawKernel(src, "positive")
    k((1,), (8,), (np.ones(8, np.float32),))
    with pytest.raises(kernels.LaunchError, match=r"thread \(3,0,0\).*assertion .x\[threadIdx.x\] > 0.0f. failed"):
        k((1,), (8,), (np.array([1, 1, 1, -1, 1, 1, 1, 1], np.float32),))


# ---- refused constructs and compile errors -----------------------------------------

@pytest.mark.parametrize("body,match", [
    ('unsigned int l; asm("mov.u32 %0, %%laneid;" : "=r"(l)); x[0] = l;',
     r"<source>:3: inline PTX asm cannot run on the CPU emulator; put it under #ifdef __CUDA_ARCH__"),
    ("cg::this_grid().sync(); x[0] = 1;", r"<source>:3:.*grid-wide sync"),
])
def test_constructs_the_emulator_cannot_run_are_refused(kernel_cache, body, match):
    src = ("#include <cooperative_groups.h>\nnamespace cg = cooperative_groups;\n"
           f'extern "C" __global__ void k(unsigned int* x) {{ {body} }}\n')
    with pytest.raises(kernels.CompileError, match=match):
        kernels.RawKernel(src, "k")((1,), (1,), (np.zeros(1, np.uint32),))


def test_wmma_is_refused(kernel_cache):
    src = '#include <mma.h>\nextern "C" __global__ void k() {}\n'
    with pytest.raises(kernels.CompileError, match=r"tensor-core wmma"):
        kernels.RawKernel(src, "k")((1,), (1,), ())


def test_compile_error_points_at_the_users_line(kernel_cache, tmp_path):
    path = tmp_path / "broken.cu"
    path.write_text('extern "C" __global__ void k(float* x)\n{\n    x[0] = undefined_thing;\n}\n')
    with pytest.raises(kernels.CompileError) as info:
        kernels.RawModule(path=path).get_function("k")((1,), (1,), (np.zeros(1, np.float32),))
    assert f"{path}:3:12: error: 'undefined_thing' was not declared" in str(info.value).replace("‘", "'").replace("’", "'")
    assert "wrapper.cpp" not in str(info.value)
    assert info.value.log


def test_bad_name_expression_is_named(kernel_cache):
    with pytest.raises(kernels.CompileError, match=r"name expression 'axpy<NoSuchType>' does not name a kernel"):
        sample("templates", name_expressions=("axpy<NoSuchType>",)).emulator()


# ---- cache, trace, loader ----------------------------------------------------------

def test_disk_cache_skips_the_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("MPICNN_KERNEL_CACHE", str(tmp_path))
    src = 'extern "C" __global__ void fill(int* x) { x[threadIdx.x] = 7; }\n'
    before = dict(build.stats)
    kernels.RawKernel(src, "fill").module.emulator()
    assert build.stats["compiles"] == before["compiles"] + 1
    (lib,) = tmp_path.glob("emu-*.so")
    mtime = lib.stat().st_mtime_ns
    emu.forget_loaded()  # as a new process would
    x = np.zeros(4, np.int32)
    kernels.RawKernel(src, "fill")((1,), (4,), (x,))
    assert (x == 7).all()
    assert build.stats["compiles"] == before["compiles"] + 1
    assert build.stats["disk_hits"] == before["disk_hits"] + 1
    assert lib.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("build-*")), "temporary build folders are removed"


def test_edited_include_is_recompiled(tmp_path, monkeypatch):
    monkeypatch.setenv("MPICNN_KERNEL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "value.cuh").write_text("#define VALUE 1\n")
    (tmp_path / "k.cu").write_text('#include "value.cuh"\nextern "C" __global__ void k(int* x) { x[0] = VALUE; }\n')
    x = np.zeros(1, np.int32)
    kernels.RawModule(path=tmp_path / "k.cu").get_function("k")((1,), (1,), (x,))
    (tmp_path / "value.cuh").write_text("#define VALUE 2\n")
    emu.forget_loaded()
    kernels.RawModule(path=tmp_path / "k.cu").get_function("k")((1,), (1,), (x,))
    assert x[0] == 2


def test_trace_table_counts_launches(elementwise, monkeypatch):
    monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
    kernels.reset_trace()
    x = np.ones(64, np.float32)
    for _ in range(3):
        elementwise.get_function("relu")((1,), (64,), (x, x, 64))
    elementwise.get_function("lane_ids")((1,), (32,), (np.zeros(32, np.uint32),))
    rows = {(k, b): (n, ms) for k, b, n, ms in kernels.trace_table()}
    assert set(rows) == {("relu", "emu"), ("lane_ids", "emu")}
    assert rows["relu", "emu"][0] == 3 and rows["lane_ids", "emu"][0] == 1
    assert all(ms > 0 for _, ms in rows.values())
    kernels.reset_trace()
    assert kernels.trace_table() == []


def test_trace_table_printed_at_exit(elementwise, kernel_cache):
    elementwise.emulator()
    script = textwrap.dedent(f"""
        import numpy as np, kernels
        k = kernels.RawModule(path={str(SAMPLES / 'elementwise.cu')!r}).get_function("relu")
        x = np.ones(64, np.float32)
        for _ in range(5):
            k((1,), (64,), (x, x, 64))
    """)
    env = dict(os.environ, MPICNN_KERNEL_CACHE=str(kernel_cache), MPICNN_TRACE_KERNELS="1")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "kernel  backend  launches   total ms" in proc.stderr
    assert [ln.split()[:3] for ln in proc.stderr.splitlines() if ln.startswith("relu")] == [["relu", "emu", "5"]]


def test_load_unknown_name_lists_available_files():
    with pytest.raises(kernels.KernelNotFound, match=r"no kernel file 'no_such_op'.*available: "):
        kernels.load("no_such_op")
    with pytest.raises(kernels.KernelNotFound):
        kernels.load("../tests/cuda_samples/elementwise")


def test_load_is_memoized_and_uses_declared_instantiations():
    assert declared_instantiations("// @instantiate a<float>\n  //@instantiate b<int, 4>  \n") == \
        ("a<float>", "b<int, 4>")
    names = kernels.available()
    require(names, "no kernel files shipped")
    module = kernels.load(names[0])
    assert kernels.load(names[0]) is module
    assert module.name_expressions == declared_instantiations((KERNEL_DIR / f"{names[0]}.cu").read_text())


KERNEL_FILES = sorted(KERNEL_DIR.glob("*.cu"))


@pytest.mark.parametrize("path", KERNEL_FILES, ids=lambda p: p.name)
def test_every_shipped_kernel_file_builds_on_the_emulator(kernel_cache, path):
    module = kernels.RawModule(path=path, name_expressions=declared_instantiations(path.read_text()))
    assert module.kernel_names()


# ---- NVRTC: every .cu compiles for the GPUs we support -----------------------------

@pytest.mark.parametrize("arch", ["sm_70", "sm_80", "sm_90"])
@pytest.mark.parametrize("path", KERNEL_FILES + sorted(SAMPLES.glob("*.cu")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_nvrtc_compiles(path, arch):
    require(kernels.nvrtc_available(), "NVRTC not installed (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
    ptx = kernels.compile_ptx(path=path, arch=arch, name_expressions=declared_instantiations(path.read_text()))
    assert f".target {arch}" in ptx and ".entry" in ptx


def test_nvrtc_error_carries_the_log():
    require(kernels.nvrtc_available(), "NVRTC not installed")
    with pytest.raises(kernels.CompileError, match=r"<source>\(2\): error: identifier \"nope\" is undefined"):
        kernels.compile_ptx('extern "C" __global__ void k(int* x)\n{ x[0] = nope; }\n')


# ---- GPU, when there is one ---------------------------------------------------------

def _gpu_count():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


@pytest.mark.skipif(_gpu_count() == 0, reason="no GPU")
def test_gpu_and_emulator_agree(sgemm, warp):
    import cupy
    a = rng.standard_normal((70, 45), dtype=np.float32)
    b = rng.standard_normal((45, 33), dtype=np.float32)
    c_emu = np.zeros((70, 33), np.float32)
    c_gpu = cupy.zeros((70, 33), cupy.float32)
    sgemm((3, 5), (16, 16), (a, b, c_emu, 70, 33, 45))
    sgemm((3, 5), (16, 16), (cupy.asarray(a), cupy.asarray(b), c_gpu, 70, 33, 45))
    np.testing.assert_allclose(cupy.asnumpy(c_gpu), c_emu, rtol=1e-5, atol=1e-5)
    flags = rng.integers(0, 2, 128).astype(np.int32)
    outs = [np.zeros(4, t) for t in (np.uint32, np.int32, np.int32, np.int32)]
    warp.get_function("votes")((2,), (64,), (flags, *outs))
    gouts = [cupy.zeros(4, o.dtype) for o in outs]
    warp.get_function("votes")((2,), (64,), (cupy.asarray(flags), *gouts))
    for o, g in zip(outs, gouts):
        np.testing.assert_array_equal(cupy.asnumpy(g), o)
