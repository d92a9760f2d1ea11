"""convert: CIFAR-10/100 binary files round-trip byte-exact; damaged files, pickled
(Python-version) batches and PyTorch files are refused in one line with nothing written."""
import os
import pickle

import numpy as np
import pytest

from convert_tools import assert_refused, convert_memory, run_convert, stored

from mpicnn import data


def cifar_records(rng, n, label_bytes, top):
    """n records: label byte(s) then 3072 pixels, and the (n, label_bytes) labels."""
    rec = rng.integers(0, 256, (n, label_bytes + 3072), dtype=np.uint8)
    rec[:, :label_bytes] = rng.integers(0, top, (n, label_bytes))
    return rec


@pytest.fixture
def cifar10(tmp_path):
    rng = np.random.default_rng(10)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    batches = [cifar_records(rng, 300, 1, 10) for _ in range(3)]
    for k, rec in enumerate(batches):
        rec.tofile(folder / f"data_batch_{k + 1}.bin")
    test = cifar_records(rng, 200, 1, 10)
    test.tofile(folder / "test_batch.bin")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return folder, np.concatenate(batches), test, names


def test_cifar10_folder_round_trips_byte_exact(cifar10, tmp_path):
    folder, train, test, names = cifar10
    out = tmp_path / "c10.h5"
    r = run_convert(folder, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "train: 900 samples" in r.stdout and "test: 200 samples" in r.stdout
    for split, rec in (("train", train), ("test", test)):
        images, labels, attrs = stored(out, split)
        assert images.dtype == np.uint8 and images.shape == (len(rec), 3, 32, 32)
        np.testing.assert_array_equal(images.reshape(len(rec), -1), rec[:, 1:])
        np.testing.assert_array_equal(labels, rec[:, 0])
    assert attrs["num_classes"] == 10 and [n.decode() for n in attrs["class_names"]] == names
    with data.open_dataset(str(out), "test") as ds:      # the trainer's reader accepts it
        x, y = ds.read(np.arange(5))
        np.testing.assert_array_equal(x, test[:5, 1:].reshape(5, 3, 32, 32) / np.float32(255))


@pytest.mark.parametrize("which", ["coarse", "fine"])
def test_cifar100_coarse_or_fine_labels(tmp_path, which):
    rng = np.random.default_rng(100)
    rec = cifar_records(rng, 250, 2, 20)
    rec[:, 1] = rng.integers(0, 100, 250)
    rec.tofile(tmp_path / "train.bin")
    out = tmp_path / f"c100-{which}.h5"
    r = run_convert(tmp_path / "train.bin", "--labels", which, "--test-fraction", "0.2", "-o", out)
    assert r.returncode == 0, r.stderr
    (tr, ytr, attrs), (te, yte, _) = stored(out, "train"), stored(out, "test")
    col = 0 if which == "coarse" else 1
    assert attrs["num_classes"] == (20 if which == "coarse" else 100)
    assert len(tr) + len(te) == 250 and len(te) >= 40
    # the split keeps every record, pixels with their label, each once
    got = sorted(bytes([y]) + x.tobytes() for x, y in zip(np.concatenate([tr, te]), np.concatenate([ytr, yte])))
    want = sorted(bytes([r[col]]) + r[2:].tobytes() for r in rec)
    assert got == want


def test_a_folder_missing_batches_converts_what_is_there_and_says_so(cifar10, tmp_path):
    folder, train, test, _ = cifar10
    os.unlink(folder / "data_batch_2.bin")
    os.unlink(folder / "test_batch.bin")
    r = run_convert(folder, "-o", tmp_path / "a.h5")
    assert r.returncode == 0, r.stderr
    assert (f"{folder}: no data_batch_2.bin, data_batch_4.bin, data_batch_5.bin, test_batch.bin (the CIFAR-10 "
            f"download has data_batch_1..5.bin and test_batch.bin); converting the files that are there, with no "
            f"test split (add the test file, or pass --test FILE or --test-fraction F)\n") in r.stdout
    assert "train: 600 samples" in r.stdout and "test: (none)" in r.stdout
    np.testing.assert_array_equal(stored(tmp_path / "a.h5")[0].reshape(600, -1),
                                  np.concatenate([train[:300], train[600:]])[:, 1:])
    r = run_convert(folder, "--test-fraction", "0.2", "-o", tmp_path / "b.h5")
    assert r.returncode == 0, r.stderr
    assert f"{folder}: no data_batch_2.bin, data_batch_4.bin, data_batch_5.bin (the" in r.stdout
    assert "test split" not in r.stdout
    test.tofile(folder / "test_batch.bin")
    for k in (2, 4, 5):
        train[:10].tofile(folder / f"data_batch_{k}.bin")
    r = run_convert(folder, "-o", tmp_path / "c.h5")
    assert r.returncode == 0 and "download has" not in r.stdout, r.stdout + r.stderr


def test_damaged_cifar_files_are_refused(cifar10, tmp_path):
    folder, train, _, _ = cifar10
    out = tmp_path / "out.h5"
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "data_batch_1.bin").write_bytes((folder / "data_batch_1.bin").read_bytes()[:-100])
    assert_refused(run_convert(cut, "-o", out), out, "data_batch_1.bin", "not a whole number", "truncated")
    bad = train[:10].copy()
    bad[7, 0] = 12                                   # CIFAR-10 labels are 0..9
    bad.tofile(tmp_path / "data_batch_9.bin")
    assert_refused(run_convert(tmp_path / "data_batch_9.bin", "-o", out), out, "record 7 has label 12", "0..9")
    assert_refused(run_convert(folder, "--labels", "fine", "-o", out), out, "--labels", "CIFAR-100")
    train[:3].tofile(tmp_path / "odd.bin")           # another name: told apart by size (3 x 3073 bytes)
    r = run_convert(tmp_path / "odd.bin", "-o", out)
    assert r.returncode == 0 and "train: 3 samples" in r.stdout, r.stderr
    os.unlink(out)
    (tmp_path / "junk.bin").write_bytes(b"x" * 5000)
    assert_refused(run_convert(tmp_path / "junk.bin", "-o", out), out, "junk.bin", "truncated")


