"""Spatial parallelism against the 1-rank run: the halo exchange (adjoint identity), every
layer kind on split maps, and whole training runs (float64, relative 1e-9).
Run under mpiexec -n 2 and -n 4; every assertion is on a value agreed over ranks."""
import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import nn, train
from mpicnn.errors import UserError
from mpicnn.parallel.blocks import block_range
from mpicnn.parallel.grid import ProcessGrid
from mpicnn.parallel.spatial import SpatialContext
from mpicnn.parallel.spec import ParallelSpec
from contract import BASE, WORLD, agreed_max, compare_with_serial, max_rel_diff, on_ranks, params_of

pytestmark = pytest.mark.mpi(min_size=2)


def grids(size):
    """Every P x Q grid of ``size`` ranks."""
    return [(p, size // p) for p in range(1, size + 1) if size % p == 0]


def spatial_context(comm, grid):
    g = ProcessGrid(comm, ParallelSpec(data=1, spatial=grid))
    return g, SpatialContext(g)


def block(x, ctx):
    """This rank's block of a global NHWC array."""
    (P, Q), (r, c) = ctx.shape, ctx.coords
    rows, cols = block_range(x.shape[1], P, r), block_range(x.shape[2], Q, c)
    return np.ascontiguousarray(x[:, slice(*rows), slice(*cols)])


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("geometry", [(3, 1, 1, 1), (5, 2, 2, 1), (3, 1, 2, 2), (1, 2, 0, 1), (7, 1, 3, 1)])
def test_halo_exchange_adjoint_identity(geometry):
    """<F x, y> = <x, F* y> summed over ranks, F = gather_halo (as a linear map of x)."""
    k, s, p, d = geometry
    worst = 0.0
    for grid in grids(WORLD.Get_size()):
        g, ctx = spatial_context(WORLD, grid)
        layer = object()
        rng = np.random.default_rng(1 + WORLD.Get_rank())
        H, W = 19, 11
        x = block(np.zeros((2, H, W, 3)), ctx)
        x[...] = rng.standard_normal(x.shape)
        # A nonzero fill would make F affine, not linear: the identity needs 0 padding.
        fx, handle = ctx.window_input(layer, x, (k, k), (s, s), (p, p), (d, d), fill=0.0)
        y = rng.standard_normal(fx.shape)
        fty = ctx.window_input_grad(handle, y.copy())
        sums = np.array([np.vdot(fx, y), np.vdot(x, fty)])
        WORLD.Allreduce(MPI.IN_PLACE, sums)
        worst = max(worst, abs(sums[0] - sums[1]) / abs(sums[0]))
        assert fty.shape == x.shape
        g.free()
    assert agreed_max(worst) < 1e-12


def model_for(head, dtype=np.float64):
    nn.init.manual_seed(3)
    pool = {"avg": nn.GlobalAvgPool2d, "max": nn.GlobalMaxPool2d, "rms": nn.GlobalRMSPool2d}[head]()
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(4, 5, 5, stride=2, padding=2, dtype=dtype),
        # bias=False: a bias before BatchNorm has a zero gradient (only rounding noise to compare)
        nn.Conv2d(5, 5, 3, padding=2, dilation=2, bias=False, dtype=dtype), nn.BatchNorm2d(5, dtype=dtype),
        nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(3, stride=1, padding=1),
        nn.Residual(nn.Sequential(nn.Conv2d(5, 6, 3, stride=2, padding=1, bias=False, dtype=dtype)),
                    nn.Conv2d(5, 6, 1, stride=2, dtype=dtype)),
        nn.Dropout(0.3), nn.LeakyReLU(0.1), pool, nn.Linear(6, 3, dtype=dtype))


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("head", ["avg", "max", "rms"])
def test_layers_on_split_maps_equal_serial(head, overlap):
    """Forward output, input gradient (this rank's block) and parameter gradients (summed
    over the blocks) equal the serial model's, for every grid of the world."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 29, 37, 3))
    dy = rng.standard_normal((3, 3))
    serial = model_for(head)
    y0 = serial._forward(x)
    dx0 = serial._backward(dy)
    grads0 = [p.grad.copy() for p in serial.parameters()]
    worst = 0.0
    for grid in grids(WORLD.Get_size()):
        g, ctx = spatial_context(WORLD, grid)
        ctx.overlap = overlap  # interior computed while halos travel, or exchange first
        model = model_for(head).set_context(ctx)
        ctx.name_layers(model)
        y = model._forward(block(x, ctx))
        # The trainer's rule: the replicated head back-propagates 1/S of the loss gradient.
        dx = model._backward(dy / ctx.grad_seam)
        worst = max(worst, rel(y, y0), rel(dx, block(dx0, ctx)))
        for p, ref in zip(model.parameters(), grads0):
            g.spatial.Allreduce(MPI.IN_PLACE, p.grad)
            worst = max(worst, rel(p.grad, ref))
        g.free()
    assert agreed_max(worst) < 1e-11


@pytest.mark.parametrize("overlap", [True, False])
def test_thin_blocks_read_halos_from_far_owners(overlap):
    """9x7 maps, 7x7 and dilated 5x5 kernels: halos of 3 and 8 rows reach past the next
    block (on 4 ranks 2-row blocks take rows from up to four owners per side)."""
    def build():
        nn.init.manual_seed(5)
        return nn.Sequential(nn.Conv2d(2, 3, 7, padding=3, dtype=np.float64),
                             nn.Conv2d(3, 2, 5, padding=4, dilation=2, dtype=np.float64),
                             nn.GlobalAvgPool2d())
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((2, 9, 7, 2)), rng.standard_normal((2, 2))
    serial = build()
    y0, dx0 = serial._forward(x), serial._backward(dy)
    worst = 0.0
    for grid in grids(WORLD.Get_size()):
        g, ctx = spatial_context(WORLD, grid)
        ctx.overlap = overlap
        model = build().set_context(ctx)
        y = model._forward(block(x, ctx))
        dx = model._backward(dy / ctx.grad_seam)
        worst = max(worst, rel(y, y0), rel(dx, block(dx0, ctx)))
        for p, ref in zip(model.parameters(), serial.parameters()):
            g.spatial.Allreduce(MPI.IN_PLACE, p.grad)
            worst = max(worst, rel(p.grad, ref.grad))
        g.free()
    assert agreed_max(worst) < 1e-12


CONVNET = ["--model", "convnet", "--dataset", "shapes:60", "--steps", "4", "--batch-size", "8",
           "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"]


def compare(argv, layout):
    return lambda comm: compare_with_serial(BASE + argv, layout, comm)


@pytest.mark.parametrize("layout, overlap", [("spatial=2x1", "0"), ("spatial=1x2", "0"), ("spatial=2x1", "1")])
def test_convnet_spatial_two_ranks_equals_serial(layout, overlap, monkeypatch):
    monkeypatch.setenv("MPICNN_HALO_OVERLAP", overlap)
    assert agreed_max(on_ranks(2, compare(CONVNET, layout))) < 1e-9


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("layout, extra, overlap", [("spatial=2x2", [], "0"), ("spatial=4x1", [], "0"),
                                                    ("data=2,spatial=2x1", ["--sync-bn"], "0"),
                                                    ("spatial=2x2", [], "1")])
def test_convnet_spatial_four_ranks_equals_serial(layout, extra, overlap, monkeypatch):
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")
    monkeypatch.setenv("MPICNN_HALO_OVERLAP", overlap)
    assert agreed_max(on_ranks(4, compare(CONVNET + extra, layout))) < 1e-9


def test_resnet8_spatial_equals_serial():
    """Residual blocks with stride-2 1x1 shortcuts, thin blocks deep in the net."""
    argv = ["--model", "resnet8", "--width", "4", "--dataset", "shapes:20:64", "--steps", "2", "--batch-size", "6"]
    assert agreed_max(on_ranks(2, compare(argv, "spatial=2x1"))) < 1e-9


def test_flatten_models_are_refused_with_the_fix():
    def run(comm):
        with pytest.raises(UserError) as refused:
            train.run(BASE + ["--model", "lenet5", "--steps", "1", "--parallel", "spatial=2x1"], comm)
        message = str(refused.value)
        assert "Flatten" in message and "global" in message and "data=N" in message, message
        return 0.0
    assert agreed_max(on_ranks(2, run)) == 0


@pytest.mark.mpi(min_size=4)
def test_too_many_blocks_error_names_layer_and_grid():
    """16 px through 3 stride-2 stages leaves 2x2 maps: a 1x4 grid has empty blocks there."""
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")

    def run(comm):
        with pytest.raises(UserError) as refused:
            train.run(BASE + ["--model", "convnet", "--width", "2", "--dataset", "shapes:16:40", "--steps", "1",
                              "--batch-size", "8", "--parallel", "spatial=1x4"], comm)
        message = str(refused.value)
        assert "layer" in message and "spatial=PxQ" in message and "Q <= 2" in message, message
        return 0.0
    assert agreed_max(on_ranks(4, run)) == 0


@pytest.mark.parametrize("first, second", [("data=2", "spatial=2x1"), ("spatial=2x1", "data=2")])
def test_checkpoint_resumes_across_layouts(first, second):
    """Checkpoints are global: saved at step 2 under one layout, resumed to step 4 under
    the other, the parameters equal the uninterrupted run (Adam state carried over)."""
    import os
    import shutil
    import tempfile

    from mpicnn.io.checkpoint import checkpoint_path

    def run(comm):
        tmp = comm.bcast(tempfile.mkdtemp() if comm.Get_rank() == 0 else None)
        argv = BASE + ["--model", "convnet", "--width", "4", "--dataset", "shapes:20:64", "--steps", "4",
                       "--batch-size", "8", "--sync-bn", "--checkpoint-dir", tmp, "--checkpoint-every", "2",
                       "--keep-checkpoints", "5"]
        straight = params_of(train.run(argv + ["--parallel", first], comm))
        resumed = params_of(train.run(argv + ["--parallel", second, "--resume",
                                              checkpoint_path(tmp, 2)], comm))
        comm.Barrier()
        if comm.Get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        assert os.path.basename(checkpoint_path(tmp, 2)).startswith("ckpt-")
        return max_rel_diff(resumed, straight)
    assert agreed_max(on_ranks(2, run)) < 1e-9
