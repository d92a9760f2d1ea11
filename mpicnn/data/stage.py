"""Node-local staging (``--stage-dir PATH``): a copy of the training samples one
node's ranks read, in a local file, so that every read after the copy stays off the shared file.

``stage(dataset, indices, directory)`` writes ``indices`` (sorted global sample
indices) of the training split to ``directory/mpicnn-stage-<name>-<split>-<key>.h5``, a dataset
file of the usual format holding only those samples (in index order), their global
indices in ``/<split>/global_index``, and the source's class count. The key hashes the
source (real path, size, modification time) and the indices, so a later run that
stages the same samples of the same file reuses the copy, and any change writes a new
one. The copy is written atomically (``atomic_h5``): a reader never sees half a file,
and two writers of the same key both leave a whole one. Run it in one process per node
(the trainer's node-local rank 0), the others waiting at a barrier.

``StagedSplit`` reads through the copy with global indices (a sample the copy lacks,
such as a pipeline's profiling batch, from the source); its metadata and labels are the
source's, and ``bytes_read`` is the source file's count (no more after staging).

Nothing here imports MPI.
"""
import hashlib
import os

import h5py
import numpy as np

from ..errors import UserError
from .hdf5 import Dataset, atomic_h5, create_split, sample_blocks


def staged_path(dataset, indices, directory):
    """Where ``stage`` puts (or finds) the copy of ``indices`` of ``dataset``."""
    st = os.stat(dataset.path)
    key = hashlib.sha256(f"{os.path.realpath(dataset.path)}|{st.st_size}|{st.st_mtime_ns}|{dataset.split}|"
                         .encode() + np.ascontiguousarray(indices, np.int64).tobytes()).hexdigest()[:16]
    name = os.path.splitext(os.path.basename(dataset.path))[0]
    return os.path.join(directory, f"mpicnn-stage-{name}-{dataset.split}-{key}.h5")


def _reusable(path, indices, split):
    try:
        with h5py.File(path, "r") as f:
            return np.array_equal(f[f"{split}/global_index"][()], indices)
    except (OSError, KeyError):
        return False


def stage(dataset, indices, directory):
    """Copy samples ``indices`` (sorted, unique) of ``dataset`` into ``directory``
    unless a copy is there already. Returns (path, bytes read from the source file)."""
    indices = np.asarray(indices, np.int64)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UserError(f"--stage-dir {directory}: cannot create it ({e.strerror}); give a writable "
                        f"node-local directory (e.g. /tmp or /dev/shm)") from None
    path = staged_path(dataset, indices, directory)
    if os.path.exists(path) and _reusable(path, indices, dataset.split):
        return path, 0
    before, split = dataset.bytes_read, dataset.split
    cut = np.flatnonzero(np.diff(indices) != 1) + 1
    runs = np.split(indices, cut) if len(indices) else []
    targets = {"classification": "labels", "regression": "targets", "segmentation": "masks"}[dataset.task]
    try:
        with atomic_h5(path) as f:
            if dataset.task != "regression":  # a subset's largest label may be smaller
                f.attrs["num_classes"] = np.int64(dataset.num_classes)
            if dataset.class_names:
                f.attrs["class_names"] = list(dataset.class_names)
            images, out = create_split(f, split, len(indices), dataset.shape, dataset.dtype, targets,
                                       dataset.num_classes if targets == "targets" else None)
            f.create_dataset(f"{split}/global_index", data=indices)
            at = 0
            sample_bytes = int(np.prod(dataset.shape)) * dataset.dtype.itemsize
            for run in runs:  # contiguous runs: whole hyperslabs of the source, ~64 MiB at a time
                for s, e in sample_blocks(len(run), sample_bytes):
                    raw, target = dataset.raw(run[s:e])
                    images[at + s:at + e] = raw
                    out[at + s:at + e] = target
                at += len(run)
    except OSError as e:
        raise UserError(f"--stage-dir {directory}: cannot write the staged copy {path} ({e}); free space "
                        f"there or choose another directory") from None
    return path, dataset.bytes_read - before


class StagedSplit:
    """The split ``source`` read through its staged copy at ``path`` (global indices)."""

    def __init__(self, source, path):
        self.source, self.path = source, path
        self.local = Dataset(path, source.split, check_finite=False)
        self.index = self.local._file[f"{source.split}/global_index"][()]
        for name in ("num_samples", "shape", "dtype", "task", "num_classes", "class_names", "split"):
            setattr(self, name, getattr(source, name))

    labels = property(lambda self: self.source.labels)
    bytes_read = property(lambda self: self.source.bytes_read)  # from the shared file

    def _local(self, indices):
        """Positions of ``indices`` in the copy, or None if the copy lacks one of them."""
        idx = np.asarray(indices, np.int64)
        pos = np.minimum(np.searchsorted(self.index, idx), len(self.index) - 1)
        return pos if np.array_equal(self.index[pos], idx) else None

    def read(self, indices, **kw):
        pos = self._local(indices)  # samples outside the copy (a layout's setup) come from the source
        return self.source.read(indices, **kw) if pos is None else self.local.read(pos, **kw)

    def fill_in_runs(self, allowed):
        """``Dataset.fill_in_runs`` on the copy, for the ``allowed`` samples it holds."""
        allowed = np.asarray(allowed, np.int64)
        pos = np.minimum(np.searchsorted(self.index, allowed), len(self.index) - 1)
        self.local.fill_in_runs(pos[self.index[pos] == allowed])

    def read_shifted(self, indices, starts, size, **kw):
        pos = self._local(indices)
        if pos is None:
            return self.source.read_shifted(indices, starts, size, **kw)
        return self.local.read_shifted(pos, starts, size, **kw)

    def close(self):
        self.local.close()
        self.source.close()
