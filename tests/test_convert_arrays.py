"""convert: arrays. .npz (compressed members too), .npy and HDF5 datasets stream into the
file exactly, for images and volumes, with labels, regression targets or masks; peak
memory does not grow with the array; damaged arrays are one-line errors."""
import struct
import zipfile

import h5py
import numpy as np
import pytest

from convert_tools import assert_refused, convert_memory, run_convert, stored

from mpicnn import data


def test_compressed_npz_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x, xt = rng.integers(0, 256, (50, 3, 7, 5), dtype=np.uint8), rng.integers(0, 256, (9, 3, 7, 5), dtype=np.uint8)
    y, yt = rng.integers(0, 4, 50), rng.integers(0, 4, 9)
    np.savez_compressed(tmp_path / "in.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    out = tmp_path / "out.h5"
    r = run_convert(tmp_path / "in.npz", "-o", out)
    assert r.returncode == 0, r.stderr
    for split, (xs, ys) in (("train", (x, y)), ("test", (xt, yt))):
        images, labels, _ = stored(out, split)
        np.testing.assert_array_equal(images, xs)
        np.testing.assert_array_equal(labels, ys)


def test_volumes_with_masks_and_targets(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 256, (6, 4, 5, 6), dtype=np.uint8)          # (N, D, H, W), one channel
    masks = rng.integers(0, 3, (6, 4, 5, 6)).astype(np.int16)
    np.save(tmp_path / "vol.npy", vol)
    np.save(tmp_path / "masks.npy", masks)
    out = tmp_path / "seg.h5"
    r = run_convert(tmp_path / "vol.npy", "--labels", tmp_path / "masks.npy", "--layout", "ndhw", "-o", out)
    assert r.returncode == 0, r.stderr
    images, got, attrs = stored(out)
    np.testing.assert_array_equal(images, vol[:, None])
    np.testing.assert_array_equal(got, masks)
    with data.open_dataset(str(out)) as ds:
        assert ds.task == "segmentation" and ds.shape == (1, 4, 5, 6) and ds.num_classes == 3

    x = rng.standard_normal((8, 2, 4, 4, 4)).astype(np.float32)        # (N, C, D, H, W) floats
    t = rng.standard_normal((8, 2))
    with h5py.File(tmp_path / "sim.h5", "w") as f:
        f["fields/density"], f["params"] = x, t
    out = tmp_path / "reg.h5"
    r = run_convert(tmp_path / "sim.h5", "--key", "fields/density", "--labels-key", "params",
                    "--test-fraction", "0.25", "-o", out)
    assert r.returncode == 0, r.stderr
    (tr, ttr, _), (te, tte, _) = stored(out, "train"), stored(out, "test")
    assert tr.dtype == np.float32 and len(te) == 2
    got = sorted((a.tobytes(), b.tobytes()) for a, b in zip(np.concatenate([tr, te]), np.concatenate([ttr, tte])))
    assert got == sorted((a.tobytes(), b.tobytes()) for a, b in zip(x, t))
    with data.open_dataset(str(out)) as ds:
        assert ds.task == "regression" and ds.num_classes == 2


def test_damaged_arrays_are_refused(tmp_path):
    out = tmp_path / "out.h5"
    x = np.zeros((40, 1, 4, 4), np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(40, np.int64))
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-100])
    assert_refused(run_convert(tmp_path / "cut.npy", "--labels", tmp_path / "y.npy", "-o", out), out,
                   "cut.npy", "truncated")
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((40, 4, 4), np.uint8)))
    assert_refused(run_convert(tmp_path / "f.npy", "--labels", tmp_path / "y.npy", "-o", out), out,
                   "Fortran order", "ascontiguousarray")
    np.save(tmp_path / "y9.npy", np.zeros(39, np.int64))
    assert_refused(run_convert(tmp_path / "x.npy", "--labels", tmp_path / "y9.npy", "-o", out), out,
                   "40 images but 39 labels")
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["a"], f["b"] = x, np.zeros(40)
    assert_refused(run_convert(tmp_path / "in.h5", "--key", "images", "--labels-key", "b", "-o", out), out,
                   "no dataset 'images'", "it has a, b")



