"""Volumes and segmentation under data and spatial splits against the 1-rank run
(float64): 3-D layers on volumes split over depth x height x width (halos in three
phases, adjoint backward, global pools over the blocks); CosmoFlow and U-Net training
(relative 1e-9), U-Net outputs staying split over the spatial blocks (loss and metrics
reduced, never gathered), even for sizes that do not halve evenly."""
import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import nn, train
from mpicnn.errors import UserError
from mpicnn.parallel.blocks import block_range
from mpicnn.parallel.grid import ProcessGrid
from mpicnn.parallel.spatial import SpatialContext
from mpicnn.parallel.spec import ParallelSpec
from contract import agreed_max, max_rel_diff, on_ranks

pytestmark = pytest.mark.mpi(min_size=2)
WORLD = MPI.COMM_WORLD
BASE = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000", "--steps", "3",
        "--batch-size", "4", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"]
UNET = ["--model", "unet", "--width", "2"]
FIGURES = ("test_loss", "test_mean_iou", "test_pixel_accuracy", "test_mse", "baseline_mse")

_SERIAL = {}


def volume_model(head):
    nn.init.manual_seed(5)
    pool = {"avg": nn.GlobalAvgPool3d, "max": nn.GlobalMaxPool3d, "rms": nn.GlobalRMSPool3d,
            "unet": nn.GlobalAvgPool3d}[head]()
    d = np.float64
    # a U-Net level (pool, conv, upsample back, concatenate): uneven sizes need halos
    level = nn.ConcatSkip(nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(2, 2, 3, padding=1, dtype=d),
                                        nn.Upsample(2), nn.Conv3d(2, 1, 1, dtype=d)))
    return nn.Sequential(
        *([level, nn.Conv3d(3, 2, 3, padding=1, dtype=d)] if head == "unet" else []),
        nn.Conv3d(2, 3, 3, padding=1, dtype=d), nn.ReLU(),
        nn.Conv3d(3, 4, (3, 2, 3), stride=2, padding=(1, 0, 1), bias=False, dtype=d), nn.BatchNorm3d(4, dtype=d),
        nn.MaxPool3d(3, stride=2, padding=1), nn.Conv3d(4, 4, 3, padding=2, dilation=2, dtype=d),
        nn.AvgPool3d(2, stride=1), pool, nn.Linear(4, 3, dtype=d))


@pytest.mark.parametrize("head", ["avg", "max", "rms", "unet"])
def test_volume_layers_on_split_blocks_equal_serial(head):
    """Output, this block's input gradient and parameter gradients (summed over blocks) of
    every depth x height x width grid of the world equal the serial model's, for uneven
    sizes and blocks thinner than the halos."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 18, 20, 18))  # a U-Net level needs even sides
    dy = rng.standard_normal((2, 3))
    serial = volume_model(head)
    y0 = serial.forward(x)
    dx0 = serial.backward(dy)
    grads0 = [p.grad.copy() for p in serial.parameters()]
    size, worst = WORLD.Get_size(), 0.0
    grids = [(a, b, size // (a * b)) for a in range(1, size + 1) for b in range(1, size + 1)
             if size % (a * b) == 0]
    for depth, rows, cols in grids:
        g = ProcessGrid(WORLD, ParallelSpec(data=1, spatial=(rows, cols), depth=depth))
        ctx = SpatialContext(g)
        model = volume_model(head).set_context(ctx)
        ctx.name_layers(model)
        box = tuple(slice(*block_range(n, p, c)) for n, p, c in
                    zip(x.shape[2:], (depth, rows, cols), (g.depth_coord,) + g.spatial_coords))
        y = model.forward(np.ascontiguousarray(x[(slice(None), slice(None)) + box]))
        dx = model.backward(dy / ctx.grad_seam)  # the trainer's 1/S for the replicated head
        rel = lambda a, b: float(np.max(np.abs(a - b)) / np.max(np.abs(b)))  # noqa: E731
        worst = max(worst, rel(y, y0), rel(dx, dx0[(slice(None), slice(None)) + box]))
        for p, ref in zip(model.parameters(), grads0):
            g.spatial.Allreduce(MPI.IN_PLACE, p.grad)
            worst = max(worst, rel(p.grad, ref))
        g.free()
    assert agreed_max(worst) < 1e-11


def run(argv, comm):
    result = train.run(BASE + argv, comm)
    params = {n: np.array(p) for n, p in result.params.items()}  # channel shards gathered
    figures = {k: np.array([result.summary[k]]) for k in FIGURES if result.summary.get(k) is not None}
    return params, figures, result.model


def split_convs(model):
    """The layouts of the model's channel-split Conv3d layers ('filter', 'channel<>' ...)."""
    return [m.plan.layout + "<" * m.plan.split_in + ">" * m.plan.split_out
            for m in model.modules() if isinstance(m, nn.Conv3d) and hasattr(m, "plan")]


def compare(argv, layout, convs=None, split=None):
    """Worst relative difference of the parameters and final figures from the serial run's;
    infinite when ``convs`` (the expected ``split_convs``) is given and not what ran.
    ``split``: the parallel run's --channel-split (the serial run has nothing to split)."""
    key = tuple(argv)
    if key not in _SERIAL:
        _SERIAL[key] = run(argv, MPI.COMM_SELF)[:2]
    params, figures = _SERIAL[key]

    def diff(comm):
        p, f, model = run(argv + ["--parallel", layout] + (["--channel-split", split] if split else []), comm)
        assert f.keys() == figures.keys()
        if convs is not None and split_convs(model) != convs:
            print(f"Conv3d layouts {split_convs(model)}, expected {convs}")
            return np.inf
        return max(max_rel_diff(p, params), max_rel_diff(f, figures))
    return diff


