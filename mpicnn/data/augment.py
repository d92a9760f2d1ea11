"""Training-set augmentation (``--augment crop:4,flip``) whose every draw is a pure
function of (seed, epoch, global sample index), so each layout sees the same images.

Vocabulary (items joined by commas)::

    crop:P       random crop with zero padding P on every spatial axis, as torchvision's
                 RandomCrop(size, padding=P): the image moves by a uniform offset in
                 [-P, P] per axis, zeros fill what moves in (for volumes: a random
                 translation of up to P voxels per axis)
    flip         horizontal flip (the W axis) with probability 1/2, as RandomHorizontalFlip
    flip:AXES    an independent flip of each named axis: x (W), y (H), z (D, volumes)

The draws of sample n in epoch e, with splitmix64's ``mix64`` and ``GOLDEN`` of
``mpicnn.ops.dropout`` (all arithmetic modulo 2**64)::

    k_run    = mix64(seed + GOLDEN)
    k_epoch  = mix64(k_run + GOLDEN * (e + 1))
    k_sample = mix64(k_epoch + GOLDEN * (n + 1))
    r_j      = mix64(k_sample + GOLDEN * (j + 1))      draw j of the sample
    offset of spatial axis a (j = a, axes in (D,) H, W order) = (r_j >> 11) % (2P + 1) - P
    flip of spatial axis a   (j = 3 + a)                   = r_j >> 63

The augmented image is A = flip(crop(pad(image))): the crop first, then the flips, as
torchvision composes them. A rank that owns the block [w0, w1) of an axis of A reads
only the part of the stored image that lands there: the block mirrored when that axis
flips ([L - w1, L - w0)), shifted by the offset, clipped to the image (zeros elsewhere),
then reversed. So under spatial splits no rank reads more than its own window (with the
in-memory cache on, the box holding every window its draws can ask for, once).
"""
import numpy as np

from ..errors import UserError
from ..ops.dropout import GOLDEN, mix64

AXES = "zyx"  # flip axis letters: D, H, W (images have only y and x)
USAGE = "write e.g. --augment crop:4,flip (items: crop:P, flip, flip:AXES with AXES from x, y, z)"


class Augment:
    """A parsed ``--augment`` spec: ``pad`` (crop padding, 0 for none) and ``flips``
    (letters of the axes that may flip)."""

    def __init__(self, pad, flips, text):
        self.pad, self.flips, self.text = pad, flips, text

    def check(self, shape):
        """UserError if the spec does not fit images of ``shape`` (C, [D,] H, W)."""
        spatial = len(shape) - 1
        if "z" in self.flips and spatial == 2:
            raise UserError(f"--augment {self.text}: flip:z flips the depth of volumes, and the dataset "
                            f"holds images (C, H, W) = {tuple(shape)}; flip x and/or y")

    def draws(self, seed, epoch, indices, spatial):
        """(offsets (n, spatial) int64 in [-P, P], flips (n, spatial) bool) of the global
        sample ``indices`` in ``epoch``; axes in (D,) H, W order."""
        k_run = mix64((int(seed) + GOLDEN) & ((1 << 64) - 1))
        k_epoch = mix64((k_run + GOLDEN * (int(epoch) + 1)) & ((1 << 64) - 1))
        n = np.asarray(indices, np.uint64) + np.uint64(1)
        k_sample = mix64(n * np.uint64(GOLDEN) + np.uint64(k_epoch))
        j = np.arange(1, 7, dtype=np.uint64) * np.uint64(GOLDEN)  # draws 0-2 offsets, 3-5 flips
        r = mix64(k_sample[:, None] + j[None, :])
        axes = AXES[3 - spatial:]
        span = np.uint64(2 * self.pad + 1)
        offsets = ((r[:, :spatial] >> np.uint64(11)) % span).astype(np.int64) - self.pad
        flips = (r[:, 3:3 + spatial] >> np.uint64(63)).astype(bool)
        flips &= np.array([a in self.flips for a in axes])
        return offsets, flips

    def windows(self, image_size, block):
        """Per spatial axis (L, w0, w1): the axis length and the block of A this rank owns
        (``block``: Batches' depths/rows/cols ranges; absent: the whole axis)."""
        names = ("depths", "rows", "cols")[3 - len(image_size):]
        return [(L,) + tuple(block.get(name, (0, L))) for L, name in zip(image_size, names)]

    def reach(self, image_size, block):
        """The box (start, stop) per axis of the stored image that any draw can read for
        this block: the block and its mirror on flipping axes, grown by P, clipped."""
        box = []
        for (L, w0, w1), axis in zip(self.windows(image_size, block), AXES[3 - len(image_size):]):
            lo, hi = (min(w0, L - w1), max(w1, L - w0)) if axis in self.flips else (w0, w1)
            box.append((max(lo - self.pad, 0), min(hi + self.pad, L)))
        return tuple(box)

    def read(self, dataset, indices, seed, epoch, block, dtype):
        """Images (this rank's block of each augmented image) and targets of ``indices``."""
        image_size = dataset.shape[1:]
        windows = self.windows(image_size, block)
        offsets, flips = self.draws(seed, epoch, indices, len(image_size))
        # Where each sample's window of A starts in the stored image, per axis.
        starts = np.empty_like(offsets)
        for a, (L, w0, w1) in enumerate(windows):
            c0 = np.where(flips[:, a], L - w1, w0)
            starts[:, a] = c0 + offsets[:, a]
        size = tuple(w1 - w0 for _, w0, w1 in windows)
        x, y = dataset.read_shifted(indices, starts, size, dtype=dtype, reach=self.reach(image_size, block))
        dense = y is not None and np.ndim(y) == x.ndim - 1  # segmentation masks move with the image
        for k in np.flatnonzero(flips.any(axis=1)):
            axes = tuple(np.flatnonzero(flips[k]))
            x[k] = np.flip(x[k], axis=tuple(1 + a for a in axes))
            if dense:
                y[k] = np.flip(y[k], axis=axes)
        return x, y


class EpochView:
    """The training set as one epoch sees it: ``read`` gives augmented images (this
    rank's block of each); the labels and the rest are the dataset's."""

    def __init__(self, dataset, augment, seed, epoch):
        self.dataset, self.augment, self.seed, self.epoch = dataset, augment, seed, epoch

    labels = property(lambda self: self.dataset.labels)

    def read(self, indices, dtype=np.float32, **block):
        return self.augment.read(self.dataset, indices, self.seed, self.epoch, block, dtype)


def parse(text):
    """The Augment of an ``--augment`` spec, or None for an empty one; UserError (one
    line, with the fix) for anything else."""
    if text is None or not text.strip():
        return None
    pad, flips, seen = 0, "", set()
    for item in (t.strip() for t in text.split(",")):
        name, _, value = item.partition(":")
        if name in seen:
            raise UserError(f"--augment {text}: {name} is given twice; give each item once")
        seen.add(name)
        if name == "crop":
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"--augment {text}: crop takes the padding in pixels, a positive integer "
                                f"(crop:4), got {item!r}")
            pad = int(value)
        elif name == "flip":
            axes = value or "x"
            if any(a not in AXES for a in axes) or len(set(axes)) != len(axes):
                raise UserError(f"--augment {text}: flip:{value} names axes other than x, y, z (each once); "
                                f"write flip (horizontal) or e.g. flip:xy")
            flips = axes
        else:
            raise UserError(f"--augment {text}: unknown item {item!r}; {USAGE}")
    return Augment(pad, flips, text)