def _flip(path, member, at):
    """A copy of the .npz ``path`` with one byte of ``member``'s compressed data flipped,
    ``at`` (a fraction) of the way through it."""
    raw = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo(member)
    name, extra = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name + extra + int(at * (info.compress_size - 1))] ^= 0xFF
    damaged = path.with_name(f"{path.stem}_{at}.npz")
    damaged.write_bytes(raw)
    return damaged


def test_damaged_compressed_npz_is_refused_leaving_nothing(tmp_path):
    """A flipped byte in a compressed member is found while streaming it (its CRC or its
    deflate stream, after blocks were written: 5 MB of images are two blocks), in its
    .npy header, or in its zip entry when it is opened: one line naming the member, and
    no file (nor a temporary one)."""
    rng = np.random.default_rng(3)
    np.savez_compressed(tmp_path / "dc.npz", images=rng.integers(0, 256, (200, 3, 128, 64), dtype=np.uint8),
                        labels=np.arange(200) % 4)
    for at in (0.0, 0.5, 1.0):
        r = run_convert(_flip(tmp_path / "dc.npz", "images.npy", at), "-o", tmp_path / "e.h5")
        assert_refused(r, tmp_path / "e.h5", "dc", ".npz[images]: ", "save or copy it again")
    raw = (tmp_path / "dc.npz").read_bytes()     # images.npy's local header and directory entry are the first
    flags = struct.unpack("<I", raw[-6:-2])[0] + 8                   # the directory's offset: end record
    for at, byte, problem in ((flags, bytes([raw[flags] | 0x20]), "flag bit 5"), (0, b"X", "Bad magic number")):
        (tmp_path / "dh.npz").write_bytes(raw[:at] + byte + raw[at + 1:])
        assert_refused(run_convert(tmp_path / "dh.npz", "-o", tmp_path / "e.h5"), tmp_path / "e.h5",
                       "dh.npz[images]: cannot read it (", problem, "it may be damaged; save or copy it again")


def test_missing_parent_folders_are_made_and_removed_on_failure(tmp_path):
    """Missing parent folders are made for the output, and removed again when the write
    fails (here in the middle of the stream): a failure leaves nothing behind."""
    x = np.random.default_rng(4).integers(0, 256, (200, 3, 128, 64), dtype=np.uint8)
    np.savez_compressed(tmp_path / "dc.npz", images=x, labels=np.arange(200) % 4)
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "new" / "deeper" / "e.h5"
    assert_refused(run_convert(_flip(tmp_path / "dc.npz", "images.npy", 0.5), "-o", out), tmp_path / "e.h5",
                   "damaged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dc.npz", "dc_0.5.npz", "kept"]
    assert list((tmp_path / "kept").iterdir()) == []
    r = run_convert(tmp_path / "dc.npz", "-o", out)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(stored(out)[0], x)


def test_a_folder_as_the_output_is_one_line(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 1, 2, 2), np.uint8), labels=np.arange(4))
    folder = tmp_path / "out"
    folder.mkdir()
    for force in ([], ["--force"]):
        assert_refused(run_convert(tmp_path / "d.npz", "-o", folder, *force), tmp_path / "e.h5",
                       f"output '{folder}' is a folder; give the file to write, such as '{folder / 'out.h5'}'")
    assert list(folder.iterdir()) == []


