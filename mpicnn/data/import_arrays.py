"""Arrays as ``writer.Source``s: ``.npy`` (with ``--labels FILE``), ``.npz`` (by key),
HDF5 datasets (``--key``/``--labels-key``) and ``.csv[.gz]`` tables.

    sources = open_arrays(opts)          # {"train": Source, ["test": Source]}

Images and masks are read block by block along the sample axis: ``.npy`` files and
``.npz`` members (stored or compressed) as byte streams after their header, HDF5
datasets by slices; only labels and regression targets ((N,) and (N, K), small) are read
whole. A CSV table is parsed in memory (it is for small tables). Object (pickled)
arrays are refused from the header, before any data is read.

Shapes: (N, C, H, W), (N, H, W, C) (``--layout nhwc``), (N, H, W), flat rows
(N, pixels) with ``--channels/--height/--width``; volumes (N, C, D, H, W),
(N, D, H, W, C) (``--layout nhwc``) or (N, D, H, W) (``--layout ndhw``). The targets
array says the task: (N,) whole numbers are class labels, (N, K) floats regression
targets, an integer array of the images' spatial shape per-pixel masks (segmentation).
uint8 images (or whole numbers 0..255, auto) are stored as uint8, others as float32.
"""
import gzip
import math
import tokenize
import warnings
import zipfile
import zlib
from contextlib import contextmanager

import h5py
import numpy as np

from ..errors import UserError
from .writer import Source, block_rows

PICKLED = "object/pickled arrays are refused, save plain numeric arrays with np.save/np.savez"
# what a damaged .npz member raises when opened (its entry's compression method, flags,
# offset) or read (its CRC, its deflate stream, its end)
DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError)

# ---- arrays read by blocks ------------------------------------------------------------------

class _NpyStream:
    """A .npy array (a file, or a member of an .npz) read along its first axis from a
    fresh binary stream: ``opener()`` returns one positioned at the .npy magic."""

    def __init__(self, opener, where):
        self.opener, self.where = opener, where
        with self._open() as fh:
            self.shape, self.fortran, self.dtype = self._header(fh)

    @contextmanager
    def _open(self):
        """The stream; a file found damaged when opened or while streaming (possibly in
        the middle of the write) is one line naming it."""
        try:
            with self.opener() as fh:
                yield fh
        except DAMAGED as e:
            raise UserError(f"{self.where}: cannot read it ({str(e) or type(e).__name__}), it may be damaged; "
                            f"save or copy it again") from None

    def _header(self, fh):
        try:
            version = np.lib.format.read_magic(fh)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"format version {version[0]}.{version[1]} (unicode field names)")
            shape, fortran, dtype = read(fh)
        except (ValueError, OSError) as e:
            raise UserError(f"{self.where}: cannot read it as a NumPy array ({e})") from None
        except tokenize.TokenError:     # NumPy's header parser on a garbled header
            raise UserError(f"{self.where}: its .npy header is garbled (damaged); save or copy it again") from None
        if dtype.hasobject:
            raise UserError(f"{self.where}: holds Python objects; {PICKLED}")
        return shape, fortran, dtype

    def blocks(self, rows):
        if self.fortran and len(self.shape) > 1:
            raise UserError(f"{self.where}: the array is stored in Fortran order, which cannot be read one "
                            f"sample at a time; save np.ascontiguousarray(x) instead")
        row = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        with self._open() as fh:
            self._header(fh)
            for s in range(0, self.shape[0], rows):
                n = min(rows, self.shape[0] - s)
                buf = bytearray(n * row)
                got = _read_into(fh, memoryview(buf))
                if got != len(buf):
                    raise UserError(f"{self.where}: ends early, in sample {s + got // max(row, 1)} of "
                                    f"{self.shape[0]} (truncated); save or copy it again")
                yield np.frombuffer(buf, self.dtype).reshape((n,) + self.shape[1:])

    def read(self):
        """The whole array (labels and targets, which are small), in either order."""
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        with self._open() as fh:
            self._header(fh)
            buf = fh.read(nbytes)
        if len(buf) != nbytes:
            raise UserError(f"{self.where}: ends early (truncated); save or copy it again")
        return np.frombuffer(buf, self.dtype).reshape(self.shape, order="F" if self.fortran else "C")