def test_pickled_python_cifar_and_torch_files_are_refused(tmp_path):
    out = tmp_path / "out.h5"
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    # CIFAR's Python version: a dict pickled with protocol 2 (never loaded by the test either)
    (py / "data_batch_1").write_bytes(pickle.dumps({"data": [1, 2], "labels": [0]}, protocol=2))
    (py / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"]}, protocol=2))
    for target in (py, py / "data_batch_1"):
        assert_refused(run_convert(target, "-o", out), out, str(target), "pickled", "binary version",
                       "cifar-10-binary.tar.gz")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + bytes(100))
    assert_refused(run_convert(tmp_path / "cifar-10-python.tar.gz", "-o", out), out, "pickled", "binary version")
    (tmp_path / "images.pt").write_bytes(b"PK\x03\x04" + bytes(100))      # torch.save's zip of pickles
    assert_refused(run_convert(tmp_path / "images.pt", "-o", out), out, "images.pt", "PyTorch", "pickle",
                   "numpy.save")
    (tmp_path / "stuff.dat").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    assert_refused(run_convert(tmp_path / "stuff.dat", "-o", out), out, "stuff.dat", "pickle")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_batches(tmp_path):
    """Through 256 KiB blocks: the peak of Python and NumPy allocations for 2,000 and 20,000
    records (6 and 61 MB), and the peak RSS for 10,000 and 20,000."""
    rng = np.random.default_rng(3)
    rec = cifar_records(rng, 20_000, 1, 10)
    peak = {}
    for n in (2_000, 10_000, 20_000):
        (tmp_path / str(n)).mkdir()
        rec[:n].tofile(tmp_path / str(n) / "data_batch_1.bin")
        for how in {2_000: ("trace",), 10_000: ("rss",), 20_000: ("trace", "rss")}[n]:
            peak[how, n] = convert_memory(how, 256 << 10, tmp_path / str(n), "-o", tmp_path / "out.h5")
    print(f"tracemalloc peak {peak['trace', 2_000] / 2**20:.1f} / {peak['trace', 20_000] / 2**20:.1f} MiB for "
          f"2,000 / 20,000 records; peak RSS {peak['rss', 10_000] / 2**20:.0f} / {peak['rss', 20_000] / 2**20:.0f} "
          f"MiB for 10,000 / 20,000")
    per = rec[0].nbytes
    assert peak["trace", 20_000] - peak["trace", 2_000] < 18_000 * per / 16
    assert peak["rss", 20_000] - peak["rss", 10_000] < 10_000 * per / 4
