"""Parameter server (``--parallel ps=K``, ``--staleness s``): with s = 0 the run equals
synchronous data parallelism and the 1-rank run (float64, relative 1e-9); with s > 0
runs finish with one set of final parameters on every rank and learn; checkpoints move
between ps and one rank; stops and non-finite steps end every rank at the same step.

The MPI tests run groups of W workers + K servers: on 2 ranks one worker and one
server, on 4 ranks two workers and one or two servers (the fourth rank idles for K = 1).
"""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from mpi4py import MPI

from launch import mpi_env, run_mpi
from mpicnn import train
from mpicnn.errors import UserError
from mpicnn.io.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint
from mpicnn.parallel.launcher import mpi_command
from mpicnn.parallel.ps import assign_tensors
from contract import BASE as CONTRACT, WORLD, agreed_max, max_rel_diff, on_ranks, serial_params

mpi = pytest.mark.mpi(min_size=2)
BASE = CONTRACT + ["--model", "lenet5", "--steps", "4", "--batch-size", "12"]
SGD = ["--optimizer", "sgd", "--momentum", "0.9"]


def group_size(servers):
    """Ranks of the ps job: K servers and two workers, or one where the world is too small."""
    size = min(WORLD.Get_size(), servers + 2)
    if size < servers + 1:
        pytest.skip(f"ps={servers} needs at least {servers + 1} ranks")
    return size


def shared_dir(comm, factory):
    return comm.bcast(str(factory.mktemp("ps")) if comm.Get_rank() == 0 else None)


def test_tensors_go_to_the_least_loaded_server():
    sizes = [150, 6, 2400, 16, 48000, 120, 10080, 84, 840, 10]  # lenet5
    owner = assign_tensors(sizes, 2)
    load = [sum(s for s, k in zip(sizes, owner) if k == server) for server in range(2)]
    assert owner[4] == 0 and load == [48000, sum(sizes) - 48000]  # the big one alone
    assert assign_tensors([5, 3, 3, 2, 1], 2) == [0, 1, 1, 0, 1]
    assert sorted(assign_tensors([4, 4, 4], 3)) == [0, 1, 2]
    assert assign_tensors([7], 3) == [0]  # servers left without a tensor still take part


@mpi
@pytest.mark.parametrize("servers, extra", [(1, []), (1, SGD), (2, []), (2, SGD),
                                            (1, ["--micro-batches", "2", "--freeze", "0."])],
                         ids=["ps1-adam", "ps1-sgd-momentum", "ps2-adam", "ps2-sgd-momentum", "ps1-micro-freeze"])
def test_staleness0_equals_data_parallel_and_serial(servers, extra):
    """Synchronous SGD through the servers: the 1-rank parameters and, with two workers,
    those of --parallel data=2 on two ranks (frozen tensors: in no server's shard)."""
    n = group_size(servers)
    argv = BASE + extra

    def run(comm):
        serial = serial_params(argv)
        ps = train.run(argv + ["--parallel", f"ps={servers}"], comm).params
        diff = max_rel_diff(ps, serial)
        workers = n - servers
        if workers > 1:
            sub = comm.Split(0 if comm.Get_rank() < workers else MPI.UNDEFINED)
            if sub != MPI.COMM_NULL:
                diff = max(diff, max_rel_diff(ps, train.run(argv + ["--parallel", f"data={workers}"], sub).params))
                sub.Free()
        return diff
    assert agreed_max(on_ranks(n, run)) < 1e-9


@mpi
def test_batchnorm_buffers_are_worker_0s(tmp_path_factory):
    """BatchNorm normalises each worker's piece, as data parallelism does without --sync-bn,
    and the saved running statistics are worker 0's: the --save file of ps equals that of
    --parallel data=W (1 rank when W = 1), parameters and buffers."""
    n = group_size(1)
    workers = n - 1
    argv = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000", "--model", "convnet",
            "--width", "4", "--dataset", "shapes:16:64", "--steps", "3", "--batch-size", "8"]

    def run(comm):
        root = shared_dir(comm, tmp_path_factory)
        train.run(argv + ["--parallel", "ps=1", "--save", root + "/ps.h5"], comm)
        sub = comm.Split(0 if comm.Get_rank() < workers else MPI.UNDEFINED)
        if sub != MPI.COMM_NULL:
            train.run(argv + ["--parallel", f"data={workers}", "--save", root + "/dp.h5"], sub)
            sub.Free()
        comm.Barrier()
        if comm.Get_rank() > 0:
            return 0.0
        ps, dp = load_checkpoint(root + "/ps.h5"), load_checkpoint(root + "/dp.h5")
        buffers = {n: b for n, b in dp.buffers.items() if b.ndim}  # running mean and variance
        return (max(max_rel_diff(ps.params, dp.params), max_rel_diff(ps.buffers, buffers)) + (ps.step != 3)
                + (ps.attrs["task"] != dp.attrs["task"] or ps.attrs["task"] != "classification"))
    assert agreed_max(on_ranks(n, run)) < 1e-9


