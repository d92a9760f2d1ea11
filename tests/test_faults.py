"""Failure modes a user meets on a cluster, each as the user sees it (mpiexec -n 2)."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launch import mpi_env, run_mpi
from mpicnn.io.checkpoint import latest_checkpoint, load_checkpoint
from mpicnn.parallel.launcher import mpi_command

TRAIN = ["-m", "mpicnn.train", "--no-progress", "--batch-size", "32"]


def timed_run(*args, fault=None, timeout=60):
    env = mpi_env(MPICNN_INJECT_FAULT=fault) if fault else mpi_env()
    t0 = time.monotonic()
    proc = run_mpi(2, *args, env=env, timeout=timeout)
    return proc, time.monotonic() - t0


def test_exception_on_one_rank_aborts_the_job():
    proc, seconds = timed_run(*TRAIN, "--steps", "50", fault="raise@rank1:step3")
    assert proc.returncode != 0 and seconds < 30
    assert "[rank 1]" in proc.stderr and "InjectedFault" in proc.stderr
    assert "injecting fault 'raise' on rank 1 at step 3" in proc.stderr


@pytest.mark.parametrize("kind", ["raise", "kill"])
def test_failing_parameter_server_ends_the_job(kind):
    """Rank 1 is the server of ps=1 on 2 ranks: its failure must end the worker too."""
    proc, seconds = timed_run(*TRAIN, "--steps", "50", "--parallel", "ps=1", "--staleness", "2",
                              fault=f"{kind}@rank1:step3")
    assert proc.returncode != 0 and seconds < 30
    assert f"injecting fault '{kind}' on rank 1 at step 3" in proc.stderr


def test_killed_rank_ends_the_job():
    proc, seconds = timed_run(*TRAIN, "--steps", "50", fault="kill@rank1:step3")
    assert proc.returncode != 0 and seconds < 30


def test_nan_loss_stops_with_the_step_or_is_skipped(tmp_path):
    proc, _ = timed_run(*TRAIN, "--steps", "6", fault="nan@rank0:step2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("mpicnn: error: the loss or gradients are not finite at step 2")
    metrics = tmp_path / "m.jsonl"
    proc, _ = timed_run(*TRAIN, "--steps", "6", "--skip-nonfinite", "--metrics", str(metrics), fault="nan@rank1:step2")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all("time" in r for r in records)
    untimed = [{k: v for k, v in r.items() if k != "time"} for r in records]
    assert {"step": 3, "epoch": 0, "skipped": True} in untimed and records[-1]["skipped_steps"] == 1


def test_bad_fault_spec_is_a_user_error():
    proc, _ = timed_run(*TRAIN, "--steps", "2", fault="explode@step1")
    assert proc.returncode == 2 and "MPICNN_INJECT_FAULT" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_resume_continues(tmp_path, signum):
    ckpt = tmp_path / "ck"
    cmd = mpi_command(2, *TRAIN, "--epochs", "200", "--checkpoint-dir", str(ckpt))
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env())
    time.sleep(6)  # let it train for a while
    t0 = time.monotonic()
    launcher.send_signal(signum)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0 and time.monotonic() - t0 < 30, err
    assert f"stopped by {signum.name}" in out
    step = load_checkpoint(latest_checkpoint(str(ckpt))).step
    assert step > 0
    proc = run_mpi(2, *TRAIN, "--epochs", "200", "--steps", str(step + 2), "--checkpoint-dir", str(ckpt), "--resume")
    assert proc.returncode == 0 and f"at step {step}" in proc.stdout


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    """SIGKILL in the middle of writing the second checkpoint: the first still loads."""
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np, h5py
        from mpicnn.io.checkpoint import save_checkpoint, checkpoint_path
        params = {{f"w{{i}}": np.full(1000, i, float) for i in range(10)}}
        save_checkpoint(checkpoint_path({str(tmp_path)!r}, 1), params, step=1)
        real, count = h5py.Group.create_dataset, [0]
        def dying(self, *a, **k):
            count[0] += 1
            if count[0] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, *a, **k)
        h5py.Group.create_dataset = dying
        save_checkpoint(checkpoint_path({str(tmp_path)!r}, 2), params, step=2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert any(".tmp." in p.name for p in tmp_path.iterdir())  # the interrupted write
    ckpt = load_checkpoint(latest_checkpoint(str(tmp_path)))
    assert ckpt.step == 1 and ckpt.params["w9"][0] == 9
