"""``mpicnn.predict`` by task: what OUT holds for classification, regression and
segmentation models, against the checkpoint's model run directly (softmax by torch)."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch
from mpi4py import MPI

from mpicnn import data, models, predict, train
from mpicnn.io.checkpoint import load_checkpoint, save_checkpoint


def trained(tmp_path, model, dataset, *extra):
    """The --save file of a few steps of ``model`` on ``dataset``."""
    path = str(tmp_path / f"{model}.h5")
    train.run(["--model", model, "--dataset", dataset, "--steps", "3", "--batch-size", "4", "--no-progress",
               "--save", path, *extra], MPI.COMM_SELF)
    return path


def split_of(dataset):
    """The test images of ``dataset`` as the trainer reads them, and its class (target) count."""
    with data.open_dataset(dataset, "test") as ds:
        return ds.read(np.arange(ds.num_samples))[0], ds.num_classes


def direct_forward(path, images, outputs):
    """The checkpoint's model, built and loaded here, run on ``images`` in eval mode (float64)."""
    ckpt = load_checkpoint(path)
    model = models.get(ckpt.config["model"], images.shape[1], outputs, image_size=images.shape[2:],
                       width=ckpt.config["width"])
    model.load_state_dict({**ckpt.params, **ckpt.buffers})
    model.eval()
    return model.forward(np.ascontiguousarray(images, np.float32)).astype(np.float64)


def softmax(logits):
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def run_predict(*argv):
    return subprocess.run([sys.executable, "-m", "mpicnn.predict", *map(str, argv)], capture_output=True,
                          text=True, timeout=300)


def test_classification_writes_softmax_probabilities(tmp_path, capsys):
    ckpt = trained(tmp_path, "convnet", "shapes:16:32", "--width", "4")
    assert predict.main([ckpt, "shapes:16:32", "-o", str(tmp_path / "p.npy")]) == 0
    assert "class probabilities each" in capsys.readouterr().out
    probs = np.load(tmp_path / "p.npy")
    images, classes = split_of("shapes:16:32")
    assert probs.shape == (len(images), classes) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(probs, softmax(direct_forward(ckpt, images, classes)), rtol=1e-5, atol=1e-6)


def test_regression_writes_the_raw_outputs(tmp_path, capsys):
    # trained on a file, so that the test can take it away below
    h5 = tmp_path / "cosmo.h5"
    shutil.copy(data.prepare("cosmo:16:8"), h5)
    ckpt = trained(tmp_path, "cosmoflow", str(h5), "--width", "2")
    images, targets = split_of(str(h5))
    expected = direct_forward(ckpt, images, targets)
    assert predict.main([ckpt, str(h5), "-o", str(tmp_path / "r.npy")]) == 0
    assert f"{len(images)} images -> {tmp_path / 'r.npy'} ({targets} regression outputs each)" in \
        capsys.readouterr().out
    out = np.load(tmp_path / "r.npy")
    assert out.shape == (len(images), targets) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    # .npy images: the training dataset says the task
    np.save(tmp_path / "x.npy", images[:5])
    assert predict.main([ckpt, str(tmp_path / "x.npy"), "-o", str(tmp_path / "s.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), expected[:5], rtol=1e-5, atol=1e-7)
    # without the training dataset: the checkpoint records its task, so even bare .npy
    # images get raw outputs
    os.rename(h5, tmp_path / "moved.h5")
    assert load_checkpoint(ckpt).attrs["task"] == "regression"
    assert predict.main([ckpt, str(tmp_path / "x.npy"), "-o", str(tmp_path / "t.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), expected[:5], rtol=1e-5, atol=1e-7)
    # a checkpoint that records no task (written before checkpoints did): a dataset
    # INPUT says it; bare .npy images cannot
    loaded = load_checkpoint(ckpt)
    old = str(tmp_path / "old.h5")
    save_checkpoint(old, loaded.params, loaded.buffers, step=loaded.step, config=loaded.config)
    assert "task" not in load_checkpoint(old).attrs
    assert predict.main([old, str(tmp_path / "moved.h5"), "-o", str(tmp_path / "m.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), expected, rtol=1e-5, atol=1e-7)
    proc = run_predict(old, tmp_path / "x.npy", "-o", tmp_path / "n.npy")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "cannot tell what the model" in proc.stderr and "put it back" in proc.stderr
    assert not (tmp_path / "n.npy").exists()


def check_segmentation(ckpt, dataset, tmp_path, capsys):
    """OUT of ``ckpt`` on ``dataset`` and on its images as .npy: per-pixel probabilities
    (N, classes, *spatial) equal to the softmax over the class axis of the direct forward."""
    images, classes = split_of(dataset)
    expected = softmax(direct_forward(ckpt, images, classes))
    np.save(tmp_path / "x.npy", images)
    for given in (dataset, str(tmp_path / "x.npy")):
        assert predict.main([ckpt, given, "-o", str(tmp_path / "p.npy")]) == 0
        assert f"({classes} class probabilities per pixel)" in capsys.readouterr().out
        probs = np.load(tmp_path / "p.npy")
        assert probs.shape == (len(images), classes) + images.shape[2:] and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    # no images: the shape alone
    np.save(tmp_path / "none.npy", images[:0])
    assert predict.main([ckpt, str(tmp_path / "none.npy"), "-o", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (0, classes) + images.shape[2:]


def test_segmentation_writes_per_pixel_probabilities(tmp_path, capsys):
    check_segmentation(trained(tmp_path, "unet", "blobs:16:8", "--width", "4"), "blobs:16:8", tmp_path, capsys)


def test_3d_segmentation_writes_per_voxel_probabilities(tmp_path, capsys):
    rng = np.random.default_rng(5)
    h5 = str(tmp_path / "vol.h5")
    with h5py.File(h5, "w") as f:
        for split, n in (("train", 8), ("test", 3)):
            f[f"{split}/images"] = rng.standard_normal((n, 1, 4, 8, 4)).astype(np.float32)
            f[f"{split}/masks"] = rng.integers(0, 3, (n, 4, 8, 4))
    check_segmentation(trained(tmp_path, "unet3d", h5, "--width", "2"), h5, tmp_path, capsys)


def test_out_never_replaces_the_input_or_the_checkpoint(tmp_path):
    ckpt = trained(tmp_path, "convnet", "shapes:16:32", "--width", "4")
    shutil.copy(ckpt, tmp_path / "model.npy")  # a checkpoint reads whatever its name
    images = tmp_path / "victim.npy"
    np.save(images, split_of("shapes:16:32")[0][:4])
    os.mkdir(tmp_path / "sub")
    os.symlink(images, tmp_path / "link.npy")
    before = {p: p.read_bytes() for p in (images, tmp_path / "model.npy")}
    for model, out, what in ((ckpt, images, "is the input"),
                             (ckpt, tmp_path / "sub" / ".." / "victim.npy", "is the input"),
                             (ckpt, tmp_path / "link.npy", "is the input"),
                             (tmp_path / "model.npy", tmp_path / "model.npy", "is the checkpoint")):
        proc = run_predict(model, images, "-o", out)
        assert proc.returncode == 2 and what in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert {p: p.read_bytes() for p in before} == before
    # an OUT that does not exist yet is compared by its path: a new file is fine
    assert run_predict(tmp_path / "model.npy", images, "-o", tmp_path / "sub" / "new.npy").returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "new.npy"),
                                  predict.predict(ckpt, np.load(images)))
