"""``python -m mpicnn.data``: convert, generate, prepare and inspect datasets.

    python -m mpicnn.data convert train.npz -o data.h5                 # x_train/y_train/x_test/y_test
    python -m mpicnn.data convert images.npy --labels labels.npy --test-fraction 0.1 -o data.h5
    python -m mpicnn.data convert train.csv --label-column first --test test.csv -o data.h5
    python -m mpicnn.data generate shapes --size 256 --train 500 -o shapes256.h5
    python -m mpicnn.data prepare mnist5k
    python -m mpicnn.data inspect data.h5

Errors are one line ``mpicnn: error: ...`` on stderr with exit status 2.
"""
import argparse
import gzip
import math
import os
import sys
import warnings

import numpy as np

from ..errors import UserError
from . import builtin, shapes, volumes
from .hdf5 import SPLITS, Dataset, open_h5, check_file, write_dataset, _sample_blocks

PROG = "python -m mpicnn.data"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see '{self.prog} --help')")


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


def _load_npz(path, args, role):
    z = _np_load(path)
    with z:
        keys = set(z.files)
        if args.images_key or args.labels_key:
            if not (args.images_key and args.labels_key):
                raise UserError("--images-key and --labels-key go together; pass both")
            for k in (args.images_key, args.labels_key):
                if k not in keys:
                    raise UserError(f"{path}: no array {k!r} (it has {', '.join(sorted(keys))})")
            pair = (args.images_key, args.labels_key)
        else:
            pair = next((p for p in _TRAIN_KEYS if p[0] in keys and p[1] in keys), None)
            if pair is None:
                raise UserError(f"{path}: cannot tell images from labels among its arrays "
                                f"({', '.join(sorted(keys))}); name them with --images-key and --labels-key")
        out = {role: (_npz_get(z, path, pair[0]), _npz_get(z, path, pair[1]), f"{path}[{pair[0]}]")}
        test = next((p for p in _TEST_KEYS if p[0] in keys and p[1] in keys), None)
        if role == "train" and test is not None and not args.images_key:
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


def _load_csv(path, args):
    if args.label_column is None:
        raise UserError(f"{path}: say which CSV column holds the label: --label-column first or "
                        f"--label-column last")
    text = _read_text(path).replace(b"\r\n", b"\n").strip()
    lines = text.split(b"\n", 1)
    first = lines[0].decode("utf-8", "replace").split(",")
    header = args.header == "yes" or (args.header == "auto" and not all(_is_number(x) for x in first))
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
    lab_col = 0 if args.label_column == "first" else ncols - 1
    pixels = np.delete(table, lab_col, axis=1)
    return pixels, table[:, lab_col]


def _load(path, labels_path, args, role):
    """{split: (images, labels, where)} read from one input file."""
    low = path.lower()
    if low.endswith(".npz"):
        if labels_path:
            raise UserError(f"{path}: an .npz holds its own labels; drop --labels/--test-labels")
        return _load_npz(path, args, role)
    if low.endswith(".npy"):
        if not labels_path:
            flag = "--labels" if role == "train" else "--test-labels"
            raise UserError(f"{path}: an .npy holds only images; give the labels with {flag} FILE.npy")
        return {role: (_np_load(path, mmap=True), _load_labels_file(labels_path), path)}
    if low.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        if labels_path:
            raise UserError(f"{path}: a CSV holds its own labels (--label-column); drop --labels/--test-labels")
        images, labels = _load_csv(path, args)
        return {role: (images, labels, path)}
    raise UserError(f"input file {path!r}: unknown type; use .npy (with --labels), .npz or .csv[.gz]")


# ---- shaping and dtypes ---------------------------------------------------------------------

def _to_nchw(x, args, where):
    if x.ndim == 2:
        n, p = x.shape
        c = args.channels or 1
        h, w = args.height, args.width
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
                            f"{args.height} x --width {args.width}")
        if args.layout == "nhwc":
            return x.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return x.reshape(n, c, h, w)
    if x.ndim == 3:
        if args.channels not in (None, 1):
            raise UserError(f"{where}: 3-D images {x.shape} have one channel, but --channels {args.channels}")
        return x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
    if x.ndim == 4:
        layout = args.layout
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


def _value_range(x):
    lo, hi = np.inf, -np.inf
    for s, e in _sample_blocks(len(x), x[0].nbytes if len(x) else 1):
        b = np.asarray(x[s:e])
        lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
    return lo, hi


def _convert_dtype(x, want, where):
    k = x.dtype.kind
    if k not in "uif":
        raise UserError(f"{where}: images have dtype {x.dtype}; expected numbers (uint8 or float)")
    if k == "f":
        for s, e in _sample_blocks(len(x), x[0].nbytes):
            if not np.isfinite(np.asarray(x[s:e])).all():
                raise UserError(f"{where}: images contain NaN or infinite values; fix or drop those samples")
    if want == "auto":
        if x.dtype == np.uint8:
            want = "uint8"
        elif k in "iu" or (k == "f" and _integral(x)):
            lo, hi = _value_range(x)
            want = "uint8" if lo >= 0 and hi <= 255 else "float32"
        else:
            want = "float32"
    if want == "uint8" and x.dtype != np.uint8:
        lo, hi = _value_range(x)
        if lo < 0 or hi > 255 or (k == "f" and not _integral(x)):
            raise UserError(f"{where}: --dtype uint8 needs whole values in 0..255, found [{lo:g}, {hi:g}]")
    return np.dtype(want)


