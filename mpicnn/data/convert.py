"""Convert NumPy arrays and CSV tables to an mpicnn HDF5 dataset (``python -m mpicnn.data convert``).

    from mpicnn.data.convert import ConvertOptions, convert
    convert(ConvertOptions("train.npz", "data.h5"))                    # x_train/y_train[/x_test/y_test]
    convert(ConvertOptions("images.npy", "data.h5", labels="labels.npy", test_fraction=0.1))

The options are the command's flags (``--test-fraction`` is ``test_fraction``) and the
errors name those flags, since this is what the command runs. Inputs are validated
(shape, dtype, finite values, whole-number labels) before anything is written, and the
file is written atomically. Pickled arrays are refused.
"""
import gzip
import math
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import UserError
from .hdf5 import refuse_existing, sample_blocks, value_range, write_dataset

SOURCE = "python -m mpicnn.data convert"


@dataclass(frozen=True)
class ConvertOptions:
    input: str                          # train images: .npz, .npy (with labels) or .csv[.gz]
    output: str                         # the .h5 file to write
    labels: Optional[str] = None        # labels of an .npy input (.npy or text, one per line)
    test: Optional[str] = None          # test images (same kinds as input)
    test_labels: Optional[str] = None   # labels of an .npy test input
    test_fraction: Optional[float] = None   # hold out this fraction of input (stratified)
    seed: int = 0                       # seed of test_fraction
    images_key: Optional[str] = None    # .npz array names
    labels_key: Optional[str] = None
    label_column: Optional[str] = None  # CSV: "first" or "last"
    header: str = "auto"                # CSV: "auto", "yes", "no"
    channels: Optional[int] = None      # shape of flat pixel rows
    height: Optional[int] = None
    width: Optional[int] = None
    layout: str = "auto"                # "auto", "nchw", "nhwc"
    dtype: str = "auto"                 # "auto", "uint8", "float32", "float64"
    num_classes: Optional[int] = None   # default: max label + 1
    force: bool = False                 # overwrite output


def convert(opts):
    """Read, validate and write ``opts.output``; returns its path."""
    refuse_existing(opts.output, opts.force)
    arrays = _split_arrays(_validated(_load_inputs(opts), opts), opts)
    top = max(int(y.max()) for _, y in arrays.values()) + 1
    nc = opts.num_classes or top
    if top > nc:
        raise UserError(f"--num-classes {nc} but the labels go up to {top - 1}")
    write_dataset(opts.output, arrays, num_classes=nc,
                  attrs={"source": f"converted from {os.path.basename(opts.input)} by {SOURCE}"},
                  overwrite=opts.force)
    return opts.output


def _load_inputs(opts):
    """{split: (images, labels, where)} from the input (and test) files."""
    loaded = _load(opts.input, opts.labels, opts, "train")
    if opts.test:
        if "test" in loaded:
            raise UserError(f"{opts.input} already holds a test split; drop --test")
        loaded.update(_load(opts.test, opts.test_labels, opts, "test"))
    elif opts.test_labels:
        raise UserError("--test-labels needs --test IMAGES")
    if opts.test_fraction is not None:
        if "test" in loaded:
            raise UserError("--test-fraction splits the input, but a test split is already given; drop one")
        if not 0 < opts.test_fraction < 1:
            raise UserError(f"--test-fraction {opts.test_fraction} must be between 0 and 1")
    return loaded


def _validated(loaded, opts):
    """{split: (NCHW images of the stored dtype, int64 labels)}, checked against each other."""
    splits = {}
    for split, (x, y, where) in loaded.items():
        x = _to_nchw(x, opts, where)
        if len(x) == 0:
            raise UserError(f"{where}: no samples")
        dtype = _convert_dtype(x, opts.dtype, where)
        splits[split] = (x, _convert_labels(y, len(x), where), dtype)
    if "test" in splits and splits["test"][0].shape[1:] != splits["train"][0].shape[1:]:
        raise UserError(f"train images are (C, H, W) = {splits['train'][0].shape[1:]} but test images are "
                        f"{splits['test'][0].shape[1:]}; both must have the same shape")
    if "test" in splits and splits["test"][2] != splits["train"][2]:
        wide = np.promote_types(splits["test"][2], splits["train"][2])
        splits = {k: (x, y, wide) for k, (x, y, _) in splits.items()}
    return {k: (np.ascontiguousarray(x, dtype=dt) if x.dtype != dt or not x.flags.c_contiguous else x, y)
            for k, (x, y, dt) in splits.items()}


