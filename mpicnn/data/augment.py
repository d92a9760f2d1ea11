"""Training-set augmentation (``--augment crop:4,flip``) whose every draw is a pure
function of (seed, epoch, global sample index), so each layout sees the same images.

Vocabulary (items joined by commas)::

    crop:P       random crop with zero padding P on every spatial axis, as torchvision's
                 RandomCrop(size, padding=P): the image moves by a uniform offset in
                 [-P, P] per axis, zeros fill what moves in (for volumes: a random
                 translation of up to P voxels per axis)
    flip         horizontal flip (the W axis) with probability 1/2, as RandomHorizontalFlip
    flip:AXES    an independent flip of each named axis: x (W), y (H), z (D, volumes)
    rot90        a rotation by 0, 90, 180 or 270 degrees (each with probability 1/4) in the
                 H-W plane, as numpy.rot90(image, k, axes=(H, W)); the plane must be square
    rot90:AXES   the same in the plane of the two named axes (xy, xz or yz; z: volumes)

The draws of sample n in epoch e, with splitmix64's ``mix64`` and ``GOLDEN`` of
``mpicnn.ops.dropout`` (all arithmetic modulo 2**64)::

    k_run    = mix64(seed + GOLDEN)
    k_epoch  = mix64(k_run + GOLDEN * (e + 1))
    k_sample = mix64(k_epoch + GOLDEN * (n + 1))
    r_j      = mix64(k_sample + GOLDEN * (j + 1))      draw j of the sample
    offset of spatial axis a (j = a, axes in (D,) H, W order) = (r_j >> 11) % (2P + 1) - P
    flip of spatial axis a   (j = 3 + a)                   = r_j >> 63
    quarter turns k          (j = 6)                       = r_j >> 62

The augmented image is A = rot90(flip(crop(pad(image))), k): the crop first, then the
flips, as torchvision composes them, then the turn. A rank that owns the block [w0, w1)
of an axis of A reads only the part of the stored image that lands there. A turn maps
the block to a block of the same rectangle turned back: in the plane (p, q) of side L,
with the block [a0, a1) on p and [b0, b1) on q, the block before the turn is, for
k = 0, 1, 2, 3: p [a0, a1), [b0, b1), [L - a1, L - a0), [L - b1, L - b0) and q [b0, b1),
[L - a1, L - a0), [L - b1, L - b0), [a0, a1). Each axis of that block is then mirrored
when the axis flips ([L - w1, L - w0)), shifted by the offset, clipped to the image
(zeros elsewhere), read, reversed and turned. So under spatial splits no rank reads more
than its own window (with the in-memory cache on, the box holding every window its draws
can ask for, once).
"""
import numpy as np

from ..errors import UserError
from ..ops.dropout import GOLDEN, mix64

AXES = "zyx"  # flip axis letters: D, H, W (images have only y and x)
USAGE = ("write e.g. --augment crop:4,flip (items: crop:P, flip, flip:AXES with AXES from x, y, z, rot90, "
         "rot90:AXES with two axes)")