def _integral(x):
    for s, e in _sample_blocks(len(x), x[0].nbytes):
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


def _check_output(args):
    if os.path.exists(args.output) and not args.force:
        raise UserError(f"output file {args.output!r} already exists; pass --force to overwrite it")


def cmd_convert(args):
    _check_output(args)
    loaded = _load(args.input, args.labels, args, "train")
    if args.test:
        if "test" in loaded:
            raise UserError(f"{args.input} already holds a test split; drop --test")
        loaded.update(_load(args.test, args.test_labels, args, "test"))
    elif args.test_labels:
        raise UserError("--test-labels needs --test IMAGES")
    if args.test_fraction is not None:
        if "test" in loaded:
            raise UserError("--test-fraction splits the input, but a test split is already given; drop one")
        if not 0 < args.test_fraction < 1:
            raise UserError(f"--test-fraction {args.test_fraction} must be between 0 and 1")
    splits = {}
    for split, (x, y, where) in loaded.items():
        x = _to_nchw(x, args, where)
        if len(x) == 0:
            raise UserError(f"{where}: no samples")
        dtype = _convert_dtype(x, args.dtype, where)
        splits[split] = (x, _convert_labels(y, len(x), where), dtype)
    if "test" in splits and splits["test"][0].shape[1:] != splits["train"][0].shape[1:]:
        raise UserError(f"train images are (C, H, W) = {splits['train'][0].shape[1:]} but test images are "
                        f"{splits['test'][0].shape[1:]}; both must have the same shape")
    if "test" in splits and splits["test"][2] != splits["train"][2]:
        wide = np.promote_types(splits["test"][2], splits["train"][2])
        splits = {k: (x, y, wide) for k, (x, y, _) in splits.items()}
    arrays = {k: (np.ascontiguousarray(x, dtype=dt) if x.dtype != dt or not x.flags.c_contiguous else x, y)
              for k, (x, y, dt) in splits.items()}
    if args.test_fraction is not None:
        x, y = arrays["train"]
        tr, te = _stratified_split(y, args.test_fraction, args.seed)
        if len(tr) == 0 or len(te) == 0:
            raise UserError(f"--test-fraction {args.test_fraction} leaves an empty split of {len(y)} samples")
        x = np.asarray(x)
        arrays = {"train": (x[tr], y[tr]), "test": (x[te], y[te])}
    top = max(int(y.max()) for _, y in arrays.values()) + 1
    nc = args.num_classes or top
    if top > nc:
        raise UserError(f"--num-classes {nc} but the labels go up to {top - 1}")
    write_dataset(args.output, arrays, num_classes=nc,
                  attrs={"source": f"converted from {os.path.basename(args.input)} by {PROG} convert"},
                  overwrite=args.force)
    print(f"wrote {args.output}")
    inspect(args.output, value_range=False)


def cmd_generate(args):
    _check_output(args)
    if args.kind == "shapes":
        seed = shapes.SEED if args.seed is None else args.seed
        path = shapes.generate(args.output, args.size, args.train, args.test, seed, overwrite=args.force)
    else:
        path = volumes.generate(args.kind, args.output, args.size, args.train, args.test, args.seed,
                                overwrite=args.force)
    print(f"wrote {path}")
    inspect(path, value_range=False)


def cmd_prepare(args):
    print(builtin.prepare(args.spec))


def inspect(spec, value_range=True):
    path = builtin.prepare(spec) if builtin.is_builtin(spec) else builtin.resolve(spec)
    with open_h5(path) as f:
        info = check_file(f, path)
        chunks = {s: f[f"{s}/images"].chunks for s in info.splits}
    size = os.path.getsize(path)
    print(f"file: {os.path.abspath(path)} ({size / 2 ** 20:.1f} MiB)")
    origin = {"attribute": "the file attribute", "targets": "the targets' columns"}.get(
        info.num_classes_from, f"max {info.num_classes_from} + 1")
    print(f"{'targets' if info.task == 'regression' else 'num_classes'}: {info.num_classes} (from {origin})")
    if info.class_names:
        print(f"class_names: {', '.join(info.class_names)}")
    for split in SPLITS:
        if split not in info.splits:
            print(f"{split}: (none)")
            continue
        with Dataset(path, split, cache_mb=0) as ds:   # full validation, NaN scan included
            s = info.splits[split]
            note = " (read as value/255, in [0, 1])" if ds.dtype == np.uint8 else ""
            axes = "(C, D, H, W)" if len(ds.shape) == 4 else "(C, H, W)"
            print(f"{split}: {ds.num_samples} samples, {ds.task}, image shape {axes} = {ds.shape}, "
                  f"dtype {ds.dtype}{note}, chunks {chunks[split]}")
            if value_range:
                lo, hi = _value_range(ds._images)
                print(f"  values on disk: [{lo:g}, {hi:g}]")
            if ds.task == "regression":
                t = s.labels
                print("  targets (mean, std): " + " ".join(f"{k}:({m:.3g}, {d:.3g})" for k, (m, d)
                                                            in enumerate(zip(t.mean(0).tolist(), t.std(0).tolist()))))
                continue
            if ds.task == "segmentation":
                counts = np.zeros(info.num_classes, np.int64)
                masks = ds._masks
                for a, b in _sample_blocks(len(masks), masks[0].nbytes):
                    counts += np.bincount(np.asarray(masks[a:b]).ravel(), minlength=info.num_classes)
                what = "pixel class counts"
            else:
                counts, what = np.bincount(s.labels, minlength=info.num_classes), "class counts"
            print(f"  {what}: " + " ".join(f"{c}:{k}" for c, k in enumerate(counts.tolist())))
    print("ok")


