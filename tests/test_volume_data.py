"""Volumes, regression targets and segmentation masks in the HDF5 format; the cosmo and
blobs built-ins."""
import h5py
import numpy as np
import pytest

from mpicnn import data
from mpicnn.data import volumes
from mpicnn.errors import UserError

rng = np.random.default_rng(14)


def write(path, **train):
    with h5py.File(path, "w") as f:
        for k, v in train.items():
            f[f"train/{k}"] = v
    return path


def test_volume_regression_reads_any_block(tmp_path):
    x = rng.standard_normal((5, 2, 6, 4, 3)).astype(np.float32)
    t = rng.standard_normal((5, 3))
    with data.open_dataset(write(tmp_path / "v.h5", images=x, targets=t)) as ds:
        assert (ds.task, ds.num_classes, ds.shape) == ("regression", 3, (2, 6, 4, 3))
        img, tgt = ds.read([4, 1], depths=(2, 5), rows=(1, 3), cols=(0, 2), dtype=np.float64)
        np.testing.assert_array_equal(img, x[[4, 1], :, 2:5, 1:3, 0:2])
        np.testing.assert_array_equal(tgt, t[[4, 1]])
        assert tgt.dtype == np.float64


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_masks_are_read_block_by_block(tmp_path, cache_mb):
    x = rng.integers(0, 255, (6, 1, 8, 5)).astype(np.uint8)
    m = rng.integers(0, 4, (6, 8, 5)).astype(np.uint8)
    with data.open_dataset(write(tmp_path / "s.h5", images=x, masks=m), cache_mb=cache_mb) as ds:
        assert (ds.task, ds.num_classes, ds.labels) == ("segmentation", 4, None)
        for idx in ([0, 5, 2], [3, 4]):
            img, mask = ds.read(idx, rows=(2, 7), cols=(1, 4))
            np.testing.assert_array_equal(img, x[idx, :, 2:7, 1:4] / np.float32(255))
            np.testing.assert_array_equal(mask, m[idx, 2:7, 1:4])
            assert mask.dtype == np.int64


@pytest.mark.parametrize("train, message", [
    (dict(images=np.zeros((2, 1, 3, 3)), masks=np.zeros((2, 3, 4), int)), "expected (N, *spatial) = (2, 3, 3)"),
    (dict(images=np.zeros((2, 1, 3, 3)), labels=np.zeros(2, int), targets=np.zeros((2, 1))), "exactly one"),
    (dict(images=np.zeros((2, 1, 3, 3)), targets=np.array([[0.0], [np.nan]])), "targets[1] holds NaN"),
    (dict(images=np.zeros((2, 1, 3, 3)), targets=np.zeros((2, 2), int)), "expected a float type"),
    (dict(images=np.zeros((2, 1, 3, 3)), masks=-np.ones((2, 3, 3), int)), "negative class -1"),
    (dict(images=np.zeros((2, 1, 3, 3, 3, 1)), targets=np.zeros((2, 2))), "or 5-D (N, C, D, H, W)"),
])
def test_targets_are_validated_on_open(tmp_path, train, message):
    with pytest.raises(UserError) as e:
        data.open_dataset(write(tmp_path / "bad.h5", **train))
    assert message in str(e.value)


def test_builtins_are_deterministic_and_learnable_in_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("MPICNN_DATA_DIR", str(tmp_path))
    a = data.prepare("cosmo:16:40")
    volumes.generate("cosmo", tmp_path / "again.h5", 16, 40)
    with h5py.File(a) as f, h5py.File(tmp_path / "again.h5") as g:
        np.testing.assert_array_equal(f["train/images"][()], g["train/images"][()])
    with data.open_dataset("cosmo:16:40") as ds:
        x, t = ds.read(np.arange(40), dtype=np.float64)
    assert x.shape == (40, 1, 16, 16, 16) and t.shape == (40, 2)
    assert np.abs(t).max() <= 1
    # the amplitude target sets the variance: their ranks agree closely
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(np.log(x.var(axis=(1, 2, 3, 4)))), rank(t[:, 0]))[0, 1] > 0.7
    with data.open_dataset("blobs:32:20", "test") as ds:
        assert (ds.task, ds.num_classes, ds.num_samples) == ("segmentation", 3, 16)
        x, m = ds.read(np.arange(16))
    assert set(np.unique(m)) == {0, 1, 2} and x.shape == (16, 1, 32, 32)
    assert x[:, 0][m > 0].mean() > x[:, 0][m == 0].mean() + 0.2  # the shapes stand out
    with pytest.raises(UserError, match="blobs:SIZE or blobs:SIZE:NTRAIN"):
        data.prepare("blobs:big")
    with pytest.raises(UserError, match="out of range"):
        data.prepare("cosmo:8")
