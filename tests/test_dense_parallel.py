"""Segmentation and regression under data and spatial splits against the 1-rank run
(float64, relative 1e-9): U-Net outputs stay split over the spatial blocks (loss and
metrics reduced, never gathered), even for sizes that do not halve evenly."""
import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import train
from mpicnn.errors import UserError
from contract import agreed_max, max_rel_diff, on_ranks

pytestmark = pytest.mark.mpi(min_size=2)
WORLD = MPI.COMM_WORLD
BASE = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000", "--steps", "3",
        "--batch-size", "4", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"]
UNET = ["--model", "unet", "--width", "2"]
COSMO = ["--model", "cosmoflow", "--width", "2", "--dataset", "cosmo:16:32"]
FIGURES = ("test_loss", "test_mean_iou", "test_pixel_accuracy", "test_mse", "baseline_mse")

_SERIAL = {}


def run(argv, comm):
    result = train.run(BASE + argv, comm)
    params = {n: p.data.copy() for n, p in result.model.named_parameters()}
    return params, {k: np.array([result.summary[k]]) for k in FIGURES if result.summary.get(k) is not None}


def compare(argv, layout):
    """Worst relative difference of the parameters and final figures from the serial run's."""
    key = tuple(argv)
    if key not in _SERIAL:
        _SERIAL[key] = run(argv, MPI.COMM_SELF)
    params, figures = _SERIAL[key]

    def diff(comm):
        p, f = run(argv + ["--parallel", layout], comm)
        assert f.keys() == figures.keys()
        return max(max_rel_diff(p, params), max_rel_diff(f, figures))
    return diff


@pytest.mark.parametrize("dataset", ["blobs:64:16", "blobs:60:16"])
@pytest.mark.parametrize("layout, extra", [("spatial=2x1", []), ("spatial=1x2", []), ("data=2", ["--sync-bn"])])
def test_unet_split_equals_serial(dataset, layout, extra):
    argv = UNET + ["--dataset", dataset] + extra
    assert agreed_max(on_ranks(2, compare(argv, layout))) < 1e-9


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("layout, extra", [("spatial=2x2", []), ("data=2,spatial=2x1", ["--sync-bn"])])
def test_unet_four_ranks_equal_serial(layout, extra):
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")
    argv = UNET + ["--dataset", "blobs:60:16"] + extra
    assert agreed_max(on_ranks(4, compare(argv, layout))) < 1e-9


def test_cosmoflow_data_parallel_equals_serial():
    assert agreed_max(on_ranks(2, compare(COSMO + ["--sync-bn"], "data=2"))) < 1e-9


def test_volumes_under_a_spatial_split_are_refused():
    def attempt(comm):
        try:
            train.run(BASE + COSMO + ["--parallel", "spatial=2x1"], comm)
        except UserError as e:
            return 0.0 if "cannot be split over ranks yet" in str(e) else 1.0
        return 1.0
    assert agreed_max(on_ranks(2, attempt)) == 0.0
