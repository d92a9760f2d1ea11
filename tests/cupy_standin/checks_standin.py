"""The stand-in keeps CuPy's rules. Run with the stand-in as ``cupy`` (tests/test_cupy_standin.py
starts it: ``PYTHONPATH=tests/cupy_standin:. pytest tests/cupy_standin/checks_standin.py``)."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import cupy
from cupy import standin

from mpicnn import backend
from mpicnn.parallel import device_buffers

assert getattr(cupy, "IS_STANDIN", False), "these checks need tests/cupy_standin first on PYTHONPATH"


@pytest.fixture(autouse=True)
def fresh_record():
    standin.reset()
    yield


def test_no_implicit_conversion_to_numpy():
    x = cupy.arange(6, dtype=np.float32)
    for convert in (np.asarray, np.array, lambda a: np.array([a[0], a[1]])):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(x)
    assert standin.count("implicit") == 3


def test_numpy_arrays_do_not_mix_with_device_arrays():
    x = cupy.ones(3)
    for op in (lambda: x + np.ones(3), lambda: np.ones(3) * x, lambda: cupy.maximum(x, np.ones(3)),
               lambda: cupy.concatenate([x, np.ones(3)])):
        with pytest.raises(TypeError, match="Unsupported type"):
            op()
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[...] = np.zeros(3)
    x[...] = np.float64(2.0)  # scalars (host or NumPy) fill, as in CuPy
    assert (x + 1.0 == 3.0).all()


def test_numpy_functions_dispatch_only_where_cupy_has_them():
    x = cupy.asarray(np.array([1.0, np.inf, 3.0]))
    finite = np.isfinite(x)  # a ufunc: runs "on the device"
    assert isinstance(finite, cupy.ndarray)
    assert isinstance(np.count_nonzero(finite), cupy.ndarray)  # a 0-d device array, as CuPy returns
    with pytest.raises(TypeError, match="no implementation found for 'numpy.linalg.norm'"):
        np.linalg.norm(x)


def test_transfers_are_explicit_and_counted():
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = cupy.asarray(host)
    assert [(e.kind, e.nbytes) for e in standin.events] == [("h2d", 48)]
    np.testing.assert_array_equal(x.get(), host)
    np.testing.assert_array_equal(cupy.asnumpy(x), host)
    out = np.empty_like(host)
    x.get(out=out)
    total = x.sum()  # a 0-d device array: no transfer yet
    assert isinstance(total, cupy.ndarray) and total.shape == ()
    assert float(total) == 66.0  # float() copies (and waits) as CuPy does: counted
    assert bool(total > 0) and int(x[1, 1]) == 5
    assert [(e.kind, e.nbytes) for e in standin.events] == [
        ("h2d", 48), ("d2h", 48), ("d2h", 48), ("d2h", 48), ("d2h", 4), ("d2h", 1), ("d2h", 4)]
    with pytest.raises(TypeError, match="only size-1 arrays"):
        float(x)
    with pytest.raises(TypeError, match="Only numpy.ndarray can be set"):
        x.set(x)
    with pytest.raises(TypeError, match="float64 array cannot be set to float32 array"):
        x.set(host.astype(np.float64))


def test_h5py_refuses_device_arrays(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        with pytest.raises(TypeError, match="Implicit conversion"):
            f.create_dataset("x", data=cupy.ones(3))
        d = f.create_dataset("y", shape=(3,), dtype="f8")
        with pytest.raises(TypeError, match="Implicit conversion"):
            d[...] = cupy.ones(3)


def test_mpi_takes_device_arrays_only_when_cuda_aware(monkeypatch):
    x = cupy.arange(4.0)
    monkeypatch.setenv("CUPY_STANDIN_CUDA_AWARE_MPI", "0")
    with pytest.raises(TypeError):  # mpi4py finds no buffer: as a crash would be on a GPU
        MPI.COMM_SELF.Allreduce(MPI.IN_PLACE, x, op=MPI.SUM)
    assert standin.count("mpi_refused") >= 1 and standin.count("mpi") == 0
    monkeypatch.setenv("CUPY_STANDIN_CUDA_AWARE_MPI", "1")
    y = x * 2  # queued work: MPI now would read memory the device has not written yet
    MPI.COMM_SELF.Allreduce(MPI.IN_PLACE, y, op=MPI.SUM)
    cupy.cuda.get_current_stream().synchronize()
    MPI.COMM_SELF.Allreduce(MPI.IN_PLACE, y, op=MPI.SUM)
    mpi = [e for e in standin.events if e.kind == "mpi"]
    assert [e.synced for e in mpi] == [False] * (len(mpi) // 2) + [True] * (len(mpi) // 2)
    assert standin.count("sync") == 1


def test_mpi_buffer_stages_and_syncs_device_arrays(monkeypatch):
    """device_buffers.MPIBuffer: without a CUDA-aware MPI, a sync, a copy out, MPI on
    the host mirror, a copy in."""
    monkeypatch.setenv("MPICNN_CUDA_AWARE", "0")
    device_buffers.cuda_aware.cache_clear()
    with backend.using("cupy"):
        x = cupy.arange(4.0) + 1
        staged = device_buffers.MPIBuffer(x)
        staged.before()
        MPI.COMM_SELF.Allreduce(MPI.IN_PLACE, staged.buf, op=MPI.SUM)
        staged.after()
    device_buffers.cuda_aware.cache_clear()
    assert [e.kind for e in standin.events] == ["sync", "d2h", "h2d"]
    np.testing.assert_array_equal(x.get(), [1, 2, 3, 4])


def test_raw_kernels_run_the_source_on_the_emulator():
    src = 'extern "C" __global__ void scale(float* x, float a, long long n)\n' \
          '{ long long i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= a; }\n'
    k = cupy.RawKernel(src, "scale")
    x = cupy.arange(300, dtype=np.float32)
    launches = standin.launches
    k((2,), (256,), (x, np.float32(2.0), np.int64(300)))
    assert standin.launches == launches + 1
    np.testing.assert_array_equal(x.get(), 2 * np.arange(300, dtype=np.float32))
    with pytest.raises(TypeError, match="Unsupported type"):
        k((1,), (32,), (np.zeros(3, np.float32), np.float32(1), np.int64(3)))
    with pytest.raises(cupy.cuda.driver.CUDADriverError, match="max_dynamic_shared_size_bytes"):
        k((1,), (32,), (x, np.float32(1), np.int64(3)), shared_mem=64 * 1024)
    k.max_dynamic_shared_size_bytes = 64 * 1024  # the opt-in CUDA wants
    k((1,), (32,), (x, np.float32(1), np.int64(3)), shared_mem=64 * 1024)
    with pytest.raises(cupy.cuda.compiler.CompileException):
        cupy.RawModule(code='extern "C" __global__ void k(int* x) { x[0] = nope; }').get_function("k")


def test_devices_and_streams():
    assert cupy.cuda.runtime.getDeviceCount() == 1
    cupy.cuda.Device(0).use()
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        cupy.cuda.Device(1).use()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    end.record()
    assert cupy.cuda.get_elapsed_time(start, end) >= 0.0
    pool = cupy.get_default_memory_pool()
    before = pool.used_bytes()
    x = cupy.empty(1000, np.float64)
    assert pool.used_bytes() == before + 8000
    del x
    assert pool.used_bytes() == before


def test_backend_cupy_runs_on_the_standin():
    with backend.using("cupy"):
        assert backend.xp() is cupy
        x = backend.asarray(np.ones((2, 2), np.float32))
        assert backend.is_array(x) and backend.array_module(x) is cupy
        np.testing.assert_array_equal(backend.to_host(x), np.ones((2, 2)))


def test_it_says_it_is_not_a_gpu():
    proc = subprocess.run([sys.executable, "-c", "import cupy"], capture_output=True, text=True,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "TEST STAND-IN" in proc.stderr and "not a GPU" in proc.stderr