def cmd_inspect(args):
    inspect(args.spec)


def build_parser():
    p = Parser(prog=PROG, description="Create, generate and check mpicnn HDF5 datasets "
                                      "(/train/images (N, C, H, W), /train/labels (N,), optional /test/...).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    c = sub.add_parser("convert", help="convert .npy/.npz/.csv arrays to the HDF5 format",
                       description="Convert arrays to an mpicnn HDF5 dataset. uint8 images (or whole "
                                   "numbers 0..255) are stored as uint8 and read as value/255; other "
                                   "numbers are stored as float32 and read as they are.")
    c.add_argument("input", help="train images: .npz (images+labels, or x_train/y_train[/x_test/y_test]), "
                                 ".npy (with --labels) or .csv[.gz] (one image per row, with its label)")
    c.add_argument("-o", "--output", required=True, help="output .h5 file")
    c.add_argument("--labels", help="labels of an .npy input (.npy, or text: one per line)")
    c.add_argument("--test", help="test images (same kinds as INPUT)")
    c.add_argument("--test-labels", help="labels of an .npy --test input")
    c.add_argument("--test-fraction", type=float, help="hold out this fraction of INPUT (stratified) as the test split")
    c.add_argument("--seed", type=int, default=0, help="seed of --test-fraction (default 0)")
    c.add_argument("--images-key", help="array name of the images in an .npz")
    c.add_argument("--labels-key", help="array name of the labels in an .npz")
    c.add_argument("--label-column", choices=["first", "last"],
                   help="CSV: which column is the label (required for CSV)")
    c.add_argument("--header", choices=["auto", "yes", "no"], default="auto",
                   help="CSV: skip a header line (auto: when the first line is not all numbers)")
    c.add_argument("--channels", type=_positive, help="channels of flat pixel rows (default 1)")
    c.add_argument("--height", type=_positive, help="image height of flat pixel rows (default: square)")
    c.add_argument("--width", type=_positive, help="image width of flat pixel rows (default: square)")
    c.add_argument("--layout", choices=["auto", "nchw", "nhwc"], default="auto",
                   help="axis order of 4-D arrays (and of flat rows: nhwc = pixel-interleaved channels)")
    c.add_argument("--dtype", choices=["auto", "uint8", "float32", "float64"], default="auto",
                   help="stored image dtype (auto: uint8 for whole numbers 0..255, else float32)")
    c.add_argument("--num-classes", type=_positive, help="number of classes (default: max label + 1)")
    c.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
    c.set_defaults(func=cmd_convert)

    g = sub.add_parser("generate", help="write a synthetic dataset (shapes, cosmo, blobs)")
    g.add_argument("kind", choices=["shapes", "cosmo", "blobs"],
                   help="synthetic dataset kind: shapes (classification), cosmo (3-D regression), "
                        "blobs (segmentation)")
    g.add_argument("--size", type=_positive, required=True, help="image (volume) side in pixels (voxels)")
    g.add_argument("--train", type=_positive, help="train samples (default: the built-in's, e.g. shapes "
                                                   "clamp(2**26 // SIZE**2, 64, 2000))")
    g.add_argument("--test", type=_positive, help="test samples (default max(train // 4, 32); cosmo, blobs 16)")
    g.add_argument("--seed", type=_nonneg, help="seed (default: the built-in's)")
    g.add_argument("-o", "--output", required=True, help="output .h5 file")
    g.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("prepare", help="build a built-in dataset's cache file and print its path")
    r.add_argument("spec", help=builtin.BUILTIN_HELP)
    r.set_defaults(func=cmd_prepare)

    i = sub.add_parser("inspect", help="validate a dataset and print its splits, shapes, dtypes, classes")
    i.add_argument("spec", help="an .h5 file or a built-in name")
    i.set_defaults(func=cmd_inspect)
    return p


def _positive(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s} must be at least 1")
    return v


def _nonneg(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s} must not be negative")
    return v


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except UserError as e:
        print(f"mpicnn: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"mpicnn: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
