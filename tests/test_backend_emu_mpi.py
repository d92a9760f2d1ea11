"""Issue figure: a 2-rank (and 4-rank) training run on the emulator equals the NumPy
backend within 1e-4 relative after 3 steps, and the kernel trace shows every family ran."""
import numpy as np
import pytest
from mpi4py import MPI

import kernels
from mpicnn import train

pytestmark = pytest.mark.mpi(min_size=2)
WORLD = MPI.COMM_WORLD


def test_emu_equals_numpy_on_all_ranks(monkeypatch):
    argv = ["--model", "lenet5", "--steps", "3", "--batch-size", "64", "--no-progress", "--eval-batch-size", "1000"]
    ref = {n: p.data.copy() for n, p in train.run(argv + ["--backend", "numpy"], WORLD).model.named_parameters()}
    monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
    kernels.reset_trace()
    got = {n: p.data.copy() for n, p in train.run(argv + ["--backend", "emu"], WORLD).model.named_parameters()}
    worst = max(float(np.max(np.abs(got[n] - ref[n])) / np.max(np.abs(ref[n]))) for n in ref)
    ran = {row[0].split("<")[0] for row in kernels.trace_table()}
    needed = {"im2col", "max_pool_forward", "max_pool_backward", "relu_forward", "relu_backward",
              "softmax_xent_forward", "softmax_xent_backward", "adam_update"}
    missing = WORLD.allreduce(len(needed - ran), op=MPI.MAX)
    assert WORLD.allreduce(worst, op=MPI.MAX) < 1e-4
    assert missing == 0, sorted(needed - ran)


def test_emu_spatial_equals_numpy_serial(monkeypatch):
    """Spatial 2x1 (2-rank groups) on the emulator: halos packed and unpacked by the
    halo.cu kernels, convs with padding 0 on the halo buffers; float64 so the emulator's
    results match the serial NumPy run within 1e-9."""
    argv = ["--model", "convnet", "--width", "4", "--dataset", "shapes:20:64", "--steps", "2", "--batch-size", "6",
            "--dtype", "float64", "--no-progress", "--eval-batch-size", "1000"]
    comm = WORLD.Split(WORLD.Get_rank() // 2)
    worst, missing = 0.0, 0
    if comm.Get_size() == 2:
        ref = {n: p.data.copy() for n, p in train.run(argv + ["--backend", "numpy"], MPI.COMM_SELF)
               .model.named_parameters()}
        monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
        kernels.reset_trace()
        got = {n: p.data.copy() for n, p in train.run(argv + ["--backend", "emu", "--parallel", "spatial=2x1"], comm)
               .model.named_parameters()}
        worst = max(float(np.max(np.abs(got[n] - ref[n])) / np.max(np.abs(ref[n]))) for n in ref)
        ran = {row[0].split("<")[0] for row in kernels.trace_table()}
        missing = len({"halo_pack", "halo_unpack"} - ran)
    comm.Free()
    assert WORLD.allreduce(worst, op=MPI.MAX) < 1e-9
    assert WORLD.allreduce(missing, op=MPI.MAX) == 0


@pytest.mark.parametrize("layout", ["pipeline=2", "ps=1"])
def test_emu_pipeline_and_parameter_server_equal_numpy_serial(layout, monkeypatch):
    """Pipeline stages and a parameter server (1 worker + 1 server) run the CUDA kernels
    on the emulator: float64, equal to the serial NumPy run within 1e-9, and the kernel
    trace of the pair shows the forward, loss and optimizer kernels ran."""
    argv = ["--model", "lenet5", "--steps", "2", "--batch-size", "16", "--micro-batches", "2",
            "--dtype", "float64", "--no-progress", "--eval-batch-size", "1000"]
    comm = WORLD.Split(WORLD.Get_rank() // 2)
    worst, missing = 0.0, 0
    if comm.Get_size() == 2:
        ref = train.run(argv + ["--backend", "numpy"], MPI.COMM_SELF).params
        monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
        kernels.reset_trace()
        got = train.run(argv + ["--backend", "emu", "--parallel", layout], comm).params
        worst = max(float(np.max(np.abs(got[n] - ref[n])) / np.max(np.abs(ref[n]))) for n in ref)
        ran = set().union(*comm.allgather({row[0].split("<")[0] for row in kernels.trace_table()}))
        missing = len({"im2col", "softmax_xent_forward", "adam_update"} - ran)
    comm.Free()
    assert WORLD.allreduce(worst, op=MPI.MAX) < 1e-9
    assert WORLD.allreduce(missing, op=MPI.MAX) == 0