def _read_into(fh, view, piece=1 << 20):
    """Fill ``view`` from ``fh`` in 1 MiB reads (a zip member's one big read would build
    several copies of the block); returns the bytes read (fewer at the end of the file)."""
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:got + piece])
        if not n:
            break
        got += n
    return got


def _npy_file(path):
    return _NpyStream(lambda: _open(path), path)


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"input file {path!r} does not exist") from None


class _H5Array:
    """An HDF5 dataset ``key`` of ``path`` read by slices of its first axis."""

    def __init__(self, path, key):
        self.path, self.key, self.where = path, key, f"{path}[{key}]"
        try:
            with h5py.File(path, "r") as f:
                ds = f.get(key)
                if not isinstance(ds, h5py.Dataset):
                    names = []
                    f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Dataset) else None)
                    raise UserError(f"{path}: no dataset {key!r} (it has {', '.join(names[:12]) or 'none'}"
                                    f"{', ...' if len(names) > 12 else ''}); name it with --key/--labels-key")
                self.shape, self.dtype = ds.shape, ds.dtype
        except OSError as e:
            raise UserError(f"{path}: cannot open it as HDF5 ({e})") from None
        if self.dtype.kind not in "biuf" or self.shape is None:
            raise UserError(f"{self.where}: dtype {self.dtype}; expected a numeric array")

    def blocks(self, rows):
        with h5py.File(self.path, "r") as f:
            ds = f[self.key]
            for s in range(0, self.shape[0], rows):
                yield ds[s:s + rows]

    def read(self):
        with h5py.File(self.path, "r") as f:
            return f[self.key][()]


class _Memory:
    """An array already in memory (a CSV table, a text labels file)."""

    def __init__(self, array, where):
        self.array, self.where = np.asarray(array), where
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def blocks(self, rows):
        for s in range(0, self.shape[0], rows):
            yield self.array[s:s + rows]

    def read(self):
        return self.array


# ---- inputs ---------------------------------------------------------------------------------

_TRAIN_KEYS = [("images", "labels"), ("x", "y"), ("X", "Y"), ("x_train", "y_train"),
               ("X_train", "y_train"), ("train_images", "train_labels"), ("data", "labels")]
_TEST_KEYS = [("x_test", "y_test"), ("X_test", "y_test"), ("test_images", "test_labels")]


def _npz(path, opts, role):
    try:
        with zipfile.ZipFile(path) as z:
            keys = {n[:-4] for n in z.namelist() if n.endswith(".npy")}
    except FileNotFoundError:
        raise UserError(f"input file {path!r} does not exist") from None
    except (zipfile.BadZipFile, NotImplementedError, OSError) as e:   # NotImplementedError: a zip version
        raise UserError(f"{path}: cannot read it as a NumPy .npz file ({e})") from None
    if opts.key or opts.labels_key:
        if not (opts.key and opts.labels_key):
            raise UserError("--key and --labels-key go together in an .npz; pass both")
        for k in (opts.key, opts.labels_key):
            if k not in keys:
                raise UserError(f"{path}: no array {k!r} (it has {', '.join(sorted(keys))})")
        pair = (opts.key, opts.labels_key)
    else:
        pair = next((p for p in _TRAIN_KEYS if p[0] in keys and p[1] in keys), None)
        if pair is None:
            raise UserError(f"{path}: cannot tell images from labels among its arrays "
                            f"({', '.join(sorted(keys))}); name them with --key and --labels-key")

    def member(key):
        def opener():
            z = zipfile.ZipFile(path)
            return _ZipMember(z, z.open(key + ".npy"))
        return _NpyStream(opener, f"{path}[{key}]")

    out = {role: (member(pair[0]), member(pair[1]), f"{path}[{pair[0]}]")}
    test = next((p for p in _TEST_KEYS if p[0] in keys and p[1] in keys), None)
    if role == "train" and test is not None and not opts.key:
        out["test"] = (member(test[0]), member(test[1]), f"{path}[{test[0]}]")
    return out