class Augment:
    """A parsed ``--augment`` spec: ``pad`` (crop padding, 0 for none), ``flips``
    (letters of the axes that may flip) and ``plane`` (the two axis letters of the
    rot90 plane in D, H, W order, or "" for no turns)."""

    def __init__(self, pad, flips, text, plane=""):
        self.pad, self.flips, self.text, self.plane = pad, flips, text, plane

    def check(self, shape):
        """UserError if the spec does not fit images of ``shape`` (C, [D,] H, W)."""
        spatial = len(shape) - 1
        if "z" in self.flips and spatial == 2:
            raise UserError(f"--augment {self.text}: flip:z flips the depth of volumes, and the dataset "
                            f"holds images (C, H, W) = {tuple(shape)}; flip x and/or y")
        if "z" in self.plane and spatial == 2:
            raise UserError(f"--augment {self.text}: rot90:{self.plane} turns the depth of volumes, and the "
                            f"dataset holds images (C, H, W) = {tuple(shape)}; write rot90 (the H-W plane)")
        if self.plane:
            p, q = self._plane_axes(spatial)
            if shape[1 + p] != shape[1 + q]:
                raise UserError(f"--augment {self.text}: a quarter turn in the {self.plane} plane needs it "
                                f"square, and the dataset's images are (C, {'D, ' if spatial == 3 else ''}H, W) = "
                                f"{tuple(shape)}; turn a square plane or leave rot90 out")

    def _plane_axes(self, spatial):
        """The rot90 plane (p, q) as spatial axis numbers, p < q."""
        axes = AXES[3 - spatial:]
        return axes.index(self.plane[0]), axes.index(self.plane[1])

    def _hashes(self, seed, epoch, indices, draws):
        """r_j of the global sample ``indices`` in ``epoch``: (n, len(draws)) uint64."""
        k_run = mix64((int(seed) + GOLDEN) & ((1 << 64) - 1))
        k_epoch = mix64((k_run + GOLDEN * (int(epoch) + 1)) & ((1 << 64) - 1))
        n = np.asarray(indices, np.uint64) + np.uint64(1)
        k_sample = mix64(n * np.uint64(GOLDEN) + np.uint64(k_epoch))
        j = (np.asarray(draws, np.uint64) + np.uint64(1)) * np.uint64(GOLDEN)
        return mix64(k_sample[:, None] + j[None, :])

    def turns(self, seed, epoch, indices):
        """Quarter turns k (n,) int64 in [0, 3] of the global sample ``indices`` in
        ``epoch`` (all 0 without rot90)."""
        if not self.plane:
            return np.zeros(len(indices), np.int64)
        return (self._hashes(seed, epoch, indices, [6])[:, 0] >> np.uint64(62)).astype(np.int64)

    def draws(self, seed, epoch, indices, spatial):
        """(offsets (n, spatial) int64 in [-P, P], flips (n, spatial) bool) of the global
        sample ``indices`` in ``epoch``; axes in (D,) H, W order."""
        r = self._hashes(seed, epoch, indices, range(6))  # draws 0-2 offsets, 3-5 flips
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
        this block: the block (on the rot90 plane: either plane axis's block) and its
        mirror on flipping or turning axes, grown by P, clipped."""
        windows = self.windows(image_size, block)
        plane = self._plane_axes(len(image_size)) if self.plane else ()
        box = []
        for a, ((L, w0, w1), axis) in enumerate(zip(windows, AXES[3 - len(image_size):])):
            ranges = [(w0, w1)] if a not in plane else [windows[b][1:] for b in plane]
            if axis in self.flips or a in plane:
                ranges += [(L - hi, L - lo) for lo, hi in ranges]
            lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
            box.append((max(lo - self.pad, 0), min(hi + self.pad, L)))
        return tuple(box)

    def read(self, dataset, indices, seed, epoch, block, dtype):
        """Images (this rank's block of each augmented image) and targets of ``indices``."""
        image_size = dataset.shape[1:]
        windows = self.windows(image_size, block)
        offsets, flips = self.draws(seed, epoch, indices, len(image_size))
        reach = self.reach(image_size, block)
        if not self.plane:
            return self._read_turned(dataset, indices, windows, offsets, flips, 0, reach, dtype)
        # Samples turned by k read the block turned back by k: an odd k swaps the
        # plane's sides, so each k is one read of windows of one size.
        turns, indices = self.turns(seed, epoch, indices), np.asarray(indices)
        ks = np.unique(turns) if len(turns) else np.zeros(1, np.int64)
        groups = [np.flatnonzero(turns == k) for k in ks]
        parts = [self._read_turned(dataset, indices[g], windows, offsets[g], flips[g], k, reach, dtype)
                 for k, g in zip(ks, groups)]
        back = np.argsort(np.concatenate(groups), kind="stable")
        x = np.concatenate([xs for xs, _ in parts])[back]
        y = None if parts[0][1] is None else np.concatenate([ys for _, ys in parts])[back]
        return x, y

    def _read_turned(self, dataset, indices, windows, offsets, flips, k, reach, dtype):
        """Images and targets of ``indices``, all turned by ``k`` quarter turns: the block
        ``windows`` of each augmented image."""
        turned = list(windows)
        if k:
            p, q = self._plane_axes(len(windows))
            (L, a0, a1), (_, b0, b1) = windows[p], windows[q]
            turned[p], turned[q] = {1: ((L, b0, b1), (L, L - a1, L - a0)),
                                    2: ((L, L - a1, L - a0), (L, L - b1, L - b0)),
                                    3: ((L, L - b1, L - b0), (L, a0, a1))}[int(k)]
        # Where each sample's window of A starts in the stored image, per axis.
        starts = np.empty_like(offsets)
        for a, (L, w0, w1) in enumerate(turned):
            c0 = np.where(flips[:, a], L - w1, w0)
            starts[:, a] = c0 + offsets[:, a]
        size = tuple(w1 - w0 for _, w0, w1 in turned)
        x, y = dataset.read_shifted(indices, starts, size, dtype=dtype, reach=reach)
        dense = y is not None and np.ndim(y) == x.ndim - 1  # segmentation masks move with the image
        for s in np.flatnonzero(flips.any(axis=1)):
            axes = tuple(np.flatnonzero(flips[s]))
            x[s] = np.flip(x[s], axis=tuple(1 + a for a in axes))
            if dense:
                y[s] = np.flip(y[s], axis=axes)
        if k:
            x = np.ascontiguousarray(np.rot90(x, int(k), axes=(2 + p, 2 + q)))
            if dense:
                y = np.ascontiguousarray(np.rot90(y, int(k), axes=(1 + p, 1 + q)))
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
    pad, flips, plane, seen = 0, "", "", set()
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
        elif name == "rot90":
            axes = value or "xy"
            if len(axes) != 2 or len(set(axes)) != 2 or any(a not in AXES for a in axes):
                raise UserError(f"--augment {text}: rot90:{value} names no plane; write rot90 (the H-W plane) "
                                f"or rot90:AXES with two of x, y, z (e.g. rot90:yz)")
            plane = "".join(a for a in AXES if a in axes)  # D, H, W order
        elif name == "flip":
            axes = value or "x"
            if any(a not in AXES for a in axes) or len(set(axes)) != len(axes):
                raise UserError(f"--augment {text}: flip:{value} names axes other than x, y, z (each once); "
                                f"write flip (horizontal) or e.g. flip:xy")
            flips = axes
        else:
            raise UserError(f"--augment {text}: unknown item {item!r}; {USAGE}")
    return Augment(pad, flips, text, plane)
