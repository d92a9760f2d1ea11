"""convert: image-folder trees. 10,000 generated PNGs round-trip pixel-exact with peak
memory independent of their number; train/test trees, --size, --mode, JPEG; bad inputs
(corrupt files, mixed sizes, empty class folders, ...) are one-line errors that leave
nothing behind; the trainer runs on a converted tree."""
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from convert_tools import assert_refused, convert_memory, env, run_convert, stored
from tools import require_module

from mpicnn.data.__main__ import main as cli_main

INSTALL = "pip install 'mpicnn[images]' (Pillow)"
N, SIDE, CLASSES = 10_000, 16, 10


@pytest.fixture(scope="module")
def Image():
    return require_module("PIL.Image", INSTALL)


@pytest.fixture(scope="module")
def tree(Image, tmp_path_factory):
    """ROOT/cK/IIIII.png: 10,000 random 16x16 RGB PNGs, image i in class i % 10."""
    root = tmp_path_factory.mktemp("tree") / "digits"
    pixels = np.random.default_rng(0).integers(0, 256, (N, SIDE, SIDE, 3), dtype=np.uint8)
    for c in range(CLASSES):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(N):
        Image.fromarray(pixels[i]).save(root / f"c{i % CLASSES}" / f"{i:05d}.png", compress_level=1)
    return root, pixels


def convert_here(capsys, *args):
    """The command in this process (faster than a new one for the many error cases)."""
    rc = cli_main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=out, stderr=err)


def test_10000_pngs_round_trip_pixel_exact(tree, tmp_path):
    root, pixels = tree
    out = tmp_path / "digits.h5"
    started = time.perf_counter()
    r = run_convert(root, "-o", out)
    seconds = time.perf_counter() - started
    assert r.returncode == 0, r.stderr
    assert f"train: {N} samples" in r.stdout and "class_names: c0, c1, c2" in r.stdout
    images, labels, attrs = stored(out)
    # classes in sorted order, files sorted by name within a class
    order = np.concatenate([np.arange(c, N, CLASSES) for c in range(CLASSES)])
    assert images.shape == (N, 3, SIDE, SIDE) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, pixels[order].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, order % CLASSES)
    assert attrs["num_classes"] == CLASSES
    print(f"convert of {N} PNGs: {seconds:.1f} s")


