"""CIFAR-10/100 *binary* files as ``writer.Source``s, read block by block.

    sources, class_names = open_cifar("cifar-10-batches-bin", labels=None)
    # {"train": data_batch_1..5.bin, "test": test_batch.bin}, ("airplane", ...)

A record is its label byte(s) then 3072 pixel bytes: 1024 red, 1024 green, 1024 blue,
each a 32 x 32 image row by row, so the pixels are already (C, H, W). CIFAR-10 records
have one label byte (``data_batch_*.bin``, ``test_batch.bin``); CIFAR-100's have two,
coarse then fine (``train.bin``, ``test.bin``; ``labels`` picks one, default fine).
Other file names are told apart by their size. Class names come from the text files
that ship beside the batches (``batches.meta.txt``, ``*_label_names.txt``) when present.
CIFAR's Python version is pickled and is refused by ``convert`` before this runs.
"""
import glob
import os
import re

import numpy as np

from ..errors import UserError
from .writer import Source, block_rows

PIXELS = 3 * 32 * 32
SHAPE = (3, 32, 32)
DOWNLOAD = "https://www.cs.toronto.edu/~kriz/cifar.html"
# (label bytes, classes of each label byte, names file of each label byte)
CIFAR10 = {"name": "CIFAR-10", "label_bytes": 1, "classes": (10,), "names": ("batches.meta.txt",)}
CIFAR100 = {"name": "CIFAR-100", "label_bytes": 2, "classes": (20, 100),
            "names": ("coarse_label_names.txt", "fine_label_names.txt")}


def _format_of(path):
    base = os.path.basename(path)
    if re.fullmatch(r"(data_batch_\d+|test_batch)\.bin", base):
        return CIFAR10
    if base in ("train.bin", "test.bin"):
        return CIFAR100
    size = os.path.getsize(path)
    fits = [f for f in (CIFAR10, CIFAR100) if size and size % (f["label_bytes"] + PIXELS) == 0]
    if not fits:
        raise UserError(f"{path}: {size} bytes is not a whole number of CIFAR-10 ({1 + PIXELS}-byte) or CIFAR-100 "
                        f"({2 + PIXELS}-byte) records (truncated, or not a CIFAR binary file); download it "
                        f"again from {DOWNLOAD}")
    if len(fits) > 1:
        raise UserError(f"{path}: its size {size} fits both CIFAR-10 and CIFAR-100 records; name it as the "
                        f"download does (data_batch_N.bin / test_batch.bin, or train.bin / test.bin)")
    return fits[0]


def _records(path, fmt):
    record = fmt["label_bytes"] + PIXELS
    size = os.path.getsize(path)
    if size == 0 or size % record:
        raise UserError(f"{path}: {size} bytes is not a whole number of {record}-byte {fmt['name']} records "
                        f"(truncated or not a {fmt['name']} binary file); download it again from {DOWNLOAD}")
    return size // record


def _read_blocks(path, fmt, count):
    """Raw records (b, record bytes) in blocks."""
    record = fmt["label_bytes"] + PIXELS
    rows = block_rows(record)
    with open(path, "rb") as fh:
        for s in range(0, count, rows):
            n = min(rows, count - s)
            buf = fh.read(n * record)
            if len(buf) != n * record:
                raise UserError(f"{path}: ended after {s * record + len(buf)} bytes while reading record {s}; "
                                f"the file changed while converting; convert again")
            yield np.frombuffer(buf, np.uint8).reshape(n, record)


class _Batches:
    """One split made of one or more batch files of one format, read in order."""

    def __init__(self, paths, fmt, which):
        self.paths, self.fmt, self.which = paths, fmt, which
        self.counts = [_records(p, fmt) for p in paths]

    def labels(self):
        out = []
        top = self.fmt["classes"][self.which]
        for path, count in zip(self.paths, self.counts):
            lab = np.concatenate([r[:, self.which].copy() for r in _read_blocks(path, self.fmt, count)])  # not views: they would keep every block
            if lab.max() >= top:
                i = int(np.argmax(lab >= top))
                raise UserError(f"{path}: record {i} has label {lab[i]}, but {self.fmt['name']} labels are "
                                f"0..{top - 1}; the file is damaged or not {self.fmt['name']}: download it "
                                f"again from {DOWNLOAD}")
            out.append(lab.astype(np.int64))
        return np.concatenate(out)

    def blocks(self):
        for path, count in zip(self.paths, self.counts):
            for r in _read_blocks(path, self.fmt, count):
                yield r[:, self.fmt["label_bytes"]:].reshape((len(r),) + SHAPE), None

    def source(self):
        where = self.paths[0] if len(self.paths) == 1 else os.path.dirname(self.paths[0])
        return Source(where, sum(self.counts), SHAPE, np.dtype(np.uint8), "labels", self.labels(), self.blocks)


