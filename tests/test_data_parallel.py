"""Correctness contract for data parallelism: any split of the global batch gives the
1-rank parameters (float64, relative 1e-9). Run under mpiexec -n 2 and -n 4."""
import numpy as np
import pytest
from mpi4py import MPI

from contract import BASE, WORLD, agreed_max, compare_with_serial, on_ranks

pytestmark = pytest.mark.mpi(min_size=2)


def compare(argv, comm):
    return compare_with_serial(BASE + argv, f"data={comm.Get_size()}", comm)


@pytest.mark.parametrize("argv", [
    ["--model", "lenet5", "--steps", "6", "--batch-size", "31", "--optimizer", "sgd", "--momentum", "0.9"],
    ["--model", "lenet5", "--steps", "6", "--batch-size", "30", "--optimizer", "adam", "--bucket-mb", "0.01"],
])
def test_all_ranks_equal_serial(argv):
    assert agreed_max(compare(argv, WORLD)) < 1e-9


def test_two_rank_groups_equal_serial():
    """data=2 inside a bigger world: two independent jobs on split communicators."""
    diff = on_ranks(2, lambda comm: compare(["--model", "lenet5", "--steps", "6", "--batch-size", "25"], comm))
    assert agreed_max(diff) < 1e-9


def test_sync_bn_convnet_equals_serial():
    argv = ["--model", "convnet", "--width", "4", "--dataset", "shapes:20:64", "--steps", "3",
            "--batch-size", "18", "--sync-bn"]
    assert agreed_max(compare(argv, WORLD)) < 1e-9


def test_local_batchnorm_differs_from_serial():
    """Without --sync-bn each rank normalises with its own statistics (as DDP): the result
    must differ from the serial run, which proves --sync-bn does real work above."""
    argv = ["--model", "convnet", "--width", "4", "--dataset", "shapes:20:64", "--steps", "2", "--batch-size", "16"]
    assert agreed_max(compare(argv, WORLD)) > 1e-6


@pytest.mark.parametrize("staged", [False, True])
def test_gradient_buckets_sum_and_rerun(staged):
    """Gradients set to the rank number sum to size*(size-1)/2, in every bucket, twice
    (a second round catches state left over from the first). ``staged`` runs the path
    GPU arrays take when MPI is not CUDA-aware (copy to a host mirror and back)."""
    from mpicnn import nn
    from mpicnn.parallel.gradsync import GradientBuckets

    model = nn.Sequential(nn.Linear(5, 7, dtype=np.float64), nn.ReLU(), nn.Linear(7, 3, dtype=np.float64))
    buckets = GradientBuckets(model, WORLD, bucket_bytes=64, staged=staged)  # several buckets
    assert all(b.mpi.staged == staged for b in buckets.buckets)
    assert len(buckets.buckets) > 2
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    worst = 0.0
    for _ in range(2):
        model.zero_grad()
        for p in model.parameters():
            p.grad[...] = rank  # what backward "computed"; no layer ran, so finish() launches all
        buckets.begin()
        buckets.finish()
        worst = max(worst, max(float(np.max(np.abs(p.grad - size * (size - 1) / 2))) for p in model.parameters()))
    assert agreed_max(worst) == 0.0


def test_buckets_launch_during_backward():
    """Overlap: every bucket is in flight when backward returns, before finish()."""
    from mpicnn import models, nn
    from mpicnn.parallel.gradsync import GradientBuckets

    nn.init.manual_seed(0)
    model = models.get("lenet5", 1, 10, dtype=np.float64)
    buckets = GradientBuckets(model, WORLD, bucket_bytes=20_000)
    crit = nn.CrossEntropyLoss()
    x = np.random.default_rng(WORLD.Get_rank()).standard_normal((3, 1, 28, 28))
    buckets.begin()
    crit(model.forward(x), np.arange(3))
    model.backward(crit.backward())
    launched = all(b.request is not None for b in buckets.buckets)
    buckets.finish()
    assert WORLD.allreduce(int(launched), op=MPI.MIN) == 1 and len(buckets.buckets) > 1