class _ZipMember:
    """An .npz member's stream that closes its archive with it."""

    def __init__(self, archive, stream):
        self.archive, self.stream = archive, stream

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        self.stream.close()
        self.archive.close()


def _hdf5(path, opts, role):
    if not (opts.key and opts.labels_key):
        raise UserError(f"{path}: name the images and the labels (or targets, masks) datasets with "
                        f"--key NAME and --labels-key NAME")
    return {role: (_H5Array(path, opts.key), _H5Array(path, opts.labels_key), f"{path}[{opts.key}]")}


def _labels_file(path):
    if path.endswith(".npy"):
        return _npy_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _Memory(np.loadtxt(path, dtype=np.float64, ndmin=1, delimiter=None), path)
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


def _csv(path, opts):
    if opts.label_column is None:
        raise UserError(f"{path}: say which CSV column holds the label: --label-column first or "
                        f"--label-column last")
    raw = _read_text(path).replace(b"\r\n", b"\n")
    text = raw.strip()
    line = raw[:len(raw) - len(raw.lstrip())].count(b"\n") + 1     # the line number of text's first line
    lines = text.split(b"\n", 1)
    first = lines[0].decode("utf-8", "replace").split(",")
    header = opts.header == "yes" or (opts.header == "auto" and not all(_is_number(x) for x in first))
    if header:
        text = lines[1] if len(lines) > 1 else b""
        first = text.split(b"\n", 1)[0].decode("utf-8", "replace").split(",")
        line += 1
    ncols = len(first)
    nrows = text.count(b"\n") + 1 if text else 0
    if nrows == 0 or ncols < 2:
        raise UserError(f"{path}: expected rows of a label and pixel values separated by commas, "
                        f"found {nrows} rows of {ncols} columns")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)    # NumPy < 2 warns and stops at a bad field
        try:
            values = np.fromstring(text.replace(b"\n", b","), dtype=np.float64, sep=",")
        except ValueError:                                     # NumPy >= 2 raises there instead
            values = None
    if values is not None and values.size == nrows * ncols:
        table = values.reshape(nrows, ncols)
    else:
        table = _parse_rows(text, ncols, line, path, opts.header == "no")
    lab_col = 0 if opts.label_column == "first" else ncols - 1
    return _Memory(np.delete(table, lab_col, axis=1), path), _Memory(table[:, lab_col], path)


def _parse_rows(text, ncols, line, path, header_no):
    """The table parsed row by row (when the fast parse failed), or a UserError naming
    the first bad row by its line number in the file."""
    rows = text.split(b"\n")
    table = np.empty((len(rows), ncols))
    for i, row in enumerate(rows):
        fields = row.split(b",")
        problem = None
        if not row.strip():
            problem = " is empty"
        elif len(fields) != ncols:
            problem = (f" has {len(fields)} fields, but line {line} has {ncols}"
                       f"{' (a trailing comma)' if len(fields) == ncols + 1 and not fields[-1].strip() else ''}")
        else:
            for j, field in enumerate(fields):
                try:
                    table[i, j] = float(field)
                except ValueError:
                    value = field.decode("utf-8", "replace").strip()
                    problem = f", field {j + 1}" + (f": {value!r} is not a number" if value else " is empty")
                    break
        if problem:
            hint = "; it looks like a header: drop --header no" if i == 0 and header_no else "; fix or drop that row"
            raise UserError(f"{path}: could not parse {len(rows)} rows of {ncols} numbers: line {line + i}"
                            f"{problem}{hint}")
    return table


