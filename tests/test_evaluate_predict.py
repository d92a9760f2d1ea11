"""``python -m mpicnn.evaluate`` and ``mpicnn.predict`` on a trained checkpoint: the same
figures as the trainer's final evaluation, on any layout."""
import os
import subprocess
import sys

import numpy as np
import pytest
from mpi4py import MPI

from contract import agreed_max, on_ranks
from mpicnn import data, evaluate, predict, train
from mpicnn.errors import UserError

ARGV = ["--model", "lenet5", "--steps", "6", "--batch-size", "16", "--no-progress", "--seed", "3"]


def trained(directory):
    """(final summary, checkpoint path) of a short run that writes its final checkpoint."""
    summary = train.run(ARGV + ["--checkpoint-dir", str(directory)], MPI.COMM_SELF).summary
    return summary, os.path.join(directory, sorted(os.listdir(directory))[-1])


def test_evaluate_and_predict_agree_with_the_trainer(tmp_path):
    summary, ckpt = trained(tmp_path)
    accuracy, loss, n = evaluate.evaluate([ckpt], MPI.COMM_SELF)
    assert (accuracy, loss, n) == (summary["test_accuracy"], summary["test_loss"], 1000)
    out = tmp_path / "p.npy"
    predict.main([ckpt, "mnist5k", "-o", str(out)])
    probs = np.load(out)
    test = data.open_dataset("mnist5k", "test")
    assert probs.shape == (1000, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert np.count_nonzero(probs.argmax(1) == test.labels[:]) / 1000 == summary["test_accuracy"]
    # the same images from a .npy file (uint8 scaled as the trainer reads them)
    images = np.round(test.read(np.arange(50))[0] * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    predict.main([ckpt, str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.npy")])
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), probs[:50], atol=1e-6)
    test.close()


def test_bad_inputs_are_one_line(tmp_path):
    _, ckpt = trained(tmp_path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "flat.npy", np.zeros((4, 28 * 28), np.float32))
    np.save(tmp_path / "rgb.npy", np.zeros((4, 3, 28, 28), np.float32))
    for given, message in (("obj.npy", "cannot read"), ("flat.npy", "predict takes images (N, C, H, W)"),
                           ("rgb.npy", "do not fit the model")):
        proc = subprocess.run([sys.executable, "-m", "mpicnn.predict", ckpt, str(tmp_path / given), "-o",
                               str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert not (tmp_path / "out.npy").exists()
    with pytest.raises(UserError, match="no such file"):
        predict.read_images(str(tmp_path / "none.h5"), "test")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("parallel", ["data=2", "pipeline=2"])
def test_evaluate_on_a_layout_equals_one_rank(parallel, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt") if MPI.COMM_WORLD.Get_rank() == 0 else None
    directory = MPI.COMM_WORLD.bcast(str(directory) if directory else None)
    if MPI.COMM_WORLD.Get_rank() == 0:
        trained(directory)
    MPI.COMM_WORLD.Barrier()
    ckpt = os.path.join(directory, sorted(os.listdir(directory))[-1])
    accuracy, loss, _ = evaluate.evaluate([ckpt], MPI.COMM_SELF)

    def differs(comm):
        a, l, _ = evaluate.evaluate([ckpt, "--parallel", parallel], comm)
        return abs(a - accuracy) + abs(l - loss) / loss
    assert agreed_max(on_ranks(2, differs)) <= 1e-12