def test_float_dtype_of_0_255_images_keeps_the_values_and_says_so(tmp_path):
    """--dtype float32 keeps the values (the documented rule: float images are read as
    stored), and a line says that the trainer will see 0..255, not [0, 1] as it would
    from the default uint8 storage; values that would not be stored as uint8 get no line."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (6, 1, 4, 4))
    for name, images in (("u8", x.astype(np.uint8)), ("i64", x), ("f", x.astype(np.float32)),
                         ("frac", x / 2), ("default", x.astype(np.uint8))):
        np.savez(tmp_path / f"{name}.npz", images=images, labels=np.arange(6) % 2)
        out = tmp_path / f"{name}.h5"
        r = run_convert(tmp_path / f"{name}.npz", "-o", out, *([] if name == "default" else ["--dtype", "float32"]))
        assert r.returncode == 0, r.stderr
        line = (f"{tmp_path / name}.npz[images]: --dtype float32 stores these 0..255 values as they are, and the "
                f"trainer reads float images as stored (uint8 ones as value/255); without --dtype they are stored "
                f"as uint8 and read in [0, 1]\n")
        assert (line in r.stdout) == (name in ("u8", "i64", "f")), (name, r.stdout)
        np.testing.assert_array_equal(stored(out)[0], images)
        assert stored(out)[0].dtype == (np.uint8 if name == "default" else np.float32)


@pytest.mark.parametrize("lines, args, problem", [
    (["0,1,2,3,4", "1,5,6,7,8,", "2,1,1,1,1"], [], "3 rows of 5 numbers: line 2 has 6 fields, "
                                                   "but line 1 has 5 (a trailing comma); fix or drop that row"),
    (["label,a,b,c,d", "0,1,2,3,4"], ["--header", "no"],
     "2 rows of 5 numbers: line 1, field 1: 'label' is not a number; it looks like a header: drop --header no"),
    (["", "label,a,b,c,d", "0,1,2,3,4", "1,1,,3,4"], [], "line 4, field 3 is empty"),
    (["0,1,2,3,4", "1,1,2,x3,4"], [], "line 2, field 4: 'x3' is not a number"),
    (["0,1,2,3,4", "", "1,1,2,3,4"], [], "line 2 is empty"),
    (["0,1,2,3,4", "1,1,2,3"], [], "line 2 has 4 fields, but line 1 has 5; fix or drop that row"),
], ids=["trailing-comma", "header-as-data", "empty-field", "not-a-number", "empty-line", "short-row"])
def test_malformed_csv_names_the_line(tmp_path, lines, args, problem):
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "t.h5"
    assert_refused(run_convert(tmp_path / "t.csv", "--label-column", "first", *args, "-o", out), out,
                   "t.csv: could not parse ", problem)


def test_csv_rows_that_only_python_parses_are_read(tmp_path):
    """NumPy's fast parse refuses '1_0'; the row-by-row parse reads it as Python does."""
    (tmp_path / "t.csv").write_text("0,1,2,3,1_0\n1,4,5,6,7\n")
    r = run_convert(tmp_path / "t.csv", "--label-column", "first", "-o", tmp_path / "t.h5")
    assert r.returncode == 0, r.stderr
    images, labels, _ = stored(tmp_path / "t.h5")
    np.testing.assert_array_equal(images.reshape(2, 4), [[1, 2, 3, 10], [4, 5, 6, 7]])
    np.testing.assert_array_equal(labels, [0, 1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_npz(tmp_path):
    """Peak RSS of 10,000 and 20,000 CIFAR-sized samples (31 and 61 MB) in an .npz, split
    by --test-fraction, through 256 KiB blocks: the second 31 MB adds (almost) nothing. A
    .npy file is read by the same stream, from the file instead of the zip member."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20_000, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, 20_000)
    peak = {}
    for n in (10_000, 20_000):
        np.savez(tmp_path / f"d{n}.npz", images=x[:n], labels=y[:n])      # read as a zip member stream
        peak[n] = convert_memory("rss", 256 << 10, tmp_path / f"d{n}.npz", "--test-fraction", "0.1",
                                 "-o", tmp_path / f"z{n}.h5")
    print(f"npz: peak RSS {peak[10_000] / 2**20:.0f} / {peak[20_000] / 2**20:.0f} MiB for 10,000 / 20,000 samples")
    assert peak[20_000] - peak[10_000] < x[:10_000].nbytes / 4
    (tr, _, _), (te, _, _) = stored(tmp_path / "z20000.h5", "train"), stored(tmp_path / "z20000.h5", "test")
    assert abs(len(te) - 2_000) <= 10 and sorted(map(bytes, np.concatenate([tr, te]))) == sorted(map(bytes, x))