def _load(path, labels_path, opts, role):
    """{split: (images, targets, where)} of one input file (arrays not read yet)."""
    low = path.lower()
    if low.endswith(".npz"):
        if labels_path:
            raise UserError(f"{path}: an .npz holds its own labels; drop --labels/--test-labels")
        return _npz(path, opts, role)
    if low.endswith((".h5", ".hdf5")):
        if labels_path:
            raise UserError(f"{path}: name its labels dataset with --labels-key; drop --labels/--test-labels")
        return _hdf5(path, opts, role)
    if low.endswith(".npy"):
        if not labels_path:
            flag = "--labels" if role == "train" else "--test-labels"
            raise UserError(f"{path}: an .npy holds only images; give the labels (or targets, masks) "
                            f"with {flag} FILE.npy")
        return {role: (_npy_file(path), _labels_file(labels_path), path)}
    if low.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        if labels_path:
            raise UserError(f"{path}: a CSV holds its own labels (--label-column); drop --labels/--test-labels")
        images, labels = _csv(path, opts)
        return {role: (images, labels, path)}
    raise UserError(f"input file {path!r}: unknown type; use a folder of class folders, CIFAR .bin files, "
                    f".npy (with --labels), .npz, .h5 (with --key) or .csv[.gz]")


def open_arrays(opts):
    """{split: Source} of ``opts.input`` (and ``opts.test``)."""
    loaded = _load(opts.input, opts.labels, opts, "train")
    if opts.test:
        if "test" in loaded:
            raise UserError(f"{opts.input} already holds a test split; drop --test")
        loaded.update(_load(opts.test, opts.test_labels, opts, "test"))
    elif opts.test_labels:
        raise UserError("--test-labels needs --test IMAGES")
    return {split: _source(x, y, where, opts) for split, (x, y, where) in loaded.items()}


# ---- shapes, dtypes, targets ----------------------------------------------------------------

def _layout(shape, opts, where):
    """(stored sample shape, function from an input block to channels-first samples)."""
    rest = tuple(shape[1:])
    if len(rest) == 1:
        p, c = rest[0], opts.channels or 1
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
            return (c, h, w), lambda x: x.reshape(len(x), h, w, c).transpose(0, 3, 1, 2)
        return (c, h, w), lambda x: x.reshape(len(x), c, h, w)
    if len(rest) == 2 or (len(rest) == 3 and opts.layout == "ndhw"):
        if opts.channels not in (None, 1):
            raise UserError(f"{where}: images {shape} have one channel, but --channels {opts.channels}")
        return (1,) + rest, lambda x: x[:, None]
    if len(rest) in (3, 4):
        layout = opts.layout
        if layout == "ndhw":
            raise UserError(f"{where}: --layout ndhw is for 4-D arrays (N, D, H, W), not {shape}")
        if layout == "auto":
            # the channel axis is the smaller of the first and last (N,3,32,32 vs N,32,32,3)
            if rest[0] < rest[-1]:
                layout = "nchw"
            elif rest[-1] < rest[0]:
                layout = "nhwc"
                print(f"{where}: samples {shape} look channels-last; storing them channels-first "
                      f"(pass --layout nchw if that is wrong)")
            else:
                raise UserError(f"{where}: cannot tell the channel axis of {shape}; pass --layout nchw or "
                                f"--layout nhwc (or --layout ndhw for single-channel volumes)")
        if layout == "nhwc":
            axes = (0, len(rest)) + tuple(range(1, len(rest)))
            return (rest[-1],) + rest[:-1], lambda x: x.transpose(axes)
        return rest, lambda x: x
    raise UserError(f"{where}: images have shape {shape}; expected (N, C, H, W), (N, H, W, C) with "
                    f"--layout nhwc, (N, H, W), flat rows (N, pixels), or volumes (N, C, D, H, W), "
                    f"(N, D, H, W) with --layout ndhw")


