"""Built-ins of the scientific workloads, generated once like ``shapes:SIZE``:

``cosmo:SIZE[:NTRAIN]`` (regression on volumes): each sample is a SIZE^3 single-channel
Gaussian random field with power spectrum P(k) = A * (k / k0)^n (k in cycles per box,
k0 = SIZE / 8), the shape of the matter density fields CosmoFlow regresses. The targets
(N, 2) are the field's log10-amplitude and slope, each mapped linearly to [-1, 1]:
log10 A uniform in [-0.5, 0.5], n uniform in [-3, -1]. The amplitude sets the field's
variance, the slope how smooth it is, so a 3-D CNN can read both. Stored float32.

``blobs:SIZE[:NTRAIN]`` (segmentation of images): each SIZE x SIZE single-channel image
holds 2 to 4 filled disks (class 1) and squares (class 2, rotated) of radius 9-16 % of
SIZE on a noisy background (class 0); the mask (N, SIZE, SIZE) gives each pixel's class.
Disks and squares share their brightness, so only the shape tells them apart.

Sample ``i`` of a split comes from its own generator ``default_rng([seed, split, i])``:
the bytes are the same on every run and whatever the sample count.
Counts: cosmo train clamp(2**23 // SIZE^3, 32, 1024), blobs clamp(2**20 // SIZE^2, 64,
2000); test max(train // 4, 16).
"""
import math

import h5py
import numpy as np

from ..errors import UserError
from .hdf5 import atomic_h5, create_split

COSMO_SEED, BLOBS_SEED = 0xC05, 0xB10B
_SPLIT_CODE = {"train": 0, "test": 1}
LOG_AMPLITUDE = (-0.5, 0.5)
SLOPE = (-3.0, -1.0)
BLOB_CLASSES = ("background", "disk", "square")
LIMITS = {"cosmo": (16, 256), "blobs": (16, 4096)}


def default_counts(kind, size, num_train=None):
    if num_train is None:
        if kind == "cosmo":
            num_train = min(max(2 ** 23 // size ** 3, 32), 1024)
        else:
            num_train = min(max(2 ** 20 // size ** 2, 64), 2000)
    return num_train, max(num_train // 4, 16)


def check_size(kind, size, num_train=None, where=None):
    lo, hi = LIMITS[kind]
    where = where or kind
    if not lo <= size <= hi:
        raise UserError(f"{where}: size {size} is out of range; use {lo} <= SIZE <= {hi}")
    if num_train is not None and num_train < 1:
        raise UserError(f"{where}: train sample count {num_train} must be at least 1")


def _unit(value, lo, hi):
    return 2.0 * (value - lo) / (hi - lo) - 1.0


def cosmo_field(rng, size):
    """One field and its targets (log10 A, n), both mapped to [-1, 1]."""
    log_a = rng.uniform(*LOG_AMPLITUDE)
    slope = rng.uniform(*SLOPE)
    k = np.sqrt(np.fft.fftfreq(size)[:, None, None] ** 2 + np.fft.fftfreq(size)[None, :, None] ** 2
                + np.fft.rfftfreq(size)[None, None, :] ** 2) * size
    k[0, 0, 0] = 1.0
    power = 10.0 ** log_a * (k / (size / 8)) ** slope
    power[0, 0, 0] = 0.0  # zero mean
    noise = np.fft.rfftn(rng.standard_normal((size, size, size)))
    field = np.fft.irfftn(noise * np.sqrt(power), s=(size, size, size), axes=(0, 1, 2))
    return field.astype(np.float32), np.array([_unit(log_a, *LOG_AMPLITUDE), _unit(slope, *SLOPE)])


def blobs_sample(rng, size):
    """One image (size, size) float32 and its mask (size, size) uint8."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.integers(1, 3))
        r = size * rng.uniform(0.09, 0.16)
        cy, cx = rng.uniform(r, size - r, 2)
        theta = rng.uniform(0, math.pi / 2)
        u = (xs - cx) * math.cos(theta) + (ys - cy) * math.sin(theta)
        v = (ys - cy) * math.cos(theta) - (xs - cx) * math.sin(theta)
        inside = u * u + v * v <= r * r if cls == 1 else np.maximum(np.abs(u), np.abs(v)) <= 0.85 * r
        mask[inside] = cls
    bg, contrast, noise = rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.5), rng.uniform(0.05, 0.15)
    image = bg + contrast * (mask > 0) + noise * rng.standard_normal((size, size))
    return image.astype(np.float32), mask


def generate(kind, path, size, num_train=None, num_test=None, seed=None, overwrite=True):
    """Write ``cosmo`` or ``blobs`` of ``size`` to ``path`` (atomically); returns the path."""
    check_size(kind, size, num_train)
    counts = dict(zip(("train", "test"), default_counts(kind, size, num_train)))
    if num_test is not None:
        if num_test < 1:
            raise UserError(f"{kind}: test sample count {num_test} must be at least 1")
        counts["test"] = num_test
    if seed is None:
        seed = COSMO_SEED if kind == "cosmo" else BLOBS_SEED
    with atomic_h5(path, overwrite=overwrite) as f:
        if kind == "cosmo":
            f.attrs["source"] = (f"mpicnn cosmo: Gaussian random fields {size}^3, P(k) = A (k/k0)^n; "
                                 f"targets log10 A in {LOG_AMPLITUDE}, n in {SLOPE}, mapped to [-1, 1]; seed {seed}")
            f.attrs["target_names"] = np.array(["log10_amplitude", "slope"], dtype=h5py.string_dtype("utf-8"))
        else:
            f.attrs["source"] = f"mpicnn blobs: disks and squares {size}x{size} with per-pixel masks; seed {seed}"
            f.attrs["num_classes"] = np.int64(len(BLOB_CLASSES))
            f.attrs["class_names"] = np.array(BLOB_CLASSES, dtype=h5py.string_dtype("utf-8"))
        for split, n in counts.items():
            if kind == "cosmo":
                images, targets = create_split(f, split, n, (1, size, size, size), np.float32, "targets", 2)
            else:
                images, targets = create_split(f, split, n, (1, size, size), np.float32, "masks")
            for i in range(n):
                rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
                x, t = cosmo_field(rng, size) if kind == "cosmo" else blobs_sample(rng, size)
                images[i, 0] = x
                targets[i] = t
    return path
