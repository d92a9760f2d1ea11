"""HDF5 datasets: the on-disk format, validation on open, fast per-rank reads, writers.

Format (one file, any number of samples)::

    /train/images   (N, C, H, W) or volumes (N, C, D, H, W): uint8, float32 or float64
    and ONE of the targets, which sets the task:
    /train/labels   (N,)          classification: any integer type, in [0, num_classes)
    /train/targets  (N, K)        regression: K float values per sample
    /train/masks    (N, *spatial) segmentation: one integer class per pixel/voxel, in
                                  [0, num_classes) (spatial = (H, W) or (D, H, W))
    /test/...       (M, ...)      optional; same image shape and kind of targets as train
    attribute num_classes         optional; default: max label (mask) over the file + 1;
                                  for regression it is K
    attribute class_names         optional; num_classes strings

uint8 images are scaled to [0, 1] on read (``value / 255``); float images are read
as stored (cast to the requested float type). Files written here chunk images per
sample (and, for samples over ~1 MiB, in square tiles of each sample), uncompressed,
so that scattered per-rank sample reads and row/column hyperslab reads (spatial
splits) touch only the bytes they need.

Reads: ``Dataset.read(indices, rows, cols, depths)`` reads from the file only the
samples asked for (one hyperslab per run of consecutive indices, only the requested
depths, rows and columns, of the images and of the masks) and keeps each sample it has
read in memory, so later epochs gather from memory (tens of microseconds, one native
pass where the library is built) instead of paying HDF5's ~10 us per scattered sample.
The cache is kept when the selected block of the whole split fits in ``cache_mb`` MiB
(default 512, env ``MPICNN_DATA_CACHE_MB``; 0 disables); it holds only samples this
rank read, or, after ``fill_in_runs(allowed)``, the run of neighbouring ``allowed``
samples around each one it read (for a reader that will come back for all of them: one
hyperslab instead of one read per sample). ``Dataset.read_shifted`` reads each sample's
own window, which may reach past the image (zeros there): an augmented crop
(``augment.py``). ``Dataset.bytes_read`` counts the image and mask bytes read from the
file.

Nothing here imports MPI: the trainer decides which samples (and which block of each
image) a rank reads.
"""
import os
from contextlib import contextmanager

import h5py
import numpy as np

from ..errors import UserError
from ..io.atomic import atomic_path
from ..ops import native

SPLITS = ("train", "test")
IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))
CHUNK_BYTES = 1 << 20          # samples larger than this are chunked in tiles
SCAN_BYTES = 64 << 20          # block size of the non-finite scan and of bulk copies
DEFAULT_CACHE_MB = 512
FILL_RUN_SAMPLES = 64          # fill_in_runs: at most this many samples per run ...
FILL_RUN_BYTES = 256 << 10     # ... and about this many bytes of the cached block
HOW_TO_CREATE = ("create one with 'python -m mpicnn.data convert INPUT -o FILE.h5' "
                 "(from image folders, CIFAR .bin files, .npy/.npz/.h5 arrays or .csv) or use a built-in dataset "
                 "(mnist5k, shapes:SIZE, cosmo:SIZE, blobs:SIZE)")

# (realpath, mtime_ns, size, split) of float splits already scanned for NaN/inf
_FINITE_OK = set()


def _cache_budget(cache_mb):
    if cache_mb is None:
        env = os.environ.get("MPICNN_DATA_CACHE_MB", "")
        try:
            cache_mb = float(env) if env.strip() else DEFAULT_CACHE_MB
        except ValueError:
            raise UserError(f"MPICNN_DATA_CACHE_MB={env!r} is not a number; set it to the MiB of "
                            f"in-memory dataset cache per process (0 disables)") from None
    if cache_mb < 0:
        raise UserError(f"dataset cache size {cache_mb} MiB is negative; use 0 to disable the cache")
    return int(cache_mb * (1 << 20))


