"""Checkpoint files: round trip, checksum, atomic replace, pruning."""
import os

import h5py
import numpy as np
import pytest

from mpicnn.errors import UserError
from mpicnn.io.checkpoint import (checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint,
                                  prune_checkpoints, save_checkpoint)


def sample(rng=np.random.default_rng(0)):
    params = {"0.weight": rng.standard_normal((4, 3, 3, 3)), "0.bias": rng.standard_normal(4).astype(np.float32)}
    buffers = {"1.running_mean": rng.standard_normal(4), "1.num_batches_tracked": np.array(7, dtype=np.int64)}
    optimizer = {"steps": 5, "params": {"0.weight": {"exp_avg": rng.standard_normal((4, 3, 3, 3))}}}
    return params, buffers, optimizer


def test_round_trip_is_exact(tmp_path):
    params, buffers, optimizer = sample()
    path = save_checkpoint(str(tmp_path / "c.h5"), params, buffers, optimizer, step=12, epoch=1, seed=3,
                           config={"model": "lenet5", "lr": 0.1})
    ckpt = load_checkpoint(path)
    assert ckpt.step == 12 and ckpt.config == {"model": "lenet5", "lr": 0.1}
    for name, a in params.items():
        assert ckpt.params[name].dtype == a.dtype
        np.testing.assert_array_equal(ckpt.params[name], a)
    np.testing.assert_array_equal(ckpt.buffers["1.num_batches_tracked"], 7)
    assert ckpt.optimizer["steps"] == 5
    np.testing.assert_array_equal(ckpt.optimizer["params"]["0.weight"]["exp_avg"],
                                  optimizer["params"]["0.weight"]["exp_avg"])
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_corruption_is_detected(tmp_path):
    path = save_checkpoint(str(tmp_path / "c.h5"), *sample(), step=1)
    with h5py.File(path, "r+") as f:
        f["params/0.bias"][0] += 1
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(path)


def test_truncated_and_foreign_files(tmp_path):
    path = save_checkpoint(str(tmp_path / "c.h5"), *sample(), step=1)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UserError, match="not an mpicnn checkpoint"):
        load_checkpoint(str(other))
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.h5"))


def test_latest_and_prune(tmp_path):
    for step in (10, 30, 20, 40):
        save_checkpoint(checkpoint_path(str(tmp_path), step), *sample(), step=step)
    (tmp_path / "ckpt-00000050.h5.tmp.123").write_bytes(b"half")  # an interrupted write
    assert latest_checkpoint(str(tmp_path)).endswith("ckpt-00000040.h5")
    prune_checkpoints(str(tmp_path), keep=2)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [30, 40]
    assert latest_checkpoint(str(tmp_path / "none")) is None


def test_an_atomic_write_that_fails_leaves_no_folders_behind(tmp_path):
    """io.atomic (every checkpoint, --save, export and converted file): missing parent
    folders are made for the file, and removed again, deepest first, when the write fails;
    a folder that was there stays."""
    from mpicnn.io.atomic import atomic_file
    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "deeper" / "w.bin"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert list((tmp_path / "kept").iterdir()) == []
    with atomic_file(target) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in target.parent.iterdir()] == ["w.bin"]  # no temporary file left
