"""Convert an image-folder tree, CIFAR binary files or arrays to an mpicnn HDF5 dataset
(``python -m mpicnn.data convert``), streaming: one block of samples in memory at a time.

    from mpicnn.data.convert import ConvertOptions, convert
    convert(ConvertOptions("pets/", "pets.h5", size=(64, 64)))        # ROOT/CLASS/*.png
    convert(ConvertOptions("cifar-10-batches-bin", "cifar10.h5"))     # data_batch_*.bin, test_batch.bin
    convert(ConvertOptions("train.npz", "data.h5"))                    # x_train/y_train[/x_test/y_test]
    convert(ConvertOptions("images.npy", "data.h5", labels="labels.npy", test_fraction=0.1))

The options are the command's flags (``--test-fraction`` is ``test_fraction``) and the
errors name those flags, since this is what the command runs. Here: which importer
reads the input (``import_images``, ``import_cifar``, ``import_arrays``), checks that
the splits agree, the number of classes, the ``--test-fraction`` split, then
``writer.write_sources`` streams it all into the file, atomically. Pickles are refused
by name and by their first bytes before anything is opened: CIFAR's Python version,
PyTorch ``.pt`` files, ``.pkl``.
"""
import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import UserError
from ..io.atomic import refuse_existing
from .import_arrays import open_arrays
from .import_cifar import DOWNLOAD, open_cifar
from .import_images import EXTENSIONS, is_image_tree, open_images
from .writer import write_sources

SOURCE = "python -m mpicnn.data convert"


@dataclass(frozen=True)
class ConvertOptions:
    input: str                          # a folder tree, CIFAR .bin file(s), .npz, .npy, .h5 or .csv[.gz]
    output: str                         # the .h5 file to write
    labels: Optional[str] = None        # .npy input: labels/targets/masks file; CIFAR-100: coarse|fine
    test: Optional[str] = None          # test images (same kinds as input)
    test_labels: Optional[str] = None   # labels of an .npy test input
    test_fraction: Optional[float] = None   # hold out this fraction of input (stratified)
    seed: int = 0                       # seed of test_fraction
    key: Optional[str] = None           # .npz / HDF5: name of the images array
    labels_key: Optional[str] = None    # .npz / HDF5: name of the labels (targets, masks) array
    label_column: Optional[str] = None  # CSV: "first" or "last"
    header: str = "auto"                # CSV: "auto", "yes", "no"
    channels: Optional[int] = None      # shape of flat pixel rows
    height: Optional[int] = None
    width: Optional[int] = None
    layout: str = "auto"                # "auto", "nchw", "nhwc", "ndhw"
    dtype: str = "auto"                 # "auto", "uint8", "float32", "float64"
    size: Optional[tuple] = None        # image folders: resize to (H, W)
    mode: Optional[str] = None          # image folders: "gray" or "rgb" (default: as the first image)
    num_classes: Optional[int] = None   # default: max label + 1 (folders: their number; CIFAR: 10/20/100)
    force: bool = False                 # overwrite output


# options that only some inputs read: (field, default, the inputs that read it)
_APPLIES = [("size", None, ("images",)), ("mode", None, ("images",)), ("labels", None, ("arrays", "cifar")),
            ("key", None, ("arrays",)), ("labels_key", None, ("arrays",)), ("label_column", None, ("arrays",)),
            ("channels", None, ("arrays",)), ("height", None, ("arrays",)), ("width", None, ("arrays",)),
            ("layout", "auto", ("arrays",)), ("dtype", "auto", ("arrays",)), ("test_labels", None, ("arrays",))]
_KIND_NAMES = {"images": "image folders", "cifar": "CIFAR .bin files", "arrays": "arrays"}


def convert(opts):
    """Read, validate and write ``opts.output``; returns its path."""
    refuse_existing(opts.output, opts.force)
    kind = input_kind(opts.input)
    if opts.test:
        refuse_pickles(opts.test)
    for field, default, readers in _APPLIES:
        if getattr(opts, field) != default and kind not in readers:
            raise UserError(f"--{field.replace('_', '-')} applies to {' and '.join(_KIND_NAMES[r] for r in readers)}, "
                            f"but {opts.input} is read as {_KIND_NAMES[kind]}; drop it")
    names = known = None
    if kind == "images":
        sources, names, known = open_images(opts.input, opts.size, opts.mode, opts.test)
    elif kind == "cifar":
        sources, names, known = open_cifar(opts.input, opts.labels, opts.test, opts.test_fraction)
    else:
        sources = open_arrays(opts)
    _check_agree(sources)
    num_classes = _num_classes(sources, known, names, opts)
    write_sources(opts.output, _routes(sources, opts), num_classes, names,
                  attrs={"source": f"converted from {os.path.basename(os.path.normpath(opts.input))} by {SOURCE}"},
                  overwrite=opts.force)
    return opts.output


# ---- what the input is ----------------------------------------------------------------------

_CIFAR_PYTHON = re.compile(r"(data_batch_\d+|test_batch|batches\.meta|train|test|meta)")
_PICKLE_EXT = (".pt", ".pth", ".pkl", ".pickle")
_ARCHIVE_EXT = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")