@pytest.mark.parametrize("dataset", ["blobs:64:16", "blobs:60:16"])
@pytest.mark.parametrize("layout, extra", [("spatial=2x1", []), ("spatial=1x2", []), ("data=2", ["--sync-bn"]),
                                           ("channel=2", [])])
def test_unet_split_equals_serial(dataset, layout, extra):
    argv = UNET + ["--dataset", dataset] + extra
    assert agreed_max(on_ranks(2, compare(argv, layout))) < 1e-9


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("dataset", ["blobs:64:16", "blobs:60:16"])
@pytest.mark.parametrize("layout, extra", [("spatial=2x2", []), ("data=2,spatial=2x1", ["--sync-bn"])])
def test_unet_four_ranks_equal_serial(dataset, layout, extra):
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")
    argv = UNET + ["--dataset", dataset] + extra
    assert agreed_max(on_ranks(4, compare(argv, layout))) < 1e-9


COSMO = ["--model", "cosmoflow", "--width", "2", "--dataset", "cosmo:32:16"]


@pytest.mark.parametrize("layout, extra", [("spatial=2x1x1", []), ("spatial=1x1x2", []),
                                           ("data=2", ["--sync-bn"])])
def test_cosmoflow_split_equals_serial(layout, extra):
    assert agreed_max(on_ranks(2, compare(COSMO + extra, layout))) < 1e-9


# What each --channel-split makes of cosmoflow's four Conv3d layers ("<" input arrives
# split, ">" output left split through BatchNorm3d, LeakyReLU and MaxPool3d; the last
# one's through the global pool into the row-parallel head).
COSMO_CONVS = {"auto": ["filter>", "channel<>", "channel<>", "channel<"],
               "filter": ["filter", "filter", "filter", "filter>"],
               "channel": ["channel>", "channel<>", "channel<>", "channel<>"]}


@pytest.mark.parametrize("split", sorted(COSMO_CONVS))
def test_cosmoflow_channel_split_equals_serial(split):
    """Conv3d filters or input channels split over 2 ranks, volumes split along axis 1
    (allgathered, allreduced, reduce-scattered), BatchNorm3d holding its block."""
    assert agreed_max(on_ranks(2, compare(COSMO, "channel=2", COSMO_CONVS[split], split))) < 1e-9


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("layout, extra", [("spatial=2x2x1", []), ("data=2,spatial=2x1x1", ["--sync-bn"])]
                         + [("spatial=2x1x1,channel=2", split) for split in sorted(COSMO_CONVS)])
def test_cosmoflow_four_ranks_equal_serial(layout, extra):
    """spatial=2x1x1,channel=2: each channel rank's block of channels exchanges its halos
    with the other depth block; BatchNorm3d statistics sum over the depth blocks."""
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")
    if "channel" in layout:  # extra: the --channel-split
        assert agreed_max(on_ranks(4, compare(COSMO, layout, COSMO_CONVS[extra], extra))) < 1e-9
    else:
        assert agreed_max(on_ranks(4, compare(COSMO + extra, layout))) < 1e-9


@pytest.mark.mpi(min_size=4)
def test_cosmoflow_four_depth_blocks_equal_serial():
    """spatial=4x1x1 needs 4 depths at the last pool (on cosmo:32 it leaves 2 for 4 blocks
    and is refused, as the next test shows): cosmo:64, one plane per block there."""
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")
    argv = COSMO[:-1] + ["cosmo:64:8"]
    assert agreed_max(on_ranks(4, compare(argv, "spatial=4x1x1"))) < 1e-9


@pytest.mark.mpi(min_size=4)
def test_too_many_depth_blocks_name_the_layer_and_the_grid():
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")

    def attempt(comm):
        try:
            train.run(BASE + COSMO[:-1] + ["cosmo:16:16", "--parallel", "spatial=4x1x1"], comm)
        except UserError as e:
            text = str(e)
            return 0.0 if "layer 11 (MaxPool3d" in text and "splits into at most 2x2x2 blocks" in text else 1.0
        return 1.0
    assert agreed_max(on_ranks(4, attempt)) == 0.0


def test_depth_split_of_images_is_refused():
    def attempt(comm):
        try:
            train.run(BASE + UNET + ["--dataset", "blobs:32:16", "--parallel", "spatial=2x1x1"], comm)
        except UserError as e:
            return 0.0 if "split images with spatial=PxQ" in str(e) else 1.0
        return 1.0
    assert agreed_max(on_ranks(2, attempt)) == 0.0


def test_pipeline_stages_refuse_dense_and_regression_data():
    def attempt(comm):
        try:
            train.run(BASE + UNET + ["--dataset", "blobs:32:16", "--parallel", "pipeline=2"], comm)
        except UserError as e:
            return 0.0 if "pipeline stages train classifiers only" in str(e) else 1.0
        return 1.0
    assert agreed_max(on_ranks(2, attempt)) == 0.0
