"""Issue figure: a 2-rank (and 4-rank) training run on the emulator equals the NumPy
backend within 1e-4 relative after 3 steps, and the kernel trace shows every family ran."""
import pytest
from mpi4py import MPI

import kernels
from mpicnn import train
from contract import BASE, WORLD, agreed_max, max_rel_diff, on_ranks, params_of, serial_params

pytestmark = pytest.mark.mpi(min_size=2)


def test_emu_equals_numpy_on_all_ranks(monkeypatch):
    """The default model on data=2, the emulator's kernels against the NumPy code (which
    may run other algorithms: the native direct convolution, Winograd), in float64 so that
    1e-9 is meaningful after three Adam steps."""
    argv = BASE + ["--model", "lenet5", "--steps", "3", "--batch-size", "64"]
    ref = params_of(train.run(argv + ["--backend", "numpy"], WORLD))
    monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
    kernels.reset_trace()
    worst = max_rel_diff(params_of(train.run(argv + ["--backend", "emu"], WORLD)), ref)
    ran = {row[0].split("<")[0] for row in kernels.trace_table()}
    needed = {"im2col", "max_pool_forward", "max_pool_backward", "relu_forward", "relu_backward",
              "softmax_xent_forward", "softmax_xent_backward", "adam_update"}
    missing = WORLD.allreduce(len(needed - ran), op=MPI.MAX)
    assert WORLD.allreduce(worst, op=MPI.MAX) < 1e-9
    assert missing == 0, sorted(needed - ran)


def test_emu_spatial_equals_numpy_serial(monkeypatch):
    """Spatial 2x1 (2-rank groups) on the emulator: halos packed and unpacked by the
    halo.cu kernels, convs with padding 0 on the halo buffers; float64 so the emulator's
    results match the serial NumPy run within 1e-9."""
    argv = BASE + ["--model", "convnet", "--width", "4", "--dataset", "shapes:20:64", "--steps", "2",
                   "--batch-size", "6"]

    def run(comm):
        ref = serial_params(argv + ["--backend", "numpy"])
        monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
        kernels.reset_trace()
        got = params_of(train.run(argv + ["--backend", "emu", "--parallel", "spatial=2x1"], comm))
        ran = {row[0].split("<")[0] for row in kernels.trace_table()}
        assert {"halo_pack", "halo_unpack"} <= ran, sorted(ran)
        return max_rel_diff(got, ref)
    assert agreed_max(on_ranks(2, run)) < 1e-9


@pytest.mark.parametrize("layout", ["pipeline=2", "ps=1"])
def test_emu_pipeline_and_parameter_server_equal_numpy_serial(layout, monkeypatch):
    """Pipeline stages and a parameter server (1 worker + 1 server) run the CUDA kernels
    on the emulator: float64, equal to the serial NumPy run within 1e-9, and the kernel
    trace of the pair shows the forward, loss and optimizer kernels ran."""
    argv = BASE + ["--model", "lenet5", "--steps", "2", "--batch-size", "16", "--micro-batches", "2"]

    def run(comm):
        ref = serial_params(argv + ["--backend", "numpy"])
        monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
        kernels.reset_trace()
        got = train.run(argv + ["--backend", "emu", "--parallel", layout], comm).params
        ran = set().union(*comm.allgather({row[0].split("<")[0] for row in kernels.trace_table()}))
        assert {"im2col", "softmax_xent_forward", "adam_update"} <= ran, sorted(ran)
        return max_rel_diff(got, ref)
    assert agreed_max(on_ranks(2, run)) < 1e-9


@pytest.mark.parametrize("model, data, layout, needed", [
    ("cosmoflow", "cosmo:32:8", "spatial=2x1x1", {"halo3d_pack", "halo3d_unpack", "im2col3d", "col2im3d",
                                                  "max_pool3d_forward", "mse_forward"}),
    ("unet", "blobs:32:8", "spatial=2x1", {"halo_pack", "upsample_nearest_forward", "concat_channels",
                                           "dense_xent_forward"})])
def test_emu_volumes_and_segmentation_split_equal_numpy_serial(model, data, layout, needed, monkeypatch):
    """A volume split over depth (3-D halos packed and unpacked by halo3d.cu) and a U-Net
    split over rows on the emulator: float64, equal to the serial NumPy run within 1e-9."""
    argv = BASE + ["--model", model, "--width", "2", "--dataset", data, "--steps", "2", "--batch-size", "2"]

    def run(comm):
        ref = serial_params(argv + ["--backend", "numpy"])
        monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
        kernels.reset_trace()
        got = train.run(argv + ["--backend", "emu", "--parallel", layout], comm).params
        ran = {row[0].split("<")[0] for row in kernels.trace_table()}
        assert needed <= ran, sorted(needed - ran)
        return max_rel_diff(got, ref)
    assert agreed_max(on_ranks(2, run)) < 1e-9
