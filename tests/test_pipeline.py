"""Pipeline parallelism (--parallel pipeline=S): parameters equal the 1-rank run with the
same --micro-batches (float64, relative 1e-9) for both schedules, with data ranks, with
BatchNorm and residual models; checkpoints move between a pipeline and one rank. Pure
parts (the schedule, the stage cut) are tested without MPI."""
import itertools
import random

import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import models, nn, train
from mpicnn.errors import UserError
from mpicnn.parallel.pipeline_schedule import schedule
from mpicnn.parallel.stage_balance import partition
from mpicnn.straggler import Straggler
from contract import BASE as CONTRACT, agreed_max, max_rel_diff, on_ranks, serial_params

mpi = pytest.mark.mpi(min_size=2)
BASE = CONTRACT + ["--steps", "4", "--batch-size", "32"]
LENET = BASE + ["--model", "lenet5"]
CONVNET = BASE + ["--model", "convnet", "--width", "4", "--dataset", "shapes:32"]
RESNET = BASE + ["--model", "resnet8", "--width", "4", "--dataset", "shapes:32"]


def compare(argv, spec):
    """Parameters and test accuracy of ``spec`` against the 1-rank run of ``argv``."""
    def run(comm):
        serial = train.run(argv, MPI.COMM_SELF)
        parallel = train.run(argv + ["--parallel", spec], comm)
        assert set(parallel.params) == set(serial.params)
        return max(max_rel_diff(parallel.params, serial.params),
                   abs(parallel.summary["test_accuracy"] - serial.summary["test_accuracy"]))
    return run


# ---- pure: the schedule and the cut ------------------------------------------------------
def replay(kind, stages, micro_batches):
    """Run every stage's actions as the messages allow (a stage waits only for what it
    receives); return the most micro-batches any stage held between forward and backward."""
    plans = [schedule(kind, stages, s, micro_batches) for s in range(stages)]
    every = sorted((k, m) for k in "FB" for m in range(micro_batches))
    assert all(sorted(plan) == every for plan in plans)
    done, at, held, peak = set(), [0] * stages, [0] * stages, 0
    while any(at[s] < len(plans[s]) for s in range(stages)):
        moved = False
        for s in range(stages):
            if at[s] == len(plans[s]):
                continue
            kind_, m = plans[s][at[s]]
            needs = [("F", s - 1, m)] if kind_ == "F" and s > 0 else []
            if kind_ == "B":
                needs = [("F", s, m)] + ([("B", s + 1, m)] if s < stages - 1 else [])
            if all(n in done for n in needs):
                done.add((kind_, s, m))
                held[s] += 1 if kind_ == "F" else -1
                peak = max(peak, held[s])
                at[s] += 1
                moved = True
        assert moved, f"{kind} with {stages} stages and {micro_batches} micro-batches deadlocks"
    return peak


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_schedules_run_to_the_end_in_dependency_order(kind):
    for stages, micro in itertools.product(range(1, 6), range(1, 8)):
        peak = replay(kind, stages, micro)
        assert peak == (micro if kind == "gpipe" else min(stages, micro)), (stages, micro)


