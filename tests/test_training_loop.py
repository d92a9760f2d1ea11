"""The one training loop: every phase of a step passes through the layout's PhaseClock,
in order, and its hooks see them (the attachment point for traces)."""
import pytest
from mpi4py import MPI

from contract import agreed_max, on_ranks
from mpicnn import train
from mpicnn.training.phases import PHASES, PhaseClock

ARGV = ["--model", "lenet5", "--steps", "4", "--batch-size", "16", "--no-progress", "--eval-every", "2",
        "--checkpoint-every", "2", "--eval-batch-size", "500"]


def test_phase_clock_times_and_calls_hooks():
    clock, seen = PhaseClock(), []
    clock.hooks.append(lambda *event: seen.append(event))
    clock.start_step(3)
    with clock.phase("forward"):
        pass
    with clock.phase("forward"):
        pass
    assert [(name, step) for name, step, _, _ in seen] == [("forward", 3), ("forward", 3)]
    assert all(start <= end for _, _, start, end in seen)
    assert clock.seconds["forward"] == pytest.approx(sum(end - start for _, _, start, end in seen))
    clock.start_step(4)
    assert set(clock.seconds.values()) == {0.0}
    with pytest.raises(ValueError, match="unknown phase 'fwd'"):
        clock.phase("fwd")


def test_every_phase_reaches_the_hook(tmp_path):
    events = []
    result = train.run(ARGV + ["--checkpoint-dir", str(tmp_path)], MPI.COMM_SELF,
                       phase_hooks=[lambda *event: events.append(event)])
    assert result.step == 4
    assert {name for name, *_ in events} == set(PHASES)
    for step in range(4):
        names = [name for name, s, *_ in events if s == step]
        # within a step the phases come in the loop's order, none missing
        assert names[:5] == ["data", "forward", "backward", "exchange", "optimizer"], names
    assert [s for name, s, *_ in events if name == "evaluation"] == [1, 3]  # after steps 2 and 4
    assert [s for name, s, *_ in events if name == "checkpoint"] == [1, 3]
    starts = [start for _, _, start, _ in events]
    assert starts == sorted(starts)  # phases do not overlap: each starts after the previous began


def _phase_names(comm, parallel, extra):
    events = []
    train.run(["--model", "lenet5", "--steps", "3", "--batch-size", "16", "--no-progress", "--parallel", parallel]
              + extra, comm, phase_hooks=[lambda *e: events.append(e)])
    return {name for name, *_ in events}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("parallel, extra", [("data=2", []), ("pipeline=2", ["--micro-batches", "2"]),
                                             ("ps=1", [])])
def test_phases_on_every_layout(parallel, extra):
    """Grid, pipeline and parameter-server roles all run the same loop and report phases
    (a server's step is its exchange with the workers)."""
    def missing(comm):
        names = _phase_names(comm, parallel, extra)
        server = parallel == "ps=1" and comm.Get_rank() == 1
        want = {"exchange", "optimizer"} if server else {"data", "forward", "backward", "exchange"}
        return float(len(want - names))
    assert agreed_max(on_ranks(2, missing)) == 0
