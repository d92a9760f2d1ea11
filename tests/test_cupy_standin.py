"""The CuPy backend end to end without a GPU, on the CuPy test stand-in (tests/cupy_standin).

The stand-in is imported as ``cupy``, so it must come first on PYTHONPATH: each check runs
in processes of its own. They cover the stand-in's own rules (checks_standin.py), the
kernel suite's cupy parametrisation, the trainer with ``--backend cupy`` on every layout
under mpiexec (checks_train.py: equality with NumPy, transfers per step, a stream sync
before each MPI call on a device buffer, checkpoints across paths), the volume and
segmentation models (checks_volumes.py) and the command line.
"""
import json
import math
import os
import re
import subprocess
import sys

import pytest

from launch import ROOT, mpi_env, run_mpi

STANDIN = os.path.join(ROOT, "tests", "cupy_standin")
PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=900", "--timeout-method=thread")


def standin_env():
    return mpi_env(PYTHONPATH=os.pathsep.join([STANDIN, ROOT]))


def assert_all_passed(proc, at_least):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|error)", proc.stdout)}
    assert counts.get("passed", 0) >= at_least, out[-6000:]
    assert not counts.get("skipped") and not counts.get("xpassed"), out[-6000:]


def test_standin_keeps_cupys_rules():
    proc = subprocess.run([sys.executable, *PYTEST, "tests/cupy_standin/checks_standin.py"], cwd=ROOT,
                          env=standin_env(), capture_output=True, text=True, timeout=600)
    assert_all_passed(proc, 11)


@pytest.mark.slow
def test_kernel_suite_runs_its_cupy_parametrisation_on_the_standin():
    proc = subprocess.run([sys.executable, *PYTEST, "-k", "cupy", "tests/test_kernels.py",
                           "tests/test_kernels_volumes.py", "tests/test_backend_emu.py"], cwd=ROOT, env=standin_env(),
                          capture_output=True, text=True, timeout=900)
    assert_all_passed(proc, 100)


def test_volume_models_on_the_standin():
    """CosmoFlow and U-Net steps on the cupy path run the volume kernels and equal NumPy."""
    proc = subprocess.run([sys.executable, *PYTEST, "tests/cupy_standin/checks_volumes.py"], cwd=ROOT,
                          env=standin_env(), capture_output=True, text=True, timeout=900)
    assert_all_passed(proc, 2)


@pytest.mark.slow
@pytest.mark.parametrize("ranks,select", [(2, "not ps"), (3, "ps")])
def test_trainer_on_the_standin(ranks, select):
    """Serial, data=2, spatial=2x1, channel=2, pipeline=2 on 2 ranks; ps=1 on 3."""
    proc = run_mpi(ranks, *PYTEST, "--with-mpi", "-k", select, "tests/cupy_standin/checks_train.py",
                   timeout=1500, env=standin_env())
    assert_all_passed(proc, 3)


def test_command_line_trains_on_the_standin_and_says_so(tmp_path):
    metrics = tmp_path / "m.jsonl"
    proc = run_mpi(2, "-m", "mpicnn.train", "--backend", "cupy", "--steps", "2", "--batch-size", "16",
                   "--no-progress", "--eval-batch-size", "1000", "--log-every", "1", "--metrics", str(metrics),
                   timeout=600, env=standin_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test accuracy" in proc.stdout
    assert proc.stderr.count("TEST STAND-IN") == 2 and "not a GPU" in proc.stderr  # once per rank
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss"]) for r in steps), records
    assert records[-1]["final"] and 0.0 <= records[-1]["test_accuracy"] <= 1.0, records[-1]
