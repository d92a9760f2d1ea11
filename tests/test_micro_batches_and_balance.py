"""Correctness contract for gradient accumulation (--micro-batches) and dynamic load
balancing (--balance dynamic): any cut of the global batch gives the 1-rank parameters
(float64, relative 1e-9). Run under mpiexec -n 2 and -n 4."""
import pytest
from mpi4py import MPI

from mpicnn import train
from contract import BASE, WORLD, agreed_max, max_rel_diff, serial_params

pytestmark = pytest.mark.mpi(min_size=2)
LENET = ["--model", "lenet5", "--steps", "4"]


def compare(serial_argv, parallel_argv):
    serial = serial_params(BASE + serial_argv)
    result = train.run(BASE + parallel_argv + ["--parallel", f"data={WORLD.Get_size()}"], WORLD)
    return max_rel_diff(result.params, serial), result.summary


@pytest.mark.parametrize("batch, micro", [(32, 4), (30, 4), (27, 2)])
def test_micro_batches_equal_serial(batch, micro):
    """Uneven micro-batches and pieces; a BatchNorm-free model also equals the unsplit batch."""
    argv = LENET + ["--batch-size", str(batch), "--micro-batches", str(micro), "--optimizer", "sgd"]
    same_cut, _ = compare(argv, argv)
    whole_batch, _ = compare(LENET + ["--batch-size", str(batch), "--optimizer", "sgd"], argv)
    assert agreed_max(same_cut) < 1e-9
    assert agreed_max(whole_batch) < 1e-9


def test_micro_batches_batchnorm_statistics_per_micro_batch():
    """With sync-BN, statistics are per micro-batch on every grid: equal to 1 rank with
    the same micro-batches, and different from 1 rank without them (so the cut is real)."""
    argv = ["--model", "convnet", "--width", "4", "--dataset", "shapes:20:64", "--steps", "3",
            "--batch-size", "16", "--sync-bn", "--micro-batches", "2"]
    same_cut, _ = compare(argv, argv)
    whole_batch, _ = compare(argv[:-2], argv)
    assert agreed_max(same_cut) < 1e-9
    assert agreed_max(whole_batch) > 1e-6


@pytest.fixture
def slow_rank_1(monkeypatch):
    monkeypatch.setenv("MPICNN_SLOW_RANK", "1:4.0")


def test_dynamic_balance_with_a_straggler_equals_serial(slow_rank_1):
    argv = LENET + ["--steps", "6", "--batch-size", "48", "--optimizer", "sgd"]
    diff, summary = compare(argv, argv + ["--balance", "dynamic", "--balance-every", "2"])
    assert agreed_max(diff) < 1e-9
    shares = summary["balance"]
    assert len(shares) == WORLD.Get_size() and abs(sum(shares) - 1) < 1e-12
    # Rank 1 computes 4x as long: after re-cutting it holds the smallest share.
    assert WORLD.allreduce(int(shares[1] < min(s for r, s in enumerate(shares) if r != 1)), op=MPI.MIN) == 1


def test_dynamic_balance_with_micro_batches_equals_serial(slow_rank_1):
    argv = LENET + ["--batch-size", "40", "--micro-batches", "2", "--optimizer", "adam"]
    diff, _ = compare(argv, argv + ["--balance", "dynamic", "--balance-every", "1"])
    assert agreed_max(diff) < 1e-9

