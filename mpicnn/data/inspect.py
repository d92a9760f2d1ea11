"""Validate a dataset and describe it (``python -m mpicnn.data inspect``).

    from mpicnn.data.inspect import describe
    for line in describe("data.h5"):
        print(line)

``describe`` yields its lines as it goes, so a command printing them shows what was
checked before a later split fails validation (a ``UserError``).
"""
import os

import numpy as np

from . import builtin
from .hdf5 import SPLITS, Dataset, check_file, open_h5, sample_blocks, value_range


def describe(spec, value_range_on_disk=True):
    """Lines describing a dataset file or built-in (building a built-in's cache first):
    file and size, classes, and per split its samples, shape, dtype, chunks, class counts;
    every split is fully validated (NaN scan included); the last line is "ok"."""
    path = builtin.prepare(spec) if builtin.is_builtin(spec) else builtin.resolve(spec)
    with open_h5(path) as f:
        info = check_file(f, path)
        chunks = {s: f[f"{s}/images"].chunks for s in info.splits}
    size = os.path.getsize(path)
    yield f"file: {os.path.abspath(path)} ({size / 2 ** 20:.1f} MiB)"
    origin = {"attribute": "the file attribute", "targets": "the targets' columns"}.get(
        info.num_classes_from, f"max {info.num_classes_from} + 1")
    yield f"{'targets' if info.task == 'regression' else 'num_classes'}: {info.num_classes} (from {origin})"
    if info.class_names:
        yield f"class_names: {', '.join(info.class_names)}"
    for split in SPLITS:
        if split not in info.splits:
            yield f"{split}: (none)"
            continue
        with Dataset(path, split, cache_mb=0) as ds:   # full validation, NaN scan included
            s = info.splits[split]
            note = " (read as value/255, in [0, 1])" if ds.dtype == np.uint8 else ""
            axes = "(C, D, H, W)" if len(ds.shape) == 4 else "(C, H, W)"
            yield (f"{split}: {ds.num_samples} samples, {ds.task}, image shape {axes} = {ds.shape}, "
                   f"dtype {ds.dtype}{note}, chunks {chunks[split]}")
            if value_range_on_disk:
                lo, hi = value_range(ds._images)
                yield f"  values on disk: [{lo:g}, {hi:g}]"
            if ds.task == "regression":
                t = s.labels
                yield "  targets (mean, std): " + " ".join(
                    f"{k}:({m:.3g}, {d:.3g})" for k, (m, d) in enumerate(zip(t.mean(0).tolist(), t.std(0).tolist())))
                continue
            if ds.task == "segmentation":
                counts = np.zeros(info.num_classes, np.int64)
                masks = ds._masks
                for a, b in sample_blocks(len(masks), masks[0].nbytes):
                    counts += np.bincount(np.asarray(masks[a:b]).ravel(), minlength=info.num_classes)
                what = "pixel class counts"
            else:
                counts, what = np.bincount(s.labels, minlength=info.num_classes), "class counts"
            yield f"  {what}: " + " ".join(f"{c}:{k}" for c, k in enumerate(counts.tolist()))
    yield "ok"
