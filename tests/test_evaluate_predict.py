"""``python -m mpicnn.evaluate`` and ``mpicnn.predict`` on a trained checkpoint: the same
figures as the trainer's final evaluation, on any layout."""
import os
import subprocess
import sys

import numpy as np
import pytest
from mpi4py import MPI

from contract import agreed_max, on_ranks
from mpicnn import data, evaluate, export, models, predict, train
from mpicnn.errors import UserError
from mpicnn.io.checkpoint import load_checkpoint, save_checkpoint

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


# A small convnet in float64, so a layout's sums and the NumPy reference agree to rounding.
CONVNET = ["--model", "convnet", "--width", "4", "--dtype", "float64", "--steps", "3", "--batch-size", "8",
           "--no-progress"]


def random_set(path, n_train, n_test, classes=5, channels=3, size=16, seed=3):
    """A dataset file of random uint8 images and labels; its path."""
    rng = np.random.default_rng(seed)

    def split(n):
        return rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8), rng.integers(0, classes, n)
    return data.write_dataset(path, {"train": split(n_train), "test": split(n_test)}, num_classes=classes)


def saved(dataset, path):
    """The --save file of a short CONVNET run on ``dataset``."""
    train.run(CONVNET + ["--dataset", str(dataset), "--save", str(path)], MPI.COMM_SELF)
    return str(path)


def numpy_figures(ckpt, dataset, split):
    """(accuracy, mean cross-entropy, samples) of the checkpoint's model over all of
    ``split``: one plain forward of the model rebuilt from the checkpoint's arrays."""
    ds = data.open_dataset(dataset, split)
    x, y = ds.read(np.arange(ds.num_samples), dtype=np.float64)
    ds.close()
    saved_state = load_checkpoint(ckpt)
    model = models.get("convnet", x.shape[1], 5, dtype=np.float64, image_size=x.shape[2:], width=4)
    model.load_state_dict({**saved_state.params, **saved_state.buffers})
    logits = model.eval().forward(x)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return np.mean(logits.argmax(axis=1) == y), -np.mean(logp[np.arange(len(y)), y]), len(y)


@pytest.mark.parametrize("n_train, n_test", [(40, 13), (10, 30)])
def test_evaluate_reads_all_of_the_train_split(tmp_path, n_train, n_test):
    """--split train covers the train split's samples, whether it is larger or smaller
    than the test split (it used to read the test split's range of it)."""
    dataset = random_set(tmp_path / "d.h5", n_train, n_test)
    ckpt = saved(dataset, tmp_path / "m.h5")
    for split in ("train", "test"):
        accuracy, loss, n = evaluate.evaluate([ckpt, "--split", split, "--eval-batch-size", "7"], MPI.COMM_SELF)
        want = numpy_figures(ckpt, dataset, split)
        assert n == want[2] == (n_train if split == "train" else n_test)
        np.testing.assert_allclose((accuracy, loss), want[:2], rtol=1e-12)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("parallel", ["data=2", "spatial=2x1", "channel=2", "pipeline=2"])
def test_evaluate_the_train_split_on_a_layout(parallel, tmp_path_factory):
    directory = tmp_path_factory.mktemp("split") if MPI.COMM_WORLD.Get_rank() == 0 else None
    directory = MPI.COMM_WORLD.bcast(str(directory) if directory else None)
    sizes = {"larger": (40, 13), "smaller": (10, 30)}  # train split vs test split
    if MPI.COMM_WORLD.Get_rank() == 0:
        for name, (n_train, n_test) in sizes.items():
            saved(random_set(os.path.join(directory, f"{name}.h5"), n_train, n_test),
                  os.path.join(directory, f"{name}-model.h5"))
    MPI.COMM_WORLD.Barrier()

    def differs(comm):
        worst = 0.0
        for name, (n_train, _) in sizes.items():
            ckpt, dataset = os.path.join(directory, f"{name}-model.h5"), os.path.join(directory, f"{name}.h5")
            accuracy, loss, n = evaluate.evaluate([ckpt, "--split", "train", "--parallel", parallel,
                                                   "--eval-batch-size", "7"], comm)
            want_accuracy, want_loss, want_n = numpy_figures(ckpt, dataset, "train")
            assert n == want_n == n_train
            worst = max(worst, abs(accuracy - want_accuracy), abs(loss - want_loss) / want_loss)
        return worst
    assert agreed_max(on_ranks(2, differs)) <= 1e-12


def test_evaluate_another_dataset(tmp_path):
    """Any dataset whose images and classes fit the model is evaluated; one that does not
    is refused in one line saying what does not fit."""
    ckpt = saved(random_set(tmp_path / "d.h5", 40, 13), tmp_path / "m.h5")
    other = random_set(tmp_path / "other.h5", 20, 25, size=12, seed=4)  # convnet pools globally: any size
    accuracy, loss, n = evaluate.evaluate([ckpt, "--dataset", other], MPI.COMM_SELF)
    want = numpy_figures(ckpt, other, "test")
    assert n == want[2] == 25
    np.testing.assert_allclose((accuracy, loss), want[:2], rtol=1e-12)
    for channels, classes, message in ((1, 5, "the images have 1 channel(s), the model takes 3"),
                                       (3, 4, "the data has 4 classes, the model 5")):
        path = random_set(tmp_path / f"c{channels}k{classes}.h5", 20, 10, classes=classes, channels=channels)
        proc = subprocess.run([sys.executable, "-m", "mpicnn.evaluate", ckpt, "--dataset", path],
                              capture_output=True, text=True, timeout=300)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"mpicnn: error: dataset {path} does not fit") and message in lines[0]


def test_a_checkpoint_finds_its_dataset_from_another_directory(tmp_path, monkeypatch):
    """Checkpoints record a dataset file by its absolute path: evaluate and export work
    from any directory; a resume elsewhere on another file of that name is told what does
    not fit; an older checkpoint's relative path, not found, asks for --dataset."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    random_set("tr.h5", 40, 13)
    saved("tr.h5", "ex/m.h5")
    ckpt = load_checkpoint("ex/m.h5")
    assert ckpt.config["dataset"] == str(run_dir / "tr.h5")
    here = evaluate.evaluate(["ex/m.h5"], MPI.COMM_SELF)

    monkeypatch.chdir(run_dir / "ex")
    assert evaluate.evaluate(["m.h5"], MPI.COMM_SELF) == here
    export.run(["m.h5", "-o", "m.onnx"])  # the image size comes from the dataset
    assert os.path.getsize("m.onnx") > 0

    random_set("tr.h5", 20, 10, classes=3)  # another tr.h5, here
    with pytest.raises(UserError, match=r"dataset tr.h5 does not fit .* the data has 3 classes, the model 5"):
        train.run(CONVNET + ["--dataset", "tr.h5", "--resume", "m.h5", "--steps", "4"], MPI.COMM_SELF)

    save_checkpoint("old.h5", ckpt.params, ckpt.buffers, ckpt.optimizer, step=ckpt.step,
                    config={**ckpt.config, "dataset": "tr-elsewhere.h5"})  # as older versions recorded it
    with pytest.raises(UserError, match=r"trained on dataset 'tr-elsewhere.h5', which is not there .* "
                                        r"pass --dataset"):
        evaluate.evaluate(["old.h5"], MPI.COMM_SELF)
    assert evaluate.evaluate(["old.h5", "--dataset", str(run_dir / "tr.h5")], MPI.COMM_SELF) == here