def _class_names(directory, fmt, which):
    path = os.path.join(directory, fmt["names"][which])
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        names = [line.strip() for line in fh if line.strip()]
    if len(names) != fmt["classes"][which]:
        raise UserError(f"{path}: {len(names)} class names, but {fmt['name']} has {fmt['classes'][which]} "
                        f"classes; fix or delete the file")
    return tuple(names)


def _which(fmt, labels):
    if fmt is CIFAR10:
        if labels is not None:
            raise UserError(f"--labels {labels}: CIFAR-10 records have one label; --labels coarse|fine "
                            f"is for CIFAR-100 (train.bin, test.bin)")
        return 0
    if labels not in (None, "coarse", "fine"):
        raise UserError(f"--labels {labels!r}: CIFAR-100 records have a coarse and a fine label; "
                        f"pass --labels coarse or --labels fine")
    return 0 if labels == "coarse" else 1


def open_cifar(path, labels=None, test=None, test_fraction=None):
    """({split: Source}, class names or None, number of classes) of a CIFAR binary folder
    or .bin file (and an optional ``test`` .bin file). A folder missing some of the
    download's files is converted as it is, with a line naming them (a missing test
    batch is no news when ``test_fraction`` will cut one from the training batches)."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.bin")), key=_batch_order)
        train = [p for p in files if os.path.basename(p) not in ("test_batch.bin", "test.bin")]
        tests = [p for p in files if os.path.basename(p) in ("test_batch.bin", "test.bin")]
        if test is not None and tests:
            raise UserError(f"{path} already holds {os.path.basename(tests[0])}; drop --test")
        if not train:
            raise UserError(f"{path}: no training batches (data_batch_N.bin or train.bin) among "
                            f"{', '.join(os.path.basename(p) for p in files)}")
    else:
        train, tests = [path], []
    if test is not None:
        tests = [test]
    fmts = {id(_format_of(p)) for p in train + tests}
    if len(fmts) > 1:
        raise UserError(f"{path}: mixes CIFAR-10 and CIFAR-100 files; convert each dataset on its own")
    fmt = _format_of(train[0])
    which = _which(fmt, labels)
    if os.path.isdir(path):
        _notice_missing(path, fmt, train, tests or test_fraction is not None)
    sources = {"train": _Batches(train, fmt, which).source()}
    if tests:
        sources["test"] = _Batches(tests, fmt, which).source()
    return sources, _class_names(os.path.dirname(os.path.abspath(train[0])), fmt, which), fmt["classes"][which]


def _notice_missing(path, fmt, train, has_test):
    """Print which of the download's files a folder lacks: CIFAR-10's data_batch_1..5.bin
    (1..N where more are numbered) and test_batch.bin, CIFAR-100's test.bin."""
    missing = []
    if fmt is CIFAR10:
        numbers = {int(m.group(1)) for m in (re.fullmatch(r"data_batch_(\d+)\.bin", os.path.basename(p))
                                             for p in train) if m}
        if numbers:
            missing = [f"data_batch_{i}.bin" for i in range(1, max(numbers | {5}) + 1) if i not in numbers]
    if not has_test:
        missing.append("test_batch.bin" if fmt is CIFAR10 else "test.bin")
    if missing:
        ships = "data_batch_1..5.bin and test_batch.bin" if fmt is CIFAR10 else "train.bin and test.bin"
        no_test = ", with no test split (add the test file, or pass --test FILE or --test-fraction F)"
        print(f"{path}: no {', '.join(missing)} (the {fmt['name']} download has {ships}); converting the "
              f"files that are there{'' if has_test else no_test}")


def _batch_order(path):
    """data_batch_2 before data_batch_10: by the number in the name, then the name."""
    m = re.search(r"(\d+)\.bin$", path)
    return (int(m.group(1)) if m else -1, path)