def _is_pickle(path):
    """A pickle starts with the PROTO opcode 0x80 and its protocol, 2 to 5."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _cifar_python_error(path):
    return UserError(f"{path} is CIFAR's Python version, which is pickled, and mpicnn never reads pickles "
                     f"(loading one can run any code); download the binary version (cifar-10-binary.tar.gz: "
                     f"data_batch_N.bin, test_batch.bin; cifar-100-binary.tar.gz: train.bin, test.bin) from "
                     f"{DOWNLOAD} and convert its folder")


def refuse_pickles(path):
    """UserError for a pickle: CIFAR's Python version, PyTorch files, .pkl, an archive of them."""
    base = os.path.basename(os.path.normpath(path)).lower()
    if base.endswith(_ARCHIVE_EXT):
        if "python" in base:
            raise _cifar_python_error(path)
        raise UserError(f"{path} is an archive; extract it (tar xf / unzip) and convert the folder or files in it")
    if base.endswith((".pt", ".pth")):
        raise UserError(f"{path} is a PyTorch file, which is pickled, and mpicnn never reads pickles (loading one "
                        f"can run any code); save the tensors as arrays instead (numpy.save('x.npy', t.numpy()), "
                        f"or numpy.savez for images and labels) and convert those")
    if os.path.isfile(path) and (base.endswith(_PICKLE_EXT) or _is_pickle(path)):
        if _CIFAR_PYTHON.fullmatch(base):
            raise _cifar_python_error(path)
        raise UserError(f"{path} is a Python pickle, and mpicnn never reads pickles (loading one can run any "
                        f"code); save the data as .npy/.npz arrays, HDF5 or image files and convert those")


def input_kind(path):
    """"images", "cifar" or "arrays" for ``path``, or a UserError (missing, pickled, unknown)."""
    if not os.path.exists(path):
        raise UserError(f"input {path!r} does not exist")
    refuse_pickles(path)
    if os.path.isdir(path):
        names = os.listdir(path)
        if any(n.endswith(".bin") for n in names):
            return "cifar"
        if "data_batch_1" in names or "batches.meta" in names:
            raise _cifar_python_error(path)
        if not is_image_tree(path):
            raise UserError(f"{path}: a folder without class subfolders or .bin files; give an image-folder "
                            f"tree (ROOT/CLASS/*.png, optionally ROOT/train and ROOT/test) or CIFAR .bin files")
        return "images"
    low = path.lower()
    if low.endswith(".bin"):
        return "cifar"
    if low.endswith(EXTENSIONS):
        raise UserError(f"{path} is one image; give the folder tree that holds the images, one subfolder "
                        f"per class (ROOT/CLASS/*{os.path.splitext(low)[1]})")
    return "arrays"


# ---- checks across splits -------------------------------------------------------------------

def _check_agree(sources):
    train = sources["train"]
    test = sources.get("test")
    if test is None:
        return
    if test.shape != train.shape:
        raise UserError(f"train samples are {train.shape} but test samples ({test.where}) are {test.shape}; "
                        f"both must have the same shape")
    if test.kind != train.kind or (train.kind == "targets" and test.targets.shape[1] != train.targets.shape[1]):
        raise UserError(f"train has {train.kind} but test ({test.where}) has {test.kind}"
                        f"{' of another width' if test.kind == train.kind else ''}; both need the same kind")
    if test.dtype != train.dtype:
        train.dtype = test.dtype = np.promote_types(train.dtype, test.dtype)


def _num_classes(sources, known, names, opts):
    train = sources["train"]
    if train.kind == "masks":
        return opts.num_classes          # found while writing, checked against this
    if train.kind == "targets":
        k = train.targets.shape[1]
        if opts.num_classes not in (None, k):
            raise UserError(f"--num-classes {opts.num_classes}, but the regression targets have {k} columns; drop it")
        return k
    top = max(int(s.targets.max()) for s in sources.values()) + 1
    nc = opts.num_classes or known or top
    if top > nc:
        raise UserError(f"--num-classes {nc} but the labels go up to {top - 1}")
    if names is not None and nc != len(names):
        raise UserError(f"--num-classes {nc}, but the input names {len(names)} classes; drop --num-classes")
    return nc


def _routes(sources, opts):
    """[(source, {split: mask or None})]: each source to its split, or the train source
    cut by ``--test-fraction`` (stratified by class for labels)."""
    if opts.test_fraction is None:
        return [(src, {split: None}) for split, src in sources.items()]
    if "test" in sources:
        raise UserError("--test-fraction splits the input, but a test split is already given; drop one")
    if not 0 < opts.test_fraction < 1:
        raise UserError(f"--test-fraction {opts.test_fraction} must be between 0 and 1")
    train = sources["train"]
    if train.kind == "labels":
        test = _stratified_test(train.targets, opts.test_fraction, opts.seed)
    else:
        test = np.zeros(train.count, bool)
        test[np.random.default_rng(opts.seed).permutation(train.count)[:int(round(opts.test_fraction * train.count))]] = True
    if test.all() or not test.any():
        raise UserError(f"--test-fraction {opts.test_fraction} leaves an empty split of {train.count} samples")
    return [(train, {"train": ~test, "test": test})]


def _stratified_test(labels, fraction, seed):
    """A mask of round(fraction * n_c) random samples of each class c."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[:int(round(fraction * len(idx)))]] = True
    return test
