"""The data feed's correctness contract: with --augment every layout equals the 1-rank
run, with --data-shards K every rank count equals the 1-rank run with the same K, and
after --stage-dir no rank reads training data from the shared file (float64, 1e-9)."""
import shutil
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

from contract import BASE, agreed_max, max_rel_diff, on_ranks, serial_params
from mpicnn import data, train

pytestmark = pytest.mark.mpi(min_size=2)

WORLD = MPI.COMM_WORLD
# 64 samples, batch 8: 8 steps an epoch, so 10 steps cross into a second epoch's draws.
# SGD: Adam divides by the root of tiny second moments, which lifts the rounding
# differences every layout has (sums in another order) to ~5e-9 after 10 steps.
SMALL = BASE + ["--model", "user_models.small:build", "--dataset", "shapes:16:64", "--batch-size", "8",
                "--steps", "10", "--seed", "4", "--optimizer", "sgd"]
AUGMENTED = SMALL + ["--augment", "crop:4,flip:xy"]


def compare(argv, layout):
    """comm -> largest relative difference of the global parameters from the 1-rank run's."""
    return lambda comm: max_rel_diff(train.run(argv + ["--parallel", layout], comm).params, serial_params(argv))


@pytest.mark.parametrize("layout, extra", [("data=2", ["--sync-bn"]), ("spatial=2x1", []), ("spatial=1x2", []),
                                           ("channel=2", []), ("pipeline=2", ["--micro-batches", "2"])])
def test_augmented_layouts_equal_one_rank(layout, extra):
    assert agreed_max(on_ranks(2, compare(AUGMENTED + extra, layout))) < 1e-9


TURNED = SMALL + ["--augment", "crop:3,flip,rot90"]  # 16x16 images: square, so quarter turns fit


@pytest.mark.parametrize("layout, extra", [("data=2", ["--sync-bn"]), ("spatial=2x1", []), ("spatial=1x2", [])])
def test_turned_layouts_equal_one_rank(layout, extra):
    """Under spatial splits a rank turns back its block to find what to read."""
    assert agreed_max(on_ranks(2, compare(TURNED + extra, layout))) < 1e-9


SHARDED = SMALL + ["--data-shards", "4", "--augment", "crop:2,flip"]


@pytest.mark.parametrize("layout", ["data=2", "spatial=2x1"])
def test_shards_on_two_ranks_equal_one_rank(layout):
    extra = ["--sync-bn"] if layout.startswith("data") else []
    assert agreed_max(on_ranks(2, compare(SHARDED + extra, layout))) < 1e-9


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("layout", ["data=4", "data=2,spatial=2x1"])
def test_shards_on_four_ranks_equal_one_rank(layout):
    if WORLD.Get_size() < 4:
        pytest.skip("needs 4 ranks")
    argv = SHARDED + ["--sync-bn"]
    assert agreed_max(on_ranks(4, compare(argv, layout))) < 1e-9


@pytest.fixture
def shared_dir():
    path = WORLD.bcast(tempfile.mkdtemp() if WORLD.Get_rank() == 0 else None)
    yield path
    WORLD.Barrier()
    if WORLD.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


def test_staged_ranks_read_nothing_from_the_shared_file(shared_dir):
    # one directory for each group of 2 ranks (on 4 ranks a second group would reuse the copy)
    where = f"{shared_dir}/group{WORLD.Get_rank() // 2}"

    def staged(comm):
        result = train.run(SHARDED + ["--parallel", "data=2", "--stage-dir", where], comm)
        reads = result.summary["data_reads"]
        per_rank = reads["shared_bytes_per_rank_epoch"]
        assert len(per_rank) == 2 and all(epoch == 0 for rank in per_rank for epoch in rank), per_rank
        copies = reads["staging"]  # one copy per node, by one process
        assert len(copies) == 1 and copies[0]["samples"] == 64 and copies[0]["bytes_read"] > 0, copies
        plain = train.run(SHARDED + ["--parallel", "data=2"], comm).params
        return max(float(np.max(np.abs(result.params[n] - p))) for n, p in plain.items())
    assert agreed_max(on_ranks(2, staged)) == 0.0


def test_data_ranks_cache_the_whole_set_in_their_first_epoch():
    """Each epoch hands a data rank other samples; a run long enough to come back for all
    of them reads them in runs, so later epochs read nothing from the file. A run too
    short for that reads only the samples it is handed."""
    def reads(comm):
        long = train.run(SMALL + ["--parallel", "data=2", "--steps", "24"], comm).summary["data_reads"]
        short = train.run(SMALL + ["--parallel", "data=2", "--steps", "8"], comm).summary["data_reads"]
        with data.open_dataset("shapes:16:64") as ds:
            whole = ds.num_samples * int(np.prod(ds.shape)) * ds.dtype.itemsize
        assert long["shared_bytes_per_rank_epoch"] == [[whole, 0, 0]] * 2, long
        assert short["shared_bytes_per_rank_epoch"] == [[whole // 2]] * 2, short
        return 0.0
    assert agreed_max(on_ranks(2, reads)) == 0.0


def test_prefetch_under_dynamic_balance_equals_one_rank():
    """Re-cut pieces make the batch read ahead stale: it is dropped and read again.
    (Measured speeds set the cut, so two balanced runs differ in rounding: the check is
    the contract's, against the 1-rank run.)"""
    argv = AUGMENTED + ["--sync-bn", "--prefetch"]
    balanced = ["--balance", "dynamic", "--balance-every", "2"]

    def differs(comm):
        return max_rel_diff(train.run(argv + balanced + ["--parallel", "data=2"], comm).params, serial_params(argv))
    assert agreed_max(on_ranks(2, differs)) < 1e-9