@mpi
def test_stale_workers_finish_with_one_model_and_learn(tmp_path_factory, monkeypatch):
    """--staleness 2 with worker 1 three times slower: worker 0 really computes on older
    weights (but never more than 2 steps old), every rank ends with the same final
    parameters, and the loss falls."""
    n = group_size(1)
    monkeypatch.setenv("MPICNN_SLOW_RANK", "1:3")

    def run(comm):
        root = shared_dir(comm, tmp_path_factory)
        metrics = os.path.join(root, "m.jsonl")
        argv = ["--no-progress", "--model", "lenet5", "--steps", "30", "--batch-size", "32", "--log-every", "1",
                "--eval-batch-size", "1000", "--parallel", "ps=1", "--staleness", "2", "--metrics", metrics]
        result = train.run(argv, comm)
        mine = result.params
        first = comm.bcast(mine if comm.Get_rank() == 0 else None)
        spread = max_rel_diff(mine, first)
        if comm.Get_rank() > 0:
            return spread
        losses = [r["loss"] for r in map(json.loads, open(metrics)) if "loss" in r and "final" not in r]
        stale = result.summary["mean_staleness"]
        learned = np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])  # ~2.3 -> ~1.9
        bounded = 0 < stale <= 2 if n > 2 else 0 <= stale <= 2  # a lone worker has no straggler to outrun
        return spread + (not learned) + (not bounded) + (len(losses) != 30)
    assert agreed_max(on_ranks(n, run)) == 0


@mpi
@pytest.mark.parametrize("servers", [1, 2])
def test_checkpoints_move_between_ps_and_one_rank(servers, tmp_path_factory):
    """Saved under ps (the servers' shards and Adam state gathered) and resumed on 1 rank,
    and saved on 1 rank and resumed under ps: both equal 4 uninterrupted serial steps."""
    n = group_size(servers)

    def run(comm):
        root = shared_dir(comm, tmp_path_factory)
        argv = BASE + ["--schedule", "constant"]
        serial = serial_params(argv)
        there, back = ["--checkpoint-dir", root + "/there"], ["--checkpoint-dir", root + "/back"]
        train.run(argv + there + ["--steps", "2", "--parallel", f"ps={servers}"], comm)
        if comm.Get_rank() == 0:
            train.run(argv + back + ["--steps", "2"], MPI.COMM_SELF)
        comm.Barrier()
        resumed = train.run(argv + back + ["--resume", "latest", "--parallel", f"ps={servers}"], comm)
        diff = max_rel_diff(resumed.params, serial) + (resumed.step != 4)
        if comm.Get_rank() == 0:
            ckpt = load_checkpoint(latest_checkpoint(root + "/there"))
            diff += (ckpt.step != 2) + (set(ckpt.optimizer["params"]) != set(serial))
            diff = max(diff, max_rel_diff(train.run(argv + there + ["--resume", "latest"], MPI.COMM_SELF).params,
                                          serial))
        return diff
    assert agreed_max(on_ranks(n, run)) < 1e-9


@mpi
@pytest.mark.parametrize("where", ["worker", "server"])
def test_stop_ends_every_rank_after_the_same_step(where, tmp_path_factory, monkeypatch):
    """A stop requested on worker 0 before step 2 (or on the server before it takes step
    2's gradients) ends the run after step 3 on every rank, with a checkpoint of step 3,
    although the other workers may have computed further ahead."""
    n = group_size(1)
    monkeypatch.setenv("MPICNN_INJECT_FAULT", f"term@rank{0 if where == 'worker' else n - 1}:step2")

    def run(comm):
        root = shared_dir(comm, tmp_path_factory)
        argv = BASE + ["--steps", "20", "--parallel", "ps=1", "--staleness", "3", "--checkpoint-dir", root]
        result = train.run(argv, comm)
        wrong = (result.step, result.summary.get("stopped")) != (3, "SIGTERM")
        return wrong + (comm.Get_rank() == 0 and not os.path.exists(checkpoint_path(root, 3)))
    assert agreed_max(on_ranks(n, run)) == 0


