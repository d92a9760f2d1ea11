"""Datasets: HDF5 files (per-rank sample and hyperslab reads), built-in real data
(``mnist5k``), a synthetic set at any resolution (``shapes:SIZE``), sample order.

The trainer's calls::

    path = prepare(spec)            # one process (per node): build a built-in's cache
    ds = open_dataset(spec, "train")  # every process, after a barrier
    if has_split(spec, "test"): test = open_dataset(spec, "test")
    order = epoch_order(ds.num_samples, seed, epoch)
    x, y = ds.read(batch_indices(order, k, B)[lo:hi], rows=(r0, r1), cols=(c0, c1))

uint8 images are scaled to [0, 1] on read; float images are read as stored.
This package imports neither mpi4py nor ``mpicnn.parallel``/``mpicnn.nn``.
See ``hdf5.py`` for the file format and ``python -m mpicnn.data --help`` for the CLI
(a thin command line over ``convert.py``, ``shapes.py``, ``builtin.py`` and ``inspect.py``).
"""
from ..errors import UserError
from .builtin import data_dir, is_builtin, prepare, resolve
from .hdf5 import SPLITS, Dataset, open_h5, write_dataset
from .order import batch_indices, epoch_order, steps_per_epoch

__all__ = ["Dataset", "open_dataset", "prepare", "has_split", "resolve", "data_dir",
           "epoch_order", "batch_indices", "steps_per_epoch", "write_dataset"]


def open_dataset(spec, split="train", *, check_finite=True, cache_mb=None):
    """Open ``split`` of a dataset spec (file path or built-in name) as a validated Dataset.

    A built-in whose cache file is missing is built first (fine for serial use; under
    MPI call ``prepare`` on one process and barrier first). ``check_finite`` scans float
    images for NaN/inf once per file version and process; ``cache_mb`` bounds the
    in-memory copy (default ``$MPICNN_DATA_CACHE_MB`` or 512; 0 reads from the file).
    """
    path = prepare(spec) if is_builtin(spec) else resolve(spec)
    return Dataset(path, split, check_finite=check_finite, cache_mb=cache_mb)


def has_split(spec, split):
    """Whether the dataset has ``split`` ("train" or "test"). Built-ins all have both;
    for a file this opens it (a missing or invalid file raises UserError)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if is_builtin(spec):
        return True
    with open_h5(resolve(spec)) as f:
        return split in f
