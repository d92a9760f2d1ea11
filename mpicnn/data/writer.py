"""Write an mpicnn HDF5 dataset block by block from importers' ``Source``s, so that
``convert`` holds one block of samples (~``BLOCK_BYTES``) at a time, never the dataset.

    src = Source("cifar/data_batch_1.bin", 10000, (3, 32, 32), np.uint8, "labels", labels, blocks)
    write_sources("out.h5", [(src, {"train": None})], num_classes=10)

A ``Source`` is one split of an input: its sample count, stored sample shape and dtype,
its targets (labels or regression targets, small, known before writing; masks stream
with the images) and a function that yields ``(images, masks or None)`` blocks in order.
Each source is read once and its samples are routed to output splits by boolean masks
(``--test-fraction``). The file is written atomically (``hdf5.atomic_h5``): an error
in the middle of a stream leaves no file behind.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..errors import UserError
from .hdf5 import SPLITS, atomic_h5, create_split
from .progress import Progress

BLOCK_BYTES = 4 << 20          # samples per read block: about this many bytes of images


def block_rows(sample_bytes):
    """Samples per block of ``sample_bytes``-byte samples (at least 1)."""
    return max(1, BLOCK_BYTES // max(int(sample_bytes), 1))


@dataclass
class Source:
    where: str                      # names the input in messages
    count: int                      # samples
    shape: tuple                    # stored sample shape: (C, H, W) or (C, D, H, W)
    dtype: np.dtype                 # stored image dtype (blocks are cast to it)
    kind: str                       # "labels", "targets" or "masks"
    targets: Optional[np.ndarray]   # labels (N,) int64 or targets (N, K) float64; None for masks
    blocks: Callable                # blocks() -> iterator of (images (b, *shape), masks (b, *spatial) or None)


def check_masks(masks, where, start):
    """Masks as uint8 (the stored type), or a UserError naming the first bad sample."""
    if masks.dtype.kind not in "iu" and not (masks.dtype.kind == "f" and np.array_equal(masks, np.round(masks))):
        raise UserError(f"{where}: masks have dtype {masks.dtype}; expected integer classes per pixel")
    flat = masks.reshape(len(masks), -1)
    bad = (flat < 0).any(axis=1) | (flat > 255).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{where}: mask of sample {start + i} holds class {flat[i][(flat[i] < 0) | (flat[i] > 255)][0]}; "
                        f"mask classes must be in 0..255")
    return masks.astype(np.uint8)


def _small_metadata_cache(f):
    """Cap HDF5's metadata cache (default: grows to 32 MiB) at 1 MiB: with one chunk per
    sample it otherwise grows with the sample count (+16 MiB of RSS from 2,000 to 60,000
    samples), and a sequential writer gains nothing from it."""
    config = f.id.get_mdc_config()
    config.set_initial_size, config.initial_size = True, 1 << 19
    config.min_size, config.max_size = 1 << 18, 1 << 20
    f.id.set_mdc_config(config)


def write_sources(path, parts, num_classes=None, class_names=None, attrs=None, overwrite=False):
    """Write ``parts = [(source, {split: mask over the source's samples or None}), ...]``
    to ``path`` atomically; returns {split: samples written}. Every source must share
    one sample shape, dtype and target kind (``convert`` checks that first). For masks
    the number of classes is found while streaming (``num_classes`` must cover it)."""
    counts = {s: 0 for s in SPLITS}
    for src, routes in parts:
        for split, sel in routes.items():
            counts[split] += src.count if sel is None else int(np.count_nonzero(sel))
    first = parts[0][0]
    width = first.targets.shape[1] if first.kind == "targets" else None
    top = -1
    with atomic_h5(path, overwrite=overwrite) as f, Progress(sum(counts.values())) as progress:
        _small_metadata_cache(f)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        out = {s: create_split(f, s, n, first.shape, first.dtype, first.kind, width)
               for s, n in counts.items() if n}
        at = {s: 0 for s in out}
        for src, routes in parts:
            start = 0
            for images, masks in src.blocks():
                n = len(images)
                images = images.astype(first.dtype, copy=False)
                if masks is not None:
                    masks = check_masks(masks, src.where, start)
                    top = max(top, int(masks.max()))
                for split, sel in routes.items():
                    pick = slice(None) if sel is None else sel[start:start + n]
                    block = images[pick]
                    a, b = at[split], at[split] + len(block)
                    if b == a:
                        continue
                    images_ds, targets_ds = out[split]
                    images_ds[a:b] = block
                    targets_ds[a:b] = masks[pick] if masks is not None else src.targets[start:start + n][pick]
                    at[split] = b
                start += n
                progress.update(n)
            if start != src.count:
                raise UserError(f"{src.where}: read {start} samples but expected {src.count}; the input "
                                f"changed or is damaged while converting; convert again")
        if first.kind == "masks":
            if num_classes is not None and top >= num_classes:
                raise UserError(f"--num-classes {num_classes} but the masks hold class {top}")
            num_classes = num_classes or top + 1
        if num_classes is not None:
            f.attrs["num_classes"] = np.int64(num_classes)
        if class_names is not None:
            f.attrs["class_names"] = np.array([n.encode() for n in class_names])
    return {s: n for s, n in counts.items() if n}