@mpi
def error_of(argv, comm):
    """The UserError message of a run, or "" when it finished (asserting on it inside the
    group could strand the other ranks)."""
    try:
        train.run(argv, comm)
    except UserError as e:
        return str(e)
    return ""


@mpi
def test_nonfinite_step_stops_or_is_skipped_on_every_rank(monkeypatch):
    n = group_size(1)
    monkeypatch.setenv("MPICNN_INJECT_FAULT", f"nan@rank{n - 2}:step1")  # the last worker
    argv = BASE + ["--parallel", "ps=1", "--staleness", "1"]

    def run(comm):
        stopped = "not finite at step 1 (epoch 0)" in error_of(argv, comm)
        result = train.run(argv + ["--skip-nonfinite"], comm)
        first = comm.bcast(result.params if comm.Get_rank() == 0 else None)
        return max_rel_diff(result.params, first) + (not stopped) + (result.summary["skipped_steps"] != 1) \
            + (result.step != 4)
    assert agreed_max(on_ranks(n, run)) == 0


@mpi
def test_per_step_worker_collectives_need_staleness_0():
    def run(comm):
        argv = BASE + ["--parallel", "ps=1"]
        return sum("--staleness" not in error_of(argv + extra, comm)
                   for extra in (["--sync-bn", "--staleness", "1"], ["--balance", "dynamic"]))
    assert agreed_max(on_ranks(2, run)) == 0


def launches_mpiexec():
    if WORLD.Get_size() > 1 or os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")


TRAIN = ["-m", "mpicnn.train", "--no-progress", "--parallel", "ps=1", "--staleness", "2", "--batch-size", "32"]


def test_fault_injected_stop_and_nan_end_the_job(tmp_path):
    """Under mpiexec, 3 ranks: a stop ends every rank cleanly after the same step with a
    checkpoint; a non-finite step ends them all with one error line and status 2."""
    launches_mpiexec()
    ckpt = tmp_path / "ck"
    proc = run_mpi(3, *TRAIN, "--steps", "40", "--checkpoint-dir", str(ckpt), timeout=60,
                   env=mpi_env(MPICNN_INJECT_FAULT="term@rank1:step5"))
    assert proc.returncode == 0, proc.stderr
    assert "stopped by SIGTERM after step 6" in proc.stdout
    assert load_checkpoint(latest_checkpoint(str(ckpt))).step == 6
    proc = run_mpi(3, *TRAIN, "--steps", "40", timeout=60, env=mpi_env(MPICNN_INJECT_FAULT="nan@rank0:step3"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mpicnn: error")]
    assert proc.returncode == 2 and errors == [
        "mpicnn: error: the loss or gradients are not finite at step 3 (epoch 0); lower --lr, check the data "
        "for bad values, or pass --skip-nonfinite"], proc.stderr


def test_sigterm_checkpoints_and_resume_continues(tmp_path):
    """A real SIGTERM to mpiexec (forwarded to every rank, servers included) while workers
    run apart: the job stops within seconds at one step, and --resume carries on from it."""
    launches_mpiexec()
    ckpt = tmp_path / "ck"
    cmd = mpi_command(3, *TRAIN, "--epochs", "200", "--checkpoint-dir", str(ckpt))
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=mpi_env(MPICNN_SLOW_RANK="1:2"))
    time.sleep(6)
    t0 = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0 and time.monotonic() - t0 < 30, err
    step = load_checkpoint(latest_checkpoint(str(ckpt))).step
    assert step > 0 and f"stopped by SIGTERM after step {step}" in out
    proc = run_mpi(3, *TRAIN, "--steps", str(step + 2), "--checkpoint-dir", str(ckpt), "--resume", timeout=60)
    assert proc.returncode == 0 and f"at step {step}" in proc.stdout, proc.stderr
