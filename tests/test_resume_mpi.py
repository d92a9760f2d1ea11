"""Preempt-and-resume on several ranks equals the uninterrupted run, bitwise (float64)."""
import os
import shutil
import tempfile

import numpy as np
import pytest

from mpicnn import train
from contract import WORLD, params_of

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.fixture
def shared_dir():
    path = WORLD.bcast(tempfile.mkdtemp() if WORLD.Get_rank() == 0 else None)
    yield path
    WORLD.Barrier()
    if WORLD.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("model", ["lenet5", "convnet"])
def test_stop_at_10_resume_to_20_is_bitwise(shared_dir, monkeypatch, model):
    argv = ["--model", model, "--dtype", "float64", "--steps", "20", "--batch-size", "30", "--no-progress",
            "--optimizer", "sgd", "--momentum", "0.9", "--eval-batch-size", "1000"]
    if model == "convnet":
        argv += ["--width", "4", "--dataset", "shapes:16:120", "--sync-bn"]
    straight = params_of(train.run(argv, WORLD))
    ckpt = os.path.join(shared_dir, "ck")
    monkeypatch.setenv("MPICNN_INJECT_FAULT", "term@step9")  # a preemption after step 10
    stopped = train.run(argv + ["--checkpoint-dir", ckpt], WORLD)
    monkeypatch.delenv("MPICNN_INJECT_FAULT")
    resumed = train.run(argv + ["--checkpoint-dir", ckpt, "--resume"], WORLD)
    mismatched = [n for n, v in straight.items() if not np.array_equal(params_of(resumed)[n], v)]
    assert WORLD.allreduce(len(mismatched)) == 0, mismatched
    assert (stopped.step, resumed.step) == (10, 20)