def _split_arrays(arrays, opts):
    """Hold out ``opts.test_fraction`` of the train split, stratified by class."""
    if opts.test_fraction is None:
        return arrays
    x, y = arrays["train"]
    tr, te = _stratified_split(y, opts.test_fraction, opts.seed)
    if len(tr) == 0 or len(te) == 0:
        raise UserError(f"--test-fraction {opts.test_fraction} leaves an empty split of {len(y)} samples")
    x = np.asarray(x)
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te])}


# ---- loading inputs -------------------------------------------------------------------------

def _np_load(path, mmap=False):
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise UserError(f"input file {path!r} does not exist") from None
    except ValueError as e:
        raise UserError(f"{path}: cannot load ({e}); object/pickled arrays are refused, save plain "
                        f"numeric arrays with np.save/np.savez") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read it as a NumPy .npy/.npz file ({e})") from None


def _npz_get(z, path, key):
    try:
        return z[key]
    except ValueError as e:
        raise UserError(f"{path}: array {key!r} cannot be loaded ({e}); object/pickled arrays are "
                        f"refused, save plain numeric arrays") from None


_TRAIN_KEYS = [("images", "labels"), ("x", "y"), ("X", "Y"), ("x_train", "y_train"),
               ("X_train", "y_train"), ("train_images", "train_labels"), ("data", "labels")]
_TEST_KEYS = [("x_test", "y_test"), ("X_test", "y_test"), ("test_images", "test_labels")]


def _load_npz(path, opts, role):
    z = _np_load(path)
    with z:
        keys = set(z.files)
        if opts.images_key or opts.labels_key:
            if not (opts.images_key and opts.labels_key):
                raise UserError("--images-key and --labels-key go together; pass both")
            for k in (opts.images_key, opts.labels_key):
                if k not in keys:
                    raise UserError(f"{path}: no array {k!r} (it has {', '.join(sorted(keys))})")
            pair = (opts.images_key, opts.labels_key)
        else:
            pair = next((p for p in _TRAIN_KEYS if p[0] in keys and p[1] in keys), None)
            if pair is None:
                raise UserError(f"{path}: cannot tell images from labels among its arrays "
                                f"({', '.join(sorted(keys))}); name them with --images-key and --labels-key")
        out = {role: (_npz_get(z, path, pair[0]), _npz_get(z, path, pair[1]), f"{path}[{pair[0]}]")}
        test = next((p for p in _TEST_KEYS if p[0] in keys and p[1] in keys), None)
        if role == "train" and test is not None and not opts.images_key:
            out["test"] = (_npz_get(z, path, test[0]), _npz_get(z, path, test[1]), f"{path}[{test[0]}]")
    return out


def _load_labels_file(path):
    if path is None:
        return None
    if path.endswith(".npy"):
        return _np_load(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.loadtxt(path, dtype=np.float64, ndmin=1, delimiter=None)
    except (OSError, ValueError) as e:
        raise UserError(f"labels file {path!r}: cannot read one number per line ({e})") from None


def _read_text(path):
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise UserError(f"input file {path!r} does not exist") from None
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path!r}: {e}") from None


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def _load_csv(path, opts):
    if opts.label_column is None:
        raise UserError(f"{path}: say which CSV column holds the label: --label-column first or "
                        f"--label-column last")
    text = _read_text(path).replace(b"\r\n", b"\n").strip()
    lines = text.split(b"\n", 1)
    first = lines[0].decode("utf-8", "replace").split(",")
    header = opts.header == "yes" or (opts.header == "auto" and not all(_is_number(x) for x in first))
    if header:
        text = lines[1] if len(lines) > 1 else b""
        first = text.split(b"\n", 1)[0].decode("utf-8", "replace").split(",")
    ncols = len(first)
    nrows = text.count(b"\n") + 1 if text else 0
    if nrows == 0 or ncols < 2:
        raise UserError(f"{path}: expected rows of a label and pixel values separated by commas, "
                        f"found {nrows} rows of {ncols} columns")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.fromstring(text.replace(b"\n", b","), dtype=np.float64, sep=",")
    if values.size != nrows * ncols:
        raise UserError(f"{path}: could not parse {nrows} rows of {ncols} numbers (rows of different "
                        f"lengths, empty fields or non-numeric values after the header)")
    table = values.reshape(nrows, ncols)
    lab_col = 0 if opts.label_column == "first" else ncols - 1
    pixels = np.delete(table, lab_col, axis=1)
    return pixels, table[:, lab_col]