def linked_tree(root, path, copies, per_class):
    """A tree of hard links into ``root``'s files: ``per_class`` files of each class, ``copies`` times."""
    for c in range(CLASSES):
        (path / f"c{c}").mkdir(parents=True)
        for i in range(c, per_class * CLASSES, CLASSES):
            for k in range(copies):
                os.link(root / f"c{c}" / f"{i:05d}.png", path / f"c{c}" / f"{k}-{i:05d}.png")
    return path


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_tree(tree, tmp_path):
    """Peak RSS through 256 KiB blocks for the 10,000 PNGs and for 20,000 (each file
    linked twice): the second 7.7 MB of pixels adds nothing."""
    root, pixels = tree
    double = linked_tree(root, tmp_path / "double", 2, N // CLASSES)
    single, twice = (convert_memory("rss", 256 << 10, src, "-o", tmp_path / "r.h5") for src in (root, double))
    print(f"peak RSS {single / 2**20:.1f} / {twice / 2**20:.1f} MiB for 10,000 / 20,000 PNGs")
    assert twice - single < pixels.nbytes / 4


def test_train_and_test_trees_resize_and_modes(Image, tmp_path, capsys):
    rng = np.random.default_rng(1)
    root = tmp_path / "root"
    want = {}
    for split, classes in (("train", "abc"), ("test", "ac")):      # the test tree lacks class b
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                a = rng.integers(0, 256, (12, 10), dtype=np.uint8)   # gray, 12 rows x 10 columns
                Image.fromarray(a).save(root / split / c / f"{i}.png")
                want.setdefault(split, []).append(("abc".index(c), a))
    out = tmp_path / "gray.h5"
    r = convert_here(capsys, root, "--size", "8x6", "-o", out)
    assert r.returncode == 0, r.stderr
    for split in ("train", "test"):
        images, labels, attrs = stored(out, split)
        assert images.shape == (len(want[split]), 1, 8, 6)
        np.testing.assert_array_equal(labels, [k for k, _ in want[split]])
        for got, (_, a) in zip(images, want[split]):     # Pillow's bilinear resize, to the byte
            np.testing.assert_array_equal(got[0], np.asarray(Image.fromarray(a).resize((6, 8), Image.BILINEAR)))
    assert [n.decode() for n in attrs["class_names"]] == ["a", "b", "c"]
    out = tmp_path / "rgb.h5"
    assert convert_here(capsys, root / "train", "--mode", "rgb", "-o", out).returncode == 0
    images, _, _ = stored(out)
    assert images.shape == (9, 3, 12, 10)
    np.testing.assert_array_equal(images[:, 0], [a for _, a in want["train"]])
    np.testing.assert_array_equal(images[:, 0], images[:, 2])


def test_jpeg_equals_pillows_decoding(Image, tmp_path, capsys):
    rng = np.random.default_rng(2)
    for c in ("x", "y"):
        (tmp_path / "jpg" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(tmp_path / "jpg" / c / f"{i}.jpg")
    out = tmp_path / "jpg.h5"
    r = convert_here(capsys, tmp_path / "jpg", "--test-fraction", "0.25", "-o", out)
    assert r.returncode == 0, r.stderr
    (tr, ytr, _), (te, yte, _) = stored(out, "train"), stored(out, "test")
    assert len(te) == 2 and sorted(yte) == [0, 1]
    decoded = {(k, np.asarray(Image.open(tmp_path / "jpg" / c / f"{i}.jpg").convert("RGB")).tobytes())
               for k, c in enumerate("xy") for i in range(4)}
    got = {(int(y), x.transpose(1, 2, 0).tobytes()) for x, y in zip(np.concatenate([tr, te]), np.concatenate([ytr, yte]))}
    assert got == decoded


def make_tree(Image, root, sizes=((8, 8),) * 4, mode="L"):
    for k, hw in enumerate(sizes):
        (root / f"k{k % 2}").mkdir(parents=True, exist_ok=True)
        shape = hw if mode == "L" else hw + (3,)
        Image.fromarray(np.full(shape, k * 10, np.uint8)).save(root / f"k{k % 2}" / f"{k}.png")
    return root


def test_bad_trees_are_one_line_errors_leaving_nothing(Image, tmp_path, capsys):
    out = tmp_path / "out.h5"

    def refused(src, *words, args=()):
        assert_refused(convert_here(capsys, src, *args, "-o", out), out, *words)

    corrupt = make_tree(Image, tmp_path / "corrupt")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (8, 8), dtype=np.uint8)).save(corrupt / "k1" / "3.png")
    data = (corrupt / "k1" / "3.png").read_bytes()
    (corrupt / "k1" / "3.png").write_bytes(data[:-30])                         # truncated inside its pixels
    refused(corrupt, "3.png", "damaged image", "replace or delete")
    (corrupt / "k1" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a header, then garbage
    refused(corrupt, "3.png", "cannot read it as an image")
    refused(make_tree(Image, tmp_path / "mixed", sizes=((8, 8), (8, 8), (8, 9), (8, 8))),
            "2.png is 8x9", "0.png is 8x8", "--size HxW")
    empty = make_tree(Image, tmp_path / "empty")
    (empty / "k2").mkdir()
    (empty / "k2" / "notes.txt").write_text("no images here")
    refused(empty, "k2", "no image files", "remove the folder")
    colours = make_tree(Image, tmp_path / "colours")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(colours / "k1" / "9.png")
    refused(colours, "9.png is colour", "--mode gray or --mode rgb")
    wide = make_tree(Image, tmp_path / "wide")
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(wide / "k0" / "8.png")       # 16-bit gray
    refused(wide, "8.png", "16-bit", "8-bit")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "a.png")
    refused(flat, "without class subfolders")
    refused(flat / "a.png", "one image", "folder tree")
    make_tree(Image, tmp_path / "extra" / "train")
    make_tree(Image, tmp_path / "extra" / "test", sizes=((8, 8),) * 6)
    (tmp_path / "extra" / "test" / "k9").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "extra" / "test" / "k9" / "0.png")
    refused(tmp_path / "extra", "k9", "no train folder")
    refused(corrupt, "--size", "8y8", args=("--size", "8y8"))
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.uint8))
    refused(tmp_path / "x.npy", "--size applies to image folders", args=("--size", "8x8", "--labels", "y.npy"))
    # the same through a real process: exit status 2
    assert_refused(run_convert(tmp_path / "mixed", "-o", out), out, "--size HxW")


def test_missing_pillow_is_a_clean_error(tmp_path):
    make_tree(require_module("PIL.Image", INSTALL), tmp_path / "t")
    code = ("import sys; sys.modules['PIL'] = None\n"          # as if Pillow were not installed
            "from mpicnn.data.__main__ import main\n"
            f"sys.exit(main(['convert', {str(tmp_path / 't')!r}, '-o', {str(tmp_path / 'o.h5')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    assert_refused(r, tmp_path / "o.h5", "needs Pillow", "pip install")


@pytest.mark.slow
def test_trainer_runs_on_a_converted_tree(tree, tmp_path):
    root, _ = tree
    out = tmp_path / "digits.h5"
    assert run_convert(root, "--test-fraction", "0.1", "-o", out).returncode == 0
    r = subprocess.run([sys.executable, "-m", "mpicnn.train", "--model", "convnet", "--width", "4",
                        "--dataset", str(out), "--steps", "4", "--batch-size", "32", "--no-progress"],
                       capture_output=True, text=True, env=env(), timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test accuracy" in r.stdout.lower(), r.stdout
