"""The trainer's outputs are checked at start-up: none may write over an input or another
output, and each must be writable where it goes, so a bad path is one error line and exit
status 2 on every rank, with every file as it was, not a lost dataset, a traceback, or a
run that fails at its end."""
import hashlib
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from mpi4py import MPI

from launch import ROOT
from mpicnn import train
from mpicnn.config import check_outputs
from mpicnn.data import write_dataset
from mpicnn.errors import UserError
from mpicnn.io.checkpoint import load_checkpoint
from mpicnn.parallel.launcher import mpi_command, mpi_env

RUN = ["--model", "convnet", "--width", "4", "--steps", "2", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A dataset, a checkpoint of it, a config file, a non-checkpoint HDF5 file."""
    d = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(3)
    split = lambda n: (rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8), rng.integers(0, 5, n))  # noqa: E731
    write_dataset(d / "data.h5", {"train": split(40), "test": split(10)}, num_classes=5)
    write_dataset(d / "other.h5", {"train": split(8)}, num_classes=5)
    train.run([*RUN, "--dataset", str(d / "data.h5"), "--save", str(d / "ckpt.h5")], MPI.COMM_SELF)
    (d / "run.toml").write_text("log-every = 1\n")
    return d


def snapshot(directory):
    """Every path under ``directory`` with its content's digest (None for a directory)."""
    out = {}
    for root, dirs, names in os.walk(directory):
        for name in dirs + names:
            path = os.path.join(root, name)
            out[path] = None if os.path.isdir(path) else hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def train_on_two_ranks(directory, *args):
    """``mpiexec -n 2 python -m mpicnn.train RUN args`` in ``directory``: (the launcher's
    result, {rank: its own exit status}, as each rank's wrapper process saw it)."""
    # close_fds=False: the rank inherits the launcher's PMI socket.
    code = ("import os, subprocess, sys; status = subprocess.call(sys.argv[1:], close_fds=False); "
            "open(os.path.join(os.environ['EXITS'], os.environ['PMI_RANK']), 'w').write(str(status))")
    exits = directory.parent / (directory.name + "-exits")
    exits.mkdir()
    command = mpi_command(2, "-c", code, sys.executable, "-m", "mpicnn.train", *RUN, *args)
    env = mpi_env(EXITS=str(exits), PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=directory)
    status = {int(name): int((exits / name).read_text()) for name in os.listdir(exits)}
    return proc, status


# (extra arguments, words of the error line); data.h5 is the dataset.
CASES = [
    (["--save", "data.h5"], ["--save 'data.h5' is the same file as --dataset", "choose another --save"]),
    (["--metrics", "data.h5"], ["--metrics 'data.h5' is the same file as --dataset"]),
    (["--save", "link.h5"], ["--save 'link.h5' is the same file as --dataset"]),
    (["--checkpoint-dir", "data.h5"], ["--checkpoint-dir 'data.h5' is the same file as --dataset"]),
    (["--trace", "data.h5"], ["--trace 'data.h5' is the same file as --dataset"]),
    (["--tensorboard", "data.h5"], ["--tensorboard 'data.h5' is the same file as --dataset"]),
    (["--init-from", "ckpt.h5", "--save", "ckpt.h5"], ["--save 'ckpt.h5' is the same file as --init-from"]),
    (["--resume", "ckpt.h5", "--steps", "3", "--save", "ckpt.h5"], ["--save 'ckpt.h5' is the same file as --resume"]),
    (["--config", "run.toml", "--metrics", "run.toml"], ["--metrics 'run.toml' is the same file as --config"]),
    (["--save", "other.h5"], ["--save 'other.h5' exists and is not an mpicnn checkpoint", "choose another path"]),
    (["--metrics", "other.h5"], ["--metrics 'other.h5' exists and is not a metrics log", "choose another path"]),
    (["--save", "new.h5", "--metrics", "new.h5"], ["--save and --metrics are both 'new.h5'"]),
    (["--metrics", "empty"], ["--metrics 'empty' is a directory", "empty/metrics.jsonl"]),
    (["--save", "empty"], ["--save 'empty' is a directory", "empty/model.h5"]),
    (["--checkpoint-dir", "other.h5"], ["--checkpoint-dir 'other.h5' is a file, not a directory"]),
    (["--save", "other.h5/model.h5"], ["--save 'other.h5/model.h5'", "other.h5 is a file, not a directory"]),
    (["--metrics", "/proc/m.jsonl"], ["--metrics '/proc/m.jsonl': cannot create files in /proc"]),
    (["--tensorboard", "/proc/tb"], ["--tensorboard '/proc/tb': cannot create files in /proc"]),
    (["--trace", "/proc/tr"], ["--trace '/proc/tr': cannot create files in /proc"]),
    (["--save", "/proc/x.h5"], ["--save '/proc/x.h5': cannot create files in /proc", "writable location"]),
    (["--checkpoint-dir", "/proc/ck"], ["--checkpoint-dir '/proc/ck': cannot create files in /proc"]),
]


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_output_is_refused_at_start_on_every_rank(files, tmp_path, args, words):
    shutil.copytree(files, tmp_path, dirs_exist_ok=True)  # a run directory, with relative names as users type
    (tmp_path / "empty").mkdir()
    (tmp_path / "link.h5").symlink_to("data.h5")
    before = snapshot(tmp_path)
    proc, status = train_on_two_ranks(tmp_path, "--dataset", "data.h5", *args)
    lines = proc.stderr.strip().splitlines()
    assert status == {0: 2, 1: 2}, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("mpicnn: error: "), proc.stderr
    for w in words:
        assert w in lines[0]
    assert proc.stdout == ""  # refused before training
    assert snapshot(tmp_path) == before  # nothing written, nothing left behind


def test_save_replaces_an_earlier_save_and_creates_missing_directories(files, tmp_path):
    """Rerunning with the same --save and --metrics is the normal case: only a file of another kind is
    refused."""
    earlier = tmp_path / "model.h5"
    earlier.write_bytes((files / "ckpt.h5").read_bytes())
    train.run([*RUN, "--steps", "3", "--dataset", str(files / "data.h5"), "--save", str(earlier),
               "--metrics", str(tmp_path / "new" / "m.jsonl")], MPI.COMM_SELF)
    assert load_checkpoint(str(earlier)).step == 3
    assert (tmp_path / "new" / "m.jsonl").exists()
    train.run([*RUN, "--dataset", str(files / "data.h5"), "--metrics", str(tmp_path / "new" / "m.jsonl")],
              MPI.COMM_SELF)  # an earlier metrics log is replaced too
    log = (tmp_path / "new" / "m.jsonl").read_text()
    assert '"steps": 2' in log and '"steps": 3' not in log


def test_only_the_reporting_rank_checks_metrics_and_tensorboard():
    """The other ranks write neither, and may not see the reporting rank's directories."""
    args = SimpleNamespace(dataset="mnist5k", init_from=None, config=None, machine=None, resume=None, save=None,
                           checkpoint_dir=None, trace=None, metrics="/proc/m.jsonl", tensorboard="/proc/tb")
    check_outputs(args, reports=False)
    with pytest.raises(UserError, match="--metrics '/proc/m.jsonl': cannot create files"):
        check_outputs(args, reports=True)