def _load(path, labels_path, opts, role):
    """{split: (images, labels, where)} read from one input file."""
    low = path.lower()
    if low.endswith(".npz"):
        if labels_path:
            raise UserError(f"{path}: an .npz holds its own labels; drop --labels/--test-labels")
        return _load_npz(path, opts, role)
    if low.endswith(".npy"):
        if not labels_path:
            flag = "--labels" if role == "train" else "--test-labels"
            raise UserError(f"{path}: an .npy holds only images; give the labels with {flag} FILE.npy")
        return {role: (_np_load(path, mmap=True), _load_labels_file(labels_path), path)}
    if low.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        if labels_path:
            raise UserError(f"{path}: a CSV holds its own labels (--label-column); drop --labels/--test-labels")
        images, labels = _load_csv(path, opts)
        return {role: (images, labels, path)}
    raise UserError(f"input file {path!r}: unknown type; use .npy (with --labels), .npz or .csv[.gz]")


# ---- shaping and dtypes ---------------------------------------------------------------------

def _to_nchw(x, opts, where):
    if x.ndim == 2:
        n, p = x.shape
        c = opts.channels or 1
        h, w = opts.height, opts.width
        if h is None and w is None:
            s = math.isqrt(p // c) if p % c == 0 else 0
            if s * s * c != p:
                raise UserError(f"{where}: rows of {p} pixels are not square {c}-channel images; "
                                f"give --height and --width (and --channels)")
            h = w = s
        elif h is None:
            h = p // (c * w) if p % (c * w) == 0 else 0
        elif w is None:
            w = p // (c * h) if p % (c * h) == 0 else 0
        if c * h * w != p:
            raise UserError(f"{where}: rows have {p} pixels, which is not --channels {c} x --height "
                            f"{opts.height} x --width {opts.width}")
        if opts.layout == "nhwc":
            return x.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return x.reshape(n, c, h, w)
    if x.ndim == 3:
        if opts.channels not in (None, 1):
            raise UserError(f"{where}: 3-D images {x.shape} have one channel, but --channels {opts.channels}")
        return x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
    if x.ndim == 4:
        layout = opts.layout
        if layout == "auto":
            # the channel axis is the smaller of axes 1 and 3 (N,3,32,32 vs N,32,32,3)
            if x.shape[1] < x.shape[3]:
                layout = "nchw"
            elif x.shape[3] < x.shape[1]:
                layout = "nhwc"
                print(f"{where}: images {x.shape} look channels-last; storing them as NCHW "
                      f"(pass --layout nchw if that is wrong)")
            else:
                raise UserError(f"{where}: cannot tell the channel axis of images {x.shape}; "
                                f"pass --layout nchw or --layout nhwc")
        return x.transpose(0, 3, 1, 2) if layout == "nhwc" else x
    raise UserError(f"{where}: images have shape {x.shape}; expected (N, C, H, W), (N, H, W, C) with "
                    f"--layout nhwc, (N, H, W) or flat rows (N, pixels)")


def _convert_dtype(x, want, where):
    k = x.dtype.kind
    if k not in "uif":
        raise UserError(f"{where}: images have dtype {x.dtype}; expected numbers (uint8 or float)")
    if k == "f":
        for s, e in sample_blocks(len(x), x[0].nbytes):
            if not np.isfinite(np.asarray(x[s:e])).all():
                raise UserError(f"{where}: images contain NaN or infinite values; fix or drop those samples")
    if want == "auto":
        if x.dtype == np.uint8:
            want = "uint8"
        elif k in "iu" or (k == "f" and _integral(x)):
            lo, hi = value_range(x)
            want = "uint8" if lo >= 0 and hi <= 255 else "float32"
        else:
            want = "float32"
    if want == "uint8" and x.dtype != np.uint8:
        lo, hi = value_range(x)
        if lo < 0 or hi > 255 or (k == "f" and not _integral(x)):
            raise UserError(f"{where}: --dtype uint8 needs whole values in 0..255, found [{lo:g}, {hi:g}]")
    return np.dtype(want)


def _integral(x):
    for s, e in sample_blocks(len(x), x[0].nbytes):
        b = np.asarray(x[s:e])
        if not np.array_equal(b, np.round(b)):
            return False
    return True


def _convert_labels(y, n, where):
    if y is None:
        raise UserError(f"{where}: no labels")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{where}: labels have shape {y.shape}; expected (N,) class indices "
                        f"(for one-hot labels save argmax(axis=1))")
    if len(y) != n:
        raise UserError(f"{where}: {n} images but {len(y)} labels; the counts must match")
    if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
        raise UserError(f"{where}: labels have dtype {y.dtype}; expected integer class indices")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
        raise UserError(f"{where}: labels are not whole numbers; expected integer class indices")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise UserError(f"{where}: label {y.min()} is negative; labels must be class indices 0..K-1")
    return y


def _stratified_split(labels, fraction, seed):
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:int(round(fraction * len(idx)))])
    test = np.sort(np.concatenate(test))
    mask = np.ones(len(labels), bool)
    mask[test] = False
    return np.flatnonzero(mask), test