def test_1f1b_alternates_after_warm_up():
    assert schedule("1f1b", 3, 0, 4) == [("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1),
                                         ("B", 2), ("B", 3)]
    assert schedule("1f1b", 3, 2, 2) == [("F", 0), ("B", 0), ("F", 1), ("B", 1)]
    with pytest.raises(ValueError, match="unknown pipeline schedule"):
        schedule("zigzag", 2, 0, 2)


def test_partition_balances_time_not_layer_count():
    assert partition([1, 1, 1, 1, 4], [0] * 5, 2) == [(0, 4), (4, 5)]
    assert partition([3, 1, 1, 1], [0] * 4, 3) == [(0, 1), (1, 2), (2, 4)]
    # Two cuts tie on time (1 and 1); the one with the lighter largest stage wins.
    assert partition([1, 0, 1], [5, 1, 1], 2) == [(0, 1), (1, 3)]
    assert partition([1, 0, 1], [1, 1, 5], 2) == [(0, 2), (2, 3)]
    with pytest.raises(ValueError, match="3 non-empty stages"):
        partition([1, 1], [1, 1], 3)


def test_partition_against_every_cut():
    rng = random.Random(7)
    for _ in range(300):
        n, stages = rng.randint(1, 7), rng.randint(1, 4)
        if stages > n:
            continue
        times = [rng.choice([0.0, 1.0, 2.0, rng.random()]) for _ in range(n)]
        memory = [rng.randint(0, 9) for _ in range(n)]
        cuts = []
        for inner in itertools.combinations(range(1, n), stages - 1):
            edges = (0,) + inner + (n,)
            runs = list(zip(edges, edges[1:]))
            cuts.append((max(sum(times[a:b]) for a, b in runs), max(sum(memory[a:b]) for a, b in runs), runs))
        fastest = min(c[0] for c in cuts)
        got = partition(times, memory, stages, tolerance=0.05)
        time_of = max(sum(times[a:b]) for a, b in got)
        assert [a for a, _ in got] == sorted({a for a, _ in got}) and got[0][0] == 0 and got[-1][1] == n
        assert time_of <= fastest * 1.05 + 1e-12
        assert max(sum(memory[a:b]) for a, b in got) == min(c[1] for c in cuts if c[0] <= fastest * 1.05)
        assert max(sum(times[a:b]) for a, b in partition(times, memory, stages, tolerance=0.0)) == fastest


# ---- under MPI: the correctness contract and the rest ------------------------------------
@mpi
@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_two_stages_equal_serial(kind):
    argv = LENET + ["--micro-batches", "4", "--pipeline-schedule", kind]
    assert agreed_max(on_ranks(2, compare(argv, "pipeline=2"))) < 1e-9


@pytest.mark.mpi(min_size=4)
def test_data2_pipeline2_equals_serial():
    assert agreed_max(on_ranks(4, compare(LENET + ["--micro-batches", "4"], "data=2,pipeline=2"))) < 1e-9


@pytest.mark.mpi(min_size=4)
def test_dynamic_balance_across_pipelines_equals_serial(monkeypatch):
    """A slow stage (rank 1: data index 0, stage 1) makes its whole pipeline slow: the
    balancer moves samples to the other pipeline, and the result is still the 1-rank run."""
    monkeypatch.setenv("MPICNN_SLOW_RANK", "1:3.0")
    argv = LENET + ["--micro-batches", "2", "--balance", "dynamic", "--balance-every", "1"]
    assert agreed_max(on_ranks(4, compare(argv, "data=2,pipeline=2"))) < 1e-9


@mpi
@pytest.mark.parametrize("micro", [1, 3])  # fewer and more micro-batches than stages
def test_batchnorm_model_equals_serial_with_the_same_micro_batches(micro):
    argv = CONVNET + ["--micro-batches", str(micro), "--optimizer", "sgd", "--momentum", "0.9"]
    assert agreed_max(on_ranks(2, compare(argv, "pipeline=2"))) < 1e-9


@pytest.mark.mpi(min_size=4)
def test_four_stage_resnet_with_fewer_micro_batches_equals_serial():
    assert agreed_max(on_ranks(4, compare(RESNET + ["--micro-batches", "2"], "pipeline=4"))) < 1e-9


@mpi
def test_stages_hold_their_layers_and_report_their_figures():
    """Each rank keeps only its stage's parameters (together: all of them), and the
    summary has the cut, the busy time and the bubble of every stage."""
    def run(comm):
        result = train.run(LENET + ["--micro-batches", "4", "--parallel", "pipeline=2"], comm)
        owners = comm.allgather({n for n, _ in result.model.named_parameters()})
        figures = result.summary["pipeline"]
        (lo0, hi0), (lo1, hi1) = figures["layers"]
        checks = [not owners[0] & owners[1], owners[0] | owners[1] == set(result.params),
                  (lo0, hi0, hi1) == (0, lo1, 12), figures["bubble_ideal"] == 1 / 5,
                  all(0 <= b < 1 for b in figures["bubble"]), min(figures["busy_ms_per_step"]) > 0]
        return float(not all(checks))
    assert agreed_max(on_ranks(2, run)) == 0


@mpi
def test_straggler_switch_stretches_its_stage(monkeypatch):
    """MPICNN_SLOW_RANK stretches every forward and backward of that rank's stage: here
    by a pretended 0.5 s each (no sleep), 8 of them per step with 4 micro-batches."""
    monkeypatch.setenv("MPICNN_SLOW_RANK", "1:2")
    monkeypatch.setattr(Straggler, "after", lambda self, seconds: 0.5 if self.factor > 1 else 0.0)

    def run(comm):
        busy = train.run(LENET + ["--micro-batches", "4", "--parallel", "pipeline=2"],
                         comm).summary["pipeline"]["busy_ms_per_step"]
        return float(not (busy[0] < 1000 and 4000 < busy[1] < 5000))
    assert agreed_max(on_ranks(2, run)) == 0


@mpi
def test_checkpoints_move_between_pipeline_and_serial(tmp_path_factory):
    """Saved on pipeline=2 (stages gathered: parameters, BatchNorm buffers, Adam state)
    and resumed on 1 rank, and saved on 1 rank and resumed on pipeline=2: both equal 4
    uninterrupted serial steps."""
    def run(comm):
        root = comm.bcast(str(tmp_path_factory.mktemp("ckpt")) if comm.Get_rank() == 0 else None)
        argv = CONVNET + ["--micro-batches", "2", "--optimizer", "adam", "--schedule", "constant"]
        serial = serial_params(argv)
        there, back = ["--checkpoint-dir", root + "/there"], ["--checkpoint-dir", root + "/back"]
        train.run(argv + there + ["--steps", "2", "--parallel", "pipeline=2"], comm)
        if comm.Get_rank() == 0:
            train.run(argv + back + ["--steps", "2"], MPI.COMM_SELF)
        comm.Barrier()
        resumed = train.run(argv + back + ["--resume", "latest", "--parallel", "pipeline=2"], comm).params
        diff = max_rel_diff(resumed, serial)
        if comm.Get_rank() == 0:
            diff = max(diff, max_rel_diff(train.run(argv + there + ["--resume", "latest"], MPI.COMM_SELF).params,
                                          serial))
        return diff
    assert agreed_max(on_ranks(2, run)) < 1e-9


@mpi
def test_nan_on_the_last_stage_skips_the_step_everywhere(monkeypatch):
    """A NaN injected on the last stage alone: every rank skips that step, as the 1-rank
    run with the fault does."""
    def run(comm):
        argv = LENET + ["--micro-batches", "2", "--skip-nonfinite"]
        monkeypatch.setenv("MPICNN_INJECT_FAULT", "nan@rank0:step1")
        serial = train.run(argv, MPI.COMM_SELF)
        monkeypatch.setenv("MPICNN_INJECT_FAULT", "nan@rank1:step1")
        parallel = train.run(argv + ["--parallel", "pipeline=2"], comm)
        skipped = (serial.summary["skipped_steps"], parallel.summary["skipped_steps"])
        return max_rel_diff(parallel.params, serial.params) + (skipped != (1, 1))
    assert agreed_max(on_ranks(2, run)) < 1e-9


@mpi
@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(784, 10, dtype=np.float64)), "pipeline=2 needs at least 2 layers"),
    (nn.Linear(784, 10, dtype=np.float64), "cuts a Sequential into stages"),
])
def test_models_that_cannot_be_cut_are_refused(monkeypatch, model, message):
    monkeypatch.setattr(models, "get", lambda *args, **kwargs: model)

    def run(comm):
        with pytest.raises(UserError, match=message):
            train.run(LENET + ["--parallel", "pipeline=2"], comm)
        return 0.0
    assert agreed_max(on_ranks(2, run)) == 0