def _stored_dtype(x, want, where):
    """The stored dtype. Inputs other than uint8 are scanned once: floats for NaN/inf,
    all for whole values in 0..255 (auto: uint8 then; --dtype uint8 requires them). A
    float --dtype keeps such values as they are, read so by the trainer (not /255 as
    uint8 is): a line says so."""
    k = x.dtype.kind
    if k not in "uif":
        raise UserError(f"{where}: images have dtype {x.dtype}; expected numbers (uint8 or float)")
    fits = x.dtype == np.uint8
    if fits and want in ("auto", "uint8"):
        return np.dtype(np.uint8)
    if not fits:
        lo, hi, whole = np.inf, -np.inf, True
        for b in x.blocks(block_rows(int(np.prod(x.shape[1:])) * x.dtype.itemsize)):
            if k == "f" and not np.isfinite(b).all():
                raise UserError(f"{where}: images contain NaN or infinite values; fix or drop those samples")
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
            whole = whole and (k != "f" or np.array_equal(b, np.round(b)))
        fits = whole and lo >= 0 and hi <= 255
    if want == "auto":
        return np.dtype(np.uint8 if fits else np.float32)
    if want == "uint8" and not fits:
        raise UserError(f"{where}: --dtype uint8 needs whole values in 0..255, found [{lo:g}, {hi:g}]"
                        f"{'' if whole else ' and fractions'}")
    if fits and want != "uint8":
        print(f"{where}: --dtype {want} stores these 0..255 values as they are, and the trainer reads float "
              f"images as stored (uint8 ones as value/255); without --dtype they are stored as uint8 and "
              f"read in [0, 1]")
    return np.dtype(want)


def _labels(y, n, where):
    """Class labels (N,) int64 from a 1-D or (N, 1) array of whole numbers."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
        raise UserError(f"{where}: labels have dtype {y.dtype}; expected integer class indices")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
        raise UserError(f"{where}: labels are not whole numbers; expected integer class indices (for "
                        f"regression give (N, K) float targets)")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise UserError(f"{where}: label {y.min()} is negative; labels must be class indices 0..K-1")
    return y


def _regression(t, where):
    if not np.isfinite(t).all():
        bad = int(np.argmin(np.isfinite(t).all(axis=1)))
        raise UserError(f"{where}: regression targets of sample {bad} are NaN or infinite; fix or drop it")
    return t.astype(np.float64)


def _source(x, y, where, opts):
    if len(x.shape) < 2:
        raise UserError(f"{where}: images have shape {x.shape}; expected one image per row of the first axis")
    n = x.shape[0]
    if n == 0:
        raise UserError(f"{where}: no samples")
    shape, to_nchw = _layout(x.shape, opts, where)
    dtype = _stored_dtype(x, opts.dtype, where)
    if y is None:
        raise UserError(f"{where}: no labels")
    if len(y.shape) == 0 or y.shape[0] != n:
        raise UserError(f"{where}: {n} images but {y.shape[0] if y.shape else 'a scalar as'} labels; "
                        f"the counts must match")
    rows = block_rows(int(np.prod(x.shape[1:])) * x.dtype.itemsize)
    if len(shape) >= 3 and tuple(y.shape[1:]) == shape[1:]:
        if y.dtype.kind not in "iu":
            raise UserError(f"{y.where}: masks {y.shape} have dtype {y.dtype}; expected integer classes per pixel")

        def blocks():
            for images, masks in zip(x.blocks(rows), y.blocks(rows)):
                yield to_nchw(images), masks
        return Source(where, n, shape, dtype, "masks", None, blocks)
    t = y.read()
    if t.ndim == 2 and (t.shape[1] > 1 or (t.dtype.kind == "f" and not np.array_equal(t, np.round(t)))):
        if t.dtype.kind != "f":
            raise UserError(f"{where}: labels have shape {t.shape} of integers; expected (N,) class indices "
                            f"(for one-hot labels save argmax(axis=1)) or (N, K) float regression targets")
        kind, targets = "targets", _regression(t, where)
    elif t.ndim in (1, 2):
        kind, targets = "labels", _labels(t, n, where)
    else:
        raise UserError(f"{where}: labels have shape {t.shape}; expected (N,) class indices, (N, K) float "
                        f"regression targets or masks of the images' spatial shape {(n,) + shape[1:]}")

    def blocks():
        for images in x.blocks(rows):
            yield to_nchw(images), None
    return Source(where, n, shape, dtype, kind, targets, blocks)