def open_h5(path):
    """Open ``path`` read-only, turning every way it can fail into a UserError."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise UserError(f"dataset file {p!r} does not exist; {HOW_TO_CREATE}")
    if os.path.isdir(p):
        raise UserError(f"dataset path {p!r} is a directory, not an HDF5 file; {HOW_TO_CREATE}")
    if not os.access(p, os.R_OK):
        raise UserError(f"dataset file {p!r} is not readable (permission denied); "
                        f"fix its permissions (chmod u+r)")
    try:
        is_h5 = h5py.is_hdf5(p)
    except OSError as e:
        raise UserError(f"cannot read dataset file {p!r}: {e}") from None
    if not is_h5:
        raise UserError(f"dataset file {p!r} is not an HDF5 file; {HOW_TO_CREATE}")
    try:
        # 'best-effort' locking: shared file systems without lock support (NFS, some
        # Lustre mounts) still open; the files we write are replaced atomically.
        return h5py.File(p, "r", locking="best-effort")
    except (TypeError, ValueError):
        pass
    except OSError as e:
        raise UserError(f"cannot open dataset file {p!r} as HDF5 ({e}); the file may be truncated or "
                        f"still being written; recreate it") from None
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise UserError(f"cannot open dataset file {p!r} as HDF5 ({e}); the file may be truncated or "
                        f"still being written; recreate it") from None


class SplitInfo:
    """Validated metadata of one split (labels are loaded: they are small)."""

    def __init__(self, name, num_samples, shape, dtype, labels, chunks):
        self.name, self.num_samples, self.shape = name, num_samples, shape
        self.dtype, self.labels, self.chunks = dtype, labels, chunks


def _get_dataset(f, path, name):
    obj = f.get(name)
    if obj is None:
        return None
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{path}: /{name} is a group, expected a dataset; {HOW_TO_CREATE}")
    return obj


TARGETS = {"labels": "classification", "targets": "regression", "masks": "segmentation"}


def _check_split(f, path, split):
    where = f"{path}: /{split}"
    grp = f.get(split)
    if grp is None:
        have = ", ".join("/" + k for k in f.keys()) or "nothing"
        raise UserError(f"{path}: missing group /{split} (the file has {have}); a dataset file needs "
                        f"/{split}/images (N, C, H, W) and /{split}/labels (N,); {HOW_TO_CREATE}")
    if not isinstance(grp, h5py.Group):
        raise UserError(f"{where} is a dataset, expected a group holding images and labels; {HOW_TO_CREATE}")
    images = _get_dataset(f, path, f"{split}/images")
    if images is None:
        raise UserError(f"{path}: missing dataset /{split}/images; expected images (N, C, H, W) or "
                        f"volumes (N, C, D, H, W); {HOW_TO_CREATE}")
    present = [k for k in TARGETS if k in grp]
    if not present:
        raise UserError(f"{path}: missing dataset /{split}/labels (N,) class indices (or /{split}/targets "
                        f"(N, K) for regression, /{split}/masks (N, *spatial) for segmentation); {HOW_TO_CREATE}")
    if len(present) > 1:
        raise UserError(f"{where} holds {' and '.join('/' + k for k in present)}; give exactly one of labels, "
                        f"targets and masks (it says the task: classification, regression or segmentation)")
    kind = present[0]
    task = TARGETS[kind]
    labels = _get_dataset(f, path, f"{split}/{kind}")
    if images.ndim not in (4, 5):
        raise UserError(f"{where}/images has shape {images.shape}, expected 4-D (N, C, H, W) or 5-D "
                        f"(N, C, D, H, W); convert it with 'python -m mpicnn.data convert' "
                        f"(--channels/--height/--width for flat rows, --layout nhwc for channels-last arrays)")
    if images.dtype not in IMAGE_DTYPES:
        raise UserError(f"{where}/images has dtype {images.dtype}, expected uint8, float32 or float64; "
                        f"convert the images to one of those")
    if _channels_last(images.shape):
        raise UserError(f"{where}/images has shape {images.shape}, which looks channels-last (N, H, W, C); "
                        f"mpicnn reads (N, C, H, W): rewrite it with 'python -m mpicnn.data convert "
                        f"--layout nhwc' (or transpose to (0, 3, 1, 2))")
    n = images.shape[0]
    want = {"labels": (n,), "targets": (n, labels.shape[-1] if labels.ndim == 2 else None),
            "masks": (n,) + images.shape[2:]}[kind]
    if labels.ndim >= 1 and labels.shape[0] != n and labels.ndim == len(want):
        raise UserError(f"{where}: {n} images but {labels.shape[0]} {kind}; the counts must match")
    if labels.shape != want:
        shape = {"labels": "1-D (N,) class indices (one-hot labels: store argmax instead)",
                 "targets": "2-D (N, K) regression targets",
                 "masks": f"(N, *spatial) = {(n,) + images.shape[2:]}, one class per pixel of the images"}[kind]
        raise UserError(f"{where}/{kind} has shape {labels.shape} for images {images.shape}, expected {shape}")
    if (kind == "targets") != (labels.dtype.kind == "f"):
        need = "a float type" if kind == "targets" else "an integer type (e.g. int64); store class indices"
        raise UserError(f"{where}/{kind} has dtype {labels.dtype}, expected {need}")
    if n == 0:
        raise UserError(f"{where} holds no samples (images shape {images.shape}); the split must not be empty")
    if min(images.shape[1:]) < 1 or (kind == "targets" and labels.shape[1] < 1):
        raise UserError(f"{where}/images has shape {images.shape}: C, D, H and W must be at least 1")
    if kind == "targets":
        lab = labels[()].astype(np.float64)
        if not np.isfinite(lab).all():
            bad = int(np.argmin(np.isfinite(lab).all(axis=1)))
            raise UserError(f"{where}/targets[{bad}] holds NaN or infinite values; fix or drop that sample")
        lo, hi = 0, labels.shape[1]
    elif kind == "masks":
        lo, hi = _scan_classes(labels)
        lab = None
    else:
        lab = labels[()]
        if lab.dtype == np.uint64 and lab.max() > np.iinfo(np.int64).max:
            bad = int(np.argmax(lab > np.iinfo(np.int64).max))
            raise UserError(f"{where}/labels[{bad}] = {lab[bad]} is out of range; labels must be class "
                            f"indices in [0, num_classes)")
        lab = lab.astype(np.int64, copy=False)
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0:
            bad = int(np.argmax(lab < 0))
            raise UserError(f"{where}/labels[{bad}] = {lab[bad]} is negative; labels must be class indices "
                            f"in [0, num_classes)")
    if lo < 0:
        raise UserError(f"{where}/{kind} holds the negative class {lo}; {kind} must be class indices "
                        f"in [0, num_classes)")
    info = SplitInfo(split, n, tuple(int(s) for s in images.shape[1:]), images.dtype, lab, images.chunks)
    info.task, info.kind, info.max_class = task, kind, hi
    return info


def _scan_classes(masks):
    """(smallest, largest) class of an integer mask dataset, read in ~64 MiB blocks."""
    lo, hi = None, None
    per = int(np.prod(masks.shape[1:])) * masks.dtype.itemsize
    for s, e in sample_blocks(masks.shape[0], per):
        block = masks[s:e]
        lo = int(block.min()) if lo is None else min(lo, int(block.min()))
        hi = int(block.max()) if hi is None else max(hi, int(block.max()))
    return lo, hi


def _num_classes_attr(f, path):
    if "num_classes" not in f.attrs:
        return None
    v = np.asarray(f.attrs["num_classes"])
    if v.size != 1 or v.dtype.kind not in "iu" or int(v.reshape(-1)[0]) < 1:
        raise UserError(f"{path}: file attribute num_classes = {f.attrs['num_classes']!r} must be one "
                        f"positive integer; fix or delete the attribute")
    return int(v.reshape(-1)[0])


def _class_names_attr(f, path, num_classes):
    if "class_names" not in f.attrs:
        return None
    v = np.asarray(f.attrs["class_names"])
    if v.ndim != 1 or v.dtype.kind not in "SUO" or len(v) != num_classes:
        raise UserError(f"{path}: file attribute class_names must be a list of {num_classes} strings "
                        f"(one per class), got {v.shape} {v.dtype}; fix or delete the attribute")
    return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in v.tolist())


class FileInfo:
    """Everything validated about a dataset file except the float value scan."""

    def __init__(self, path, splits, num_classes, num_classes_from, class_names):
        self.path, self.splits, self.num_classes = path, splits, num_classes
        self.num_classes_from, self.class_names = num_classes_from, class_names


def _channels_last(shape):
    """A 4-D image shape that can only be channels-last: 1, 3 or 4 trailing channels behind
    a "channel" axis too large for one (more than 4, and as large as the height)."""
    return len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] > 4 and shape[1] >= shape[2] // 2


def check_file(f, path):
    """Validate the structure, dtypes and targets of every split in an open file."""
    splits = {"train": _check_split(f, path, "train")}
    train = splits["train"]
    if "test" in f:
        splits["test"] = test = _check_split(f, path, "test")
        if test.shape != train.shape:
            raise UserError(f"{path}: train images are {train.shape} but test images are {test.shape}; "
                            f"both splits must have the same image shape")
        if test.kind != train.kind or (test.kind == "targets" and test.max_class != train.max_class):
            raise UserError(f"{path}: /train has {train.kind} but /test has {test.kind}"
                            f"{'' if test.kind != train.kind else ' of another width'}; both splits need "
                            f"the same kind of targets")
    nc = _num_classes_attr(f, path)
    source = "attribute"
    if train.task == "regression":
        if nc is not None and nc != train.max_class:
            raise UserError(f"{path}: file attribute num_classes = {nc} but /train/targets has "
                            f"{train.max_class} columns; fix or delete the attribute")
        nc, source = train.max_class, "targets"
    elif nc is None:
        nc = max(s.max_class for s in splits.values()) + 1
        source = train.kind
    for s in splits.values():
        if s.task != "regression" and s.max_class >= nc:
            detail = ""
            if s.labels is not None:
                bad = int(np.argmax(s.labels >= nc))
                detail = f"[{bad}] = {s.labels[bad]}"
            else:
                detail = f" holds class {s.max_class}, which"
            raise UserError(f"{path}: /{s.name}/{s.kind}{detail} is out of range "
                            f"[0, num_classes={nc}); fix the {s.kind} or the file attribute num_classes")
    info = FileInfo(path, splits, nc, source, _class_names_attr(f, path, nc) if train.task != "regression" else None)
    info.task = train.task
    return info


def sample_blocks(n, sample_bytes, budget=SCAN_BYTES):
    """(start, end) ranges of ``n`` samples, each block about ``budget`` bytes."""
    step = max(1, budget // max(sample_bytes, 1))
    for s in range(0, n, step):
        yield s, min(n, s + step)


def value_range(images):
    """(min, max) of an image array or HDF5 dataset, read in ~64 MiB blocks."""
    lo, hi = np.inf, -np.inf
    for s, e in sample_blocks(len(images), images[0].nbytes if len(images) else 1):
        b = np.asarray(images[s:e])
        lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
    return lo, hi


def scan_finite(ds, where):
    """Raise UserError if a float image dataset holds NaN or inf (read in ~64 MiB blocks)."""
    for s, e in sample_blocks(ds.shape[0], int(np.prod(ds.shape[1:])) * ds.dtype.itemsize):
        block = ds[s:e]
        ok = np.isfinite(block).reshape(e - s, -1).all(axis=1)
        if not ok.all():
            bad = s + int(np.argmin(ok))
            raise UserError(f"{where}/images: sample {bad} contains NaN or infinite values; fix or drop "
                            f"the non-finite samples (training on them makes the loss NaN)")


def _file_key(path, split):
    st = os.stat(path)
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size, split)


def _check_range(rng, size, what):
    if rng is None:
        return 0, size
    try:
        a, b = (int(rng[0]), int(rng[1]))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"{what} must be a pair (start, stop), got {rng!r}") from None
    if not 0 <= a < b <= size:
        raise ValueError(f"{what}=({a}, {b}) is not a non-empty range inside [0, {size})")
    return a, b


class Dataset:
    """One split of an HDF5 dataset file, validated on open.

    Attributes: ``num_samples``, ``shape`` (C, H, W) or (C, D, H, W), ``task``
    ("classification", "regression" or "segmentation"), ``num_classes`` (for regression:
    the number of targets K), ``dtype`` (the on-disk image dtype), ``path``, ``split``,
    ``labels`` (classification: int64 (N,); regression: float64 (N, K); segmentation:
    None, masks are read with the images), ``class_names`` (tuple or None). ``read``
    returns float images (channels first) and their targets. Use as a context manager
    or call ``close()``.
    """

    def __init__(self, path, split="train", *, check_finite=True, cache_mb=None):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        self.path = os.fspath(path)
        self.split = split
        self._cache_budget = _cache_budget(cache_mb)
        self._cache_key, self._cache = None, None
        self._fill = None  # fill_in_runs: which samples a run may read (bool (N,))
        self.bytes_read = 0  # image (and mask) bytes read from the file so far
        self._file = open_h5(self.path)
        try:
            info = check_file(self._file, self.path)
            if split not in info.splits:
                raise UserError(f"{self.path} has no /{split} split (only "
                                f"{', '.join('/' + s for s in info.splits)}); add one with "
                                f"'python -m mpicnn.data convert ... --test INPUT' or --test-fraction")
            s = info.splits[split]
            self._images = self._file[f"{split}/images"]
            self._masks = self._file[f"{split}/masks"] if s.kind == "masks" else None
            if check_finite and s.dtype.kind == "f":
                key = _file_key(self.path, split)
                if key not in _FINITE_OK:
                    scan_finite(self._images, f"{self.path}: /{split}")
                    _FINITE_OK.add(key)
        except BaseException:
            self._file.close()
            raise
        self.num_samples = s.num_samples
        self.shape = s.shape
        self.dtype = s.dtype
        self.task = s.task
        self.num_classes = info.num_classes
        self.class_names = info.class_names
        self._labels = s.labels
        if self._labels is not None:
            self._labels.setflags(write=False)

    # -- small conveniences ---------------------------------------------------------
    @property
    def labels(self):
        return self._labels

    def __len__(self):
        return self.num_samples

    def __repr__(self):
        return (f"Dataset({self.path!r}, split={self.split!r}, num_samples={self.num_samples}, "
                f"shape={self.shape}, task={self.task}, num_classes={self.num_classes}, dtype={self.dtype})")

    def close(self):
        self._cache = self._cache_key = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading --------------------------------------------------------------------
    def read(self, indices, rows=None, cols=None, dtype=np.float32, depths=None):
        """Images ``(len(indices), C, [d,] h, w)`` in float ``dtype`` and their targets:
        int64 labels (N,), regression targets (N, K) in ``dtype``, or int64 masks of the
        same block (N, [d,] h, w).

        ``indices`` may be in any order (and may repeat); the result follows it.
        ``rows=(r0, r1)`` / ``cols=(c0, c1)`` / ``depths=(d0, d1)`` (volumes) select a
        block of every image (half-open), and only that block is read. uint8 images come
        back as ``value / 255``.
        """
        dt, idx = self._check_read(dtype, indices)
        spatial = self.shape[1:]
        if depths is not None and len(spatial) != 3:
            raise ValueError(f"depths= selects a block of volumes; {self.path} holds images {self.shape}")
        box = (_check_range(rows, spatial[-2], "rows"), _check_range(cols, spatial[-1], "cols"))
        if len(spatial) == 3:
            box = (_check_range(depths, spatial[0], "depths"),) + box
        if self._masks is None:
            images = self._cached(idx, box, dt)
            if images is not None:
                return images, self._targets(idx, dt)
        masks = self._read_direct(idx, box, self._masks, channels=False) if self._masks is not None else None
        return self._finish(self._gather(idx, box), masks, idx, dt)

    def read_shifted(self, indices, starts, size, dtype=np.float32, reach=None):
        """Like ``read``, but sample k's image is the block of ``size`` (per spatial axis)
        whose corner is ``starts[k]`` (int (n, spatial)), which may reach outside the image:
        zeros there (mask class 0). Only the part inside the image is read. ``reach``:
        the box ((start, stop) per axis) holding every block ever asked of this reader;
        if it fits the cache, samples are read through the cache in that box."""
        dt, idx = self._check_read(dtype, indices)
        starts = np.asarray(starts, np.int64).reshape(len(idx), len(self.shape) - 1)
        spatial, size = self.shape[1:], tuple(int(s) for s in size)
        lo, hi = np.maximum(starts, 0), np.minimum(starts + size, spatial)
        raw = np.zeros((len(idx), self.shape[0]) + size, self.dtype)
        masks = np.zeros((len(idx),) + size, self._masks.dtype) if self._masks is not None else None
        cached = None
        if reach is not None and self._cache_fits(reach):
            first, end = [a for a, _ in reach], [b for _, b in reach]
            inside = (lo >= hi).any(axis=1) | ((lo >= first) & (hi <= end)).all(axis=1)
            if not inside.all():
                raise ValueError(f"read_shifted: a window reaches past reach={reach}")
            cached, base = self._gather(idx, reach), np.array(first)
        for k, i in enumerate(idx.tolist()):
            if np.any(lo[k] >= hi[k]):
                continue  # moved wholly outside the image: all zeros
            dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo[k], hi[k], starts[k]))
            src = tuple(slice(a, b) for a, b in zip(lo[k], hi[k]))
            if cached is not None:
                raw[(k, slice(None)) + dst] = cached[(k, slice(None)) + tuple(
                    slice(a - o, b - o) for a, b, o in zip(lo[k], hi[k], base))]
            else:
                raw[(k, slice(None)) + dst] = self._count(self._images[(i, slice(None)) + src])
            if masks is not None:
                masks[(k,) + dst] = self._count(self._masks[(i,) + src])
        return self._finish(raw, masks, idx, dt)

    def raw(self, indices):
        """Whole stored images (their own dtype) and stored targets of ``indices``
        (sorted): what a copy of these samples holds."""
        idx = self._check_read(np.float32, indices)[1]
        box = tuple((0, n) for n in self.shape[1:])
        if self._masks is not None:
            return self._read_direct(idx, box), self._read_direct(idx, box, self._masks, channels=False)
        return self._read_direct(idx, box), self._labels[idx]

    def _check_read(self, dtype, indices):
        """(float dtype, int64 indices) of a read, checked."""
        if self._file is None:
            raise ValueError(f"read from a closed Dataset ({self.path}, {self.split})")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
        if idx.size and idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_samples):
            raise IndexError(f"sample indices must be in [0, {self.num_samples}) for {self.path} "
                             f"/{self.split}, got [{idx.min()}, {idx.max()}]")
        return dt, idx

    def _finish(self, raw, masks, idx, dt):
        """Float images (uint8 scaled to [0, 1]) and the targets of ``idx``."""
        if self.dtype == np.uint8:
            images = np.divide(raw, dt.type(255), dtype=dt)  # one pass: converted, then divided
        else:
            images = raw.astype(dt, copy=False)
        if masks is not None:
            return images, masks.astype(np.int64)
        return images, self._targets(idx, dt)

    def _targets(self, idx, dt):
        return self._labels[idx].astype(dt) if self.task == "regression" else self._labels[idx]

    def _cached(self, idx, box, dt):
        """Float images of ``idx`` if every one is in the cache of ``box``: gathered and
        converted in one native pass that leaves the GIL to the step (a prefetch thread's
        read), else None."""
        if self._cache_key != box:
            return None
        block, have = self._cache
        return native.gather(block, idx, dt) if have[idx].all() else None

    def _count(self, array):
        """``array`` just read from the file, counted in ``bytes_read``."""
        self.bytes_read += array.nbytes
        return array

    def fill_in_runs(self, allowed):
        """From now on a sample missing from the cache is read with its aligned run of
        neighbours (``FILL_RUN_SAMPLES``, fewer for large samples), those of them in
        ``allowed`` (indices) that are not cached yet. For a reader that will read every
        ``allowed`` sample again and again: a data rank of D otherwise still misses a
        (1 - 1/D)^k part of its samples in epoch k + 1, one scattered read each, as every
        epoch hands it others."""
        self._fill = np.zeros(self.num_samples, bool)
        self._fill[np.asarray(allowed, np.int64)] = True

    def _with_runs(self, missing, have, sample_bytes):
        """``missing`` (sorted) and the uncached ``fill_in_runs`` samples of their runs."""
        run = min(FILL_RUN_SAMPLES, FILL_RUN_BYTES // max(sample_bytes, 1))
        if self._fill is None or run < 2:
            return missing
        near = (np.unique(missing // run)[:, None] * run + np.arange(run)).ravel()
        near = near[near < self.num_samples]
        return np.union1d(missing, near[self._fill[near] & ~have[near]])

    def _cache_fits(self, box):
        block_shape = (self.num_samples, self.shape[0]) + tuple(b - a for a, b in box)
        return int(np.prod(block_shape)) * self.dtype.itemsize <= self._cache_budget

    def _gather(self, idx, box):
        key = box
        if self._cache_key != key:
            if not self._cache_fits(box):
                return self._read_direct(idx, box)
            block_shape = (self.num_samples, self.shape[0]) + tuple(b - a for a, b in box)
            # np.empty maps pages lazily: memory grows only with the samples read
            block = np.empty(block_shape, self.dtype)
            self._cache_key, self._cache = key, (block, np.zeros(self.num_samples, bool))
        block, have = self._cache
        missing = np.unique(idx[~have[idx]])
        if missing.size:
            missing = self._with_runs(missing, have, block[0].nbytes)
            block[missing] = self._read_direct(missing, box)
            have[missing] = True
        return np.take(block, idx, axis=0)

    def _read_direct(self, idx, box, ds=None, channels=True):
        """Samples ``idx`` of ``ds`` (default the images, channels first; masks:
        ``channels=False``), only the block ``box`` ((start, stop) per spatial axis)."""
        ds = self._images if ds is None else ds
        lead = (slice(None),) if channels else ()
        window = lead + tuple(slice(a, b) for a, b in box)
        shape = ds.shape[1:2] if channels else ()
        shape += tuple(b - a for a, b in box)
        if idx.size == 0:
            return np.empty((0,) + shape, ds.dtype)
        if idx.size == 1 or np.all(idx[1:] > idx[:-1]):
            uniq, inverse = idx, None
        else:
            uniq, inverse = np.unique(idx, return_inverse=True)
        cut = np.flatnonzero(np.diff(uniq) != 1) + 1
        starts = np.concatenate(([0], cut)).tolist()
        stops = np.concatenate((cut, [len(uniq)])).tolist()
        first = uniq[starts].tolist()
        if len(starts) == 1:
            out = ds[(slice(first[0], first[0] + stops[0]),) + window]
        else:
            out = np.empty((len(uniq),) + shape, ds.dtype)
            for a, b, s in zip(starts, stops, first):
                # simple slices take h5py's fast (Cython) read path
                out[a:b] = ds[(slice(s, s + (b - a)),) + window]
        self._count(out)
        return out if inverse is None else out[inverse]


# ---- writing ---------------------------------------------------------------------------

def chunk_shape(shape, dtype):
    """Chunks for an (N, C, *spatial) image dataset: one sample per chunk, or cubic
    (square) tiles of one sample (all channels) of about 1 MiB when a sample is larger."""
    c, spatial = shape[0], shape[1:]
    item = np.dtype(dtype).itemsize
    if c * int(np.prod(spatial)) * item <= CHUNK_BYTES:
        return (1,) + tuple(shape)
    t = 1
    while c * (2 * t) ** len(spatial) * item <= CHUNK_BYTES:
        t *= 2
    return (1, c) + tuple(min(s, t) for s in spatial)


def create_split(f, split, num_samples, shape, dtype, targets="labels", num_targets=None):
    """Create ``/split/images`` and its targets in an open, writable file: ``labels``
    (N,) int64, ``targets`` (N, num_targets) float64 or ``masks`` (N, *spatial) uint8
    (chunked like the images, so a rank reads only its block)."""
    g = f.create_group(split)
    images = g.create_dataset("images", shape=(num_samples,) + tuple(shape), dtype=dtype,
                              chunks=chunk_shape(shape, dtype), track_times=False)
    if targets == "labels":
        out = g.create_dataset("labels", shape=(num_samples,), dtype=np.int64, track_times=False)
    elif targets == "targets":
        out = g.create_dataset("targets", shape=(num_samples, num_targets), dtype=np.float64, track_times=False)
    else:
        out = g.create_dataset("masks", shape=(num_samples,) + tuple(shape[1:]), dtype=np.uint8,
                               chunks=chunk_shape(shape, dtype)[:1] + chunk_shape(shape, dtype)[2:],
                               track_times=False)
    return images, out


@contextmanager
def atomic_h5(path, overwrite=True):
    """Yield an h5py.File on a temporary file next to ``path``; on success it replaces
    ``path`` (``io.atomic.atomic_path``: readers never see half a file, and a failure
    leaves nothing behind, not even the folders made for it)."""
    with atomic_path(path, overwrite) as tmp, h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
        yield f


def write_dataset(path, splits, num_classes=None, attrs=None, overwrite=True):
    """Write ``splits = {"train": (images, labels), "test": (...)}`` (NCHW arrays,
    possibly memory-mapped) to ``path`` atomically, copying in ~64 MiB blocks."""
    if "train" not in splits:
        raise ValueError("write_dataset needs a 'train' split")
    with atomic_h5(path, overwrite=overwrite) as f:
        if num_classes is not None:
            f.attrs["num_classes"] = np.int64(num_classes)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        for split in SPLITS:
            if split not in splits:
                continue
            images, labels = splits[split]
            images_ds, labels_ds = create_split(f, split, len(images), images.shape[1:], images.dtype)
            for s, e in sample_blocks(len(images), images[0].nbytes if len(images) else 1):
                images_ds[s:e] = images[s:e]
            labels_ds[...] = np.asarray(labels, dtype=np.int64)
    return os.path.abspath(os.fspath(path))
