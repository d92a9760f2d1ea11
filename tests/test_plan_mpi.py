"""``--parallel auto`` under MPI: it equals the 1-rank run like any layout (float64,
1e-9), prints its choice and predicted vs measured step time, and runs without a
machine file (quick calibration); and every layout the planner lists for 2 ranks is one
the trainer runs."""
import json
import os
import tempfile

import pytest

from mpicnn import train
from mpicnn.plan import Machine, Problem, plan
from contract import BASE as CONTRACT, agreed_max, max_rel_diff, on_ranks, serial_params
from test_plan import ROOFLINE

mpi = pytest.mark.mpi(min_size=2)
LENET = CONTRACT + ["--steps", "3", "--batch-size", "32", "--model", "lenet5"]


def machine_file(spec=ROOFLINE):
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    return path


def micro_batches(flags):
    words = flags.split()
    return int(words[words.index("--micro-batches") + 1]) if "--micro-batches" in words else 1


@mpi
@pytest.mark.parametrize("link", [{"alpha": 5e-6, "beta": 3e-10}, {"alpha": 1.0, "beta": 1e-3}])
def test_auto_equals_one_rank(link, capsys):
    """Cheap messages and messages so dear that no layout that talks wins: both choices
    give the 1-rank parameters (with the chosen --micro-batches)."""
    def run(comm):
        path = machine_file({**ROOFLINE, "intra": link})
        try:
            result = train.run(LENET + ["--parallel", "auto", "--machine", path], comm)
        finally:
            os.remove(path)
        auto = result.summary["auto_layout"]
        assert auto["predicted_step_seconds"] > 0 and auto["measured_step_seconds"] > 0
        serial = serial_params(LENET + ["--micro-batches", str(micro_batches(auto["flags"]))])
        return max_rel_diff(result.params, serial)
    assert agreed_max(on_ranks(2, run)) < 1e-9
    out = capsys.readouterr().out
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 0:
        assert "--parallel auto chose --parallel " in out and "--parallel auto: predicted" in out


@mpi
def test_auto_without_a_machine_file_calibrates_quickly(monkeypatch):
    monkeypatch.delenv("MPICNN_MACHINE", raising=False)

    def run(comm):
        result = train.run(LENET + ["--parallel", "auto"], comm)
        serial = serial_params(LENET + ["--micro-batches", str(micro_batches(result.summary["auto_layout"]["flags"]))])
        return max_rel_diff(result.params, serial)
    assert agreed_max(on_ranks(2, run)) < 1e-9


@mpi
def test_every_layout_listed_for_two_ranks_runs():
    argv = ["--model", "convnet", "--width", "4", "--dataset", "shapes:16", "--batch-size", "8", "--steps", "1",
            "--no-progress", "--eval-batch-size", "8"]
    listed = plan(Problem("convnet", "shapes:16", 8, width=4, eval_batch_size=8), 2, Machine(ROOFLINE))
    assert len(listed) >= 10

    def run(comm):
        for p in listed:
            layout = p.layout
            train.run(argv + ["--parallel", layout.parallel, "--micro-batches", str(layout.micro_batches),
                              "--channel-split", layout.channel_split], comm)
        return 0.0
    assert agreed_max(on_ranks(2, run)) == 0.0


@mpi
def test_channel_calls_are_timed_as_the_layers_issue_them():
    """``link_timing.time_channel_ops`` times the channel layers' own calls: every op, at
    every width and size, the same figures on every rank, and an allgather (fresh
    buffers, blocks laid out and back) dearer than the block copy alone."""
    from mpi4py import MPI
    from mpicnn.parallel.link_timing import CHANNEL_OPS, time_channel_ops
    comm = MPI.COMM_WORLD
    rows = time_channel_ops(comm, widths=(6, 32), sizes=(1 << 12, 1 << 18), repeats=2)
    assert set(rows) == set(CHANNEL_OPS)
    for op in CHANNEL_OPS:
        assert sorted(rows[op]) == [6, 32]
        for width, points in rows[op].items():
            assert [n for n, _ in points] == [(1 << 12) // 4 // width * width * 4, (1 << 18) // 4 // width * width * 4]
            assert all(t > 0 for _, t in points)
    assert comm.allgather(rows) == [rows] * comm.Get_size()
    assert rows["allgather"][6][1][1] > rows["block"][6][1][1]


@mpi
def test_halo_calls_are_timed_as_the_layers_issue_them():
    """``link_timing.time_halo``: forward and backward of a row split's halo call at every
    size, the block's bytes, the same figures on every rank."""
    from mpi4py import MPI
    from mpicnn.parallel.link_timing import time_halo
    comm = MPI.COMM_WORLD
    rows = time_halo(comm, sizes=(1 << 14, 1 << 17), repeats=1)
    assert sorted(rows) == ["backward", "forward"]
    for points in rows.values():
        assert [n for n, _ in points] == [1 << 14, 1 << 17]  # 4 samples x 2 and 16 rows x 32 x 16
        assert all(t > 0 for _, t in points)
    assert comm.allgather(rows) == [rows] * comm.Get_size()
