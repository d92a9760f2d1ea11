"""``shapes:SIZE``: a deterministic synthetic image-classification set at any resolution.

Six classes drawn on a SIZE x SIZE single-channel uint8 canvas: 0 disk, 1 square,
2 triangle, 3 ring, 4 cross, 5 stripes (three parallel bars). Every image has a
random centre, radius (18-32 % of SIZE), rotation, background level, contrast and
triangular pixel noise, so a small CNN learns it well but not trivially (the square
vs. disk vs. stripes distinction at low contrast and high noise is the hard part).

Determinism: sample ``i`` of a split is drawn from its own generator
``default_rng([seed, split, i])`` (split 0 train, 1 test), and all per-pixel
arithmetic is float32 add/multiply/compare/floor (no transcendental functions), so
the bytes are identical on every run and do not depend on how the work is chunked.
Sample ``i`` is the same whatever the split size; labels are ``i % 6``.

Counts: train ``clamp(2**26 // SIZE**2, 64, 2000)``, test ``max(train // 4, 32)``
(computed from the actual train count, so ``shapes:SIZE:NTRAIN`` scales both).
Generation is vectorised over blocks of samples (small SIZE) or row bands of one
sample (large SIZE, ~4 Mpixel per step), written straight into the HDF5 datasets.
"""
import math

import h5py
import numpy as np

from ..errors import UserError
from .hdf5 import atomic_h5, create_split

CLASS_NAMES = ("disk", "square", "triangle", "ring", "cross", "stripes")
SEED = 0x5AFE5
MIN_SIZE, MAX_SIZE = 8, 32768
_PIXELS_PER_STEP = 1 << 22
_SPLIT_CODE = {"train": 0, "test": 1}
_HALF_SQRT3 = math.sqrt(3.0) / 2.0


def default_counts(size, num_train=None):
    """(train, test) sample counts for ``shapes:SIZE[:NTRAIN]``."""
    n = num_train if num_train is not None else min(max(2 ** 26 // size ** 2, 64), 2000)
    return n, max(n // 4, 32)


def check_size(size, num_train=None, where="shapes"):
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"{where}: image size {size} is out of range; use {MIN_SIZE} <= SIZE <= {MAX_SIZE}")
    if num_train is not None and num_train < 1:
        raise UserError(f"{where}: train sample count {num_train} must be at least 1")


def _params(seed, split, i, size):
    """Per-sample generator and drawing parameters (Python floats)."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
    u = rng.random(8).tolist()
    r = size * (0.18 + 0.14 * u[0])
    cx = r + (size - 2 * r) * u[1]
    cy = r + (size - 2 * r) * u[2]
    theta = 2 * math.pi * u[3]
    bg = 255.0 * (0.05 + 0.30 * u[4])
    contrast = 255.0 * (0.30 + 0.40 * u[5])
    if u[6] >= 0.8:                     # one in five: a dark shape on a bright background
        bg, contrast = 255.0 - bg, -contrast
    noise = 255.0 * (0.04 + 0.16 * u[7])
    p = (r, cx, cy, math.cos(theta), math.sin(theta), bg, contrast, noise)
    return rng, np.array(p, dtype=np.float32)


def _mask(label, u, v, r):
    """Boolean mask of class ``label``; u, v: rotated coordinates, r: radius (all broadcast)."""
    au, av = np.abs(u), np.abs(v)
    if label == 0:
        return u * u + v * v <= r * r
    if label == 1:
        return np.maximum(au, av) <= np.float32(0.8) * r
    if label == 2:
        half = np.float32(0.5) * r
        k = np.float32(_HALF_SQRT3)
        return (v <= half) & (-k * u - np.float32(0.5) * v <= half) & (k * u - np.float32(0.5) * v <= half)
    if label == 3:
        d2 = u * u + v * v
        inner = np.float32(0.55) * r
        return (d2 <= r * r) & (d2 >= inner * inner)
    if label == 4:
        w = np.float32(0.28) * r
        return ((au <= w) & (av <= r)) | ((av <= w) & (au <= r))
    if label == 5:
        inside = (au <= np.float32(0.9) * r) & (av <= r)
        band = np.floor((v + r) / (np.float32(0.4) * r))
        return inside & (np.fmod(band, np.float32(2)) == 0)
    raise ValueError(label)


def _render(labels, params, noise_a, noise_b, y0, y1, size):
    """Pixels of rows [y0, y1) of a block of samples -> uint8 (B, y1-y0, size)."""
    p = params[:, :, None, None]            # (B, 8, 1, 1)
    r, cx, cy, cos, sin, bg, contrast, amp = (p[:, k] for k in range(8))
    ys = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5))[None, :, None]
    xs = (np.arange(size, dtype=np.float32) + np.float32(0.5))[None, None, :]
    dx, dy = xs - cx, ys - cy
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    mask = np.zeros(u.shape, dtype=bool)
    for c in np.unique(labels).tolist():
        sel = labels == c
        mask[sel] = _mask(c, u[sel], v[sel], r[sel])
    img = bg + contrast * mask
    img += (noise_a + noise_b - np.float32(1.0)) * amp
    np.clip(img, 0, 255, out=img)
    return np.rint(img).astype(np.uint8)


def _write_split(f, split, n, size, seed):
    images, labels_ds = create_split(f, split, n, (1, size, size), np.uint8)
    labels = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    labels_ds[...] = labels
    per_block = max(1, _PIXELS_PER_STEP // (size * size))
    band = size if per_block > 1 else max(1, _PIXELS_PER_STEP // size)
    for s in range(0, n, per_block):
        e = min(n, s + per_block)
        gens, params = zip(*(_params(seed, split, i, size) for i in range(s, e)))
        params = np.stack(params)
        for y0 in range(0, size, band):
            y1 = min(size, y0 + band)
            shape = (e - s, y1 - y0, size)
            na = np.empty(shape, np.float32)
            nb = np.empty(shape, np.float32)
            for k, g in enumerate(gens):   # each sample's own stream, rows in order
                na[k] = g.random((y1 - y0, size), dtype=np.float32)
                nb[k] = g.random((y1 - y0, size), dtype=np.float32)
            images[s:e, 0, y0:y1, :] = _render(labels[s:e], params, na, nb, y0, y1, size)


def generate(path, size, num_train=None, num_test=None, seed=SEED, overwrite=True):
    """Write the shapes dataset to ``path`` (atomically) and return the path."""
    check_size(size, num_train)
    n_train, n_test = default_counts(size, num_train)
    if num_test is not None:
        if num_test < 1:
            raise UserError(f"shapes: test sample count {num_test} must be at least 1")
        n_test = num_test
    with atomic_h5(path, overwrite=overwrite) as f:
        f.attrs["num_classes"] = np.int64(len(CLASS_NAMES))
        f.attrs["class_names"] = np.array(CLASS_NAMES, dtype=h5py.string_dtype("utf-8"))
        f.attrs["source"] = f"mpicnn shapes synthetic dataset, size {size}, seed {seed}"
        _write_split(f, "train", n_train, size, seed)
        _write_split(f, "test", n_test, size, seed)
    return path

