"""Correctness contract for the channel axis (filter-parallel convs, neuron-parallel
linear layers, sharded optimizer state, gathered checkpoints): parameters gathered to
the global layout equal the 1-rank run (float64, relative 1e-9)."""
import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import train

pytestmark = pytest.mark.mpi(min_size=2)
WORLD = MPI.COMM_WORLD
BASE = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000",
        "--dataset", "shapes:32", "--model", "convnet", "--steps", "4", "--batch-size", "12"]


def max_rel_diff(a, b):
    return max(float(np.max(np.abs(a[n] - b[n])) / max(np.max(np.abs(b[n])), 1e-300)) for n in b)


def agreed_max(value):
    """Every rank asserts on the same number, so a failure cannot strand a rank in a collective."""
    return WORLD.allreduce(value, op=MPI.MAX)


def on_ranks(n, fn):
    """Run ``fn(comm)`` on groups of ``n`` ranks (the rest idle); the group's figure, or 0."""
    comm = WORLD.Split(WORLD.Get_rank() // n)
    value = fn(comm) if comm.Get_size() == n else 0.0
    comm.Free()
    return value


def compare(spec, extra=()):
    argv = BASE + list(extra)

    def run(comm):
        serial = train.run(argv, MPI.COMM_SELF).params
        parallel = train.run(argv + ["--parallel", spec], comm).params
        assert set(parallel) == set(serial)
        return max_rel_diff(parallel, serial)
    return run


def test_channel2_equals_serial():
    assert agreed_max(on_ranks(2, compare("channel=2", ["--optimizer", "sgd", "--momentum", "0.9"]))) < 1e-9


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("spec", ["channel=4", "data=2,channel=2", "spatial=2x1,channel=2"])
def test_four_rank_layouts_equal_serial(spec):
    # --sync-bn: BatchNorm statistics over the whole batch, as the serial run has them.
    assert agreed_max(on_ranks(4, compare(spec, ["--sync-bn"]))) < 1e-9


def test_channel_weights_are_sharded():
    """Each rank holds ~1/C of every conv and linear weight (uneven: blocks differ by one)."""
    def run(comm):
        full = train.run(BASE + ["--steps", "1"], MPI.COMM_SELF).model
        part = train.run(BASE + ["--steps", "1", "--parallel", "channel=2"], comm).model
        sizes = dict((n, p.data.shape[0]) for n, p in part.named_parameters())
        worst = 0
        for n, p in full.named_parameters():
            if n.endswith("weight") and p.data.ndim >= 2:
                worst = max(worst, abs(sizes[n] - p.data.shape[0] / 2))
        return worst
    assert agreed_max(on_ranks(2, run)) <= 0.5


def test_checkpoints_move_between_channel_and_serial(tmp_path_factory):
    """Saved on channel=2 (gathered to the global layout) and resumed on 1 rank, and
    saved on 1 rank and resumed on channel=2 (scattered): both equal 4 uninterrupted
    serial steps, Adam state included."""
    def run(comm):
        root = comm.bcast(str(tmp_path_factory.mktemp("ckpt")) if comm.Get_rank() == 0 else None)
        argv = BASE + ["--optimizer", "adam", "--schedule", "constant"]
        serial = train.run(argv, MPI.COMM_SELF).params
        there, back = ["--checkpoint-dir", root + "/there"], ["--checkpoint-dir", root + "/back"]
        train.run(argv + there + ["--steps", "2", "--parallel", "channel=2"], comm)
        if comm.Get_rank() == 0:
            train.run(argv + back + ["--steps", "2"], MPI.COMM_SELF)
        comm.Barrier()
        resumed = train.run(argv + back + ["--resume", "latest", "--parallel", "channel=2"], comm).params
        diff = max_rel_diff(resumed, serial)
        if comm.Get_rank() == 0:
            diff = max(diff, max_rel_diff(train.run(argv + there + ["--resume", "latest"], MPI.COMM_SELF).params,
                                          serial))
        return diff
    assert agreed_max(on_ranks(2, run)) < 1e-9


def test_emu_channel2_equals_numpy_serial():
    """channel=2 on the emulator backend (the CUDA kernels' code path) equals the serial
    NumPy run in float64; channel counts 3 and 6 of width 3 split unevenly."""
    argv = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000", "--model", "convnet",
            "--width", "3", "--dataset", "shapes:20:64", "--steps", "2", "--batch-size", "6"]

    def run(comm):
        ref = train.run(argv + ["--backend", "numpy"], MPI.COMM_SELF).params
        got = train.run(argv + ["--backend", "emu", "--parallel", "channel=2"], comm).params
        return max_rel_diff(got, ref)
    assert agreed_max(on_ranks(2, run)) < 1e-9
