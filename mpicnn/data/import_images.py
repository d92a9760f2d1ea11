"""Image-folder trees (one subfolder per class, PNG/JPEG/... files) as ``writer.Source``s,
decoded with Pillow (the optional ``images`` extra) a block of files at a time.

    sources, class_names, k = open_images("pets", size=(64, 64), mode="rgb")

Layouts: ``ROOT/train/CLASS/*`` with an optional ``ROOT/test/CLASS/*``, or one tree
``ROOT/CLASS/*`` (``test`` may name a second tree). Classes are the train tree's folder
names in sorted order (label = position, as torchvision's ImageFolder), files are read
in sorted order; a test tree may lack classes but not add any. Images are stored as
uint8 (N, C, H, W): gray (C = 1) or RGB (C = 3), alpha dropped. Without ``size`` every
image must have the first one's size; with it each is resized (bilinear, stretched to
H x W). Without ``mode`` every image must be gray, or every one colour, like the first.
"""
import os

import numpy as np

from ..errors import UserError
from .writer import Source, block_rows

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
GRAY_MODES = ("1", "L", "LA")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")      # 16-bit and float pixels
INSTALL = "pip install 'mpicnn[images]' (or pip install Pillow)"


def pillow():
    """PIL.Image, or a UserError saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError(f"reading image files needs Pillow, which is not installed; {INSTALL}") from None
    return Image


def is_image_tree(path):
    """Whether ``path`` is a folder laid out as an image tree (it has subfolders)."""
    return os.path.isdir(path) and any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(path))


def _image_names(folder):
    """Sorted names of the image files in ``folder``, and how many other files it holds."""
    names = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    images = sorted(n for n in names if n.lower().endswith(EXTENSIONS))
    return images, len(names) - len(images)


def _tree(root):
    """(class names, image count per class) of one tree; every class folder must hold
    images. Only counts are kept: the names are listed again, a class at a time, while
    reading, so memory does not grow with the number of files."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"{root}: no class subfolders; an image-folder tree holds one folder per class "
                        f"(ROOT/cat/1.png, ROOT/dog/2.png, ...)")
    counts, skipped = [], 0
    for c in classes:
        images, others = _image_names(os.path.join(root, c))
        skipped += others
        if not images:
            raise UserError(f"{os.path.join(root, c)}: class folder holds no image files "
                            f"({', '.join(EXTENSIONS[:3])}, ...); add images or remove the folder")
        counts.append(len(images))
    if skipped:
        print(f"{root}: skipped {skipped} files that are not images (not {', '.join(EXTENSIONS)})")
    return classes, counts


class _Reader:
    """Decodes files into uint8 (C, H, W) arrays of one shape, or raises a UserError naming the file."""

    def __init__(self, first, size, mode):
        self.Image = pillow()
        with self._open(first) as im:
            self.gray = im.mode in GRAY_MODES if mode is None else mode == "gray"
            w, h = im.size
        self.fixed_mode = mode is not None
        self.size, self.first = size, first
        self.hw = size if size is not None else (h, w)
        self.shape = (1 if self.gray else 3,) + self.hw

    def _open(self, path):
        try:
            return self.Image.open(path)
        except self.Image.UnidentifiedImageError:
            raise UserError(f"{path}: cannot read it as an image (not a format Pillow knows, or its header is "
                            f"damaged); replace or delete the file") from None
        except Exception as e:  # Pillow raises many types for damaged files; all mean "bad input"
            raise UserError(f"{path}: cannot read it as an image ({type(e).__name__}: {e}); "
                            f"replace or delete the file") from None

    def read(self, path):
        with self._open(path) as im:
            try:
                im.load()    # decodes now, so a truncated or damaged file fails here
            except Exception as e:  # as in _open
                raise UserError(f"{path}: damaged image ({type(e).__name__}: {e}); replace or delete the "
                                f"file") from None
            if im.mode in WIDE_MODES:
                raise UserError(f"{path}: {im.mode} pixels (16-bit or float); image folders are stored as "
                                f"8-bit: convert the images to 8-bit, or save float arrays as .npy")
            if not self.fixed_mode and (im.mode in GRAY_MODES) != self.gray:
                raise UserError(f"{path} is {'gray' if im.mode in GRAY_MODES else 'colour'} ({im.mode}) but "
                                f"{self.first} is {'gray' if self.gray else 'colour'}; pass --mode gray or "
                                f"--mode rgb to convert them all")
            out = im.convert("L" if self.gray else "RGB")
        h, w = self.hw
        if out.size != (w, h):
            if self.size is None:
                raise UserError(f"{path} is {out.size[1]}x{out.size[0]} (HxW) but {self.first} is {h}x{w}; "
                                f"pass --size HxW to resize every image to one size")
            out = out.resize((w, h), self.Image.Resampling.BILINEAR)
        a = np.asarray(out, dtype=np.uint8)
        return a[None] if self.gray else a.transpose(2, 0, 1)


def _source(root, classes, counts, labels, reader):
    """The images of ``classes`` (with ``counts`` files each) in blocks of one reused buffer."""
    total = sum(counts)

    def blocks():
        rows = min(total, block_rows(int(np.prod(reader.shape))))
        out = np.empty((rows,) + reader.shape, np.uint8)
        n = done = 0
        for c in classes:
            for name in _image_names(os.path.join(root, c))[0]:
                if done == total:
                    raise UserError(f"{root}: holds more images than when counted ({total}); it changed while "
                                    f"converting; convert again")
                out[n] = reader.read(os.path.join(root, c, name))
                n, done = n + 1, done + 1
                if n == rows:
                    yield out, None
                    n = 0
        if n:
            yield out[:n], None
    return Source(root, total, reader.shape, np.dtype(np.uint8), "labels", labels, blocks)


def open_images(root, size=None, mode=None, test=None):
    """({split: Source}, class names, number of classes) of an image-folder tree."""
    train_root, test_root = root, test
    if os.path.isdir(os.path.join(root, "train")):
        train_root = os.path.join(root, "train")
        if os.path.isdir(os.path.join(root, "test")):
            if test is not None:
                raise UserError(f"{root} already holds a test/ tree; drop --test")
            test_root = os.path.join(root, "test")
    classes, counts = _tree(train_root)
    first = os.path.join(train_root, classes[0], _image_names(os.path.join(train_root, classes[0]))[0][0])
    reader = _Reader(first, size, mode)
    labels = np.repeat(np.arange(len(classes)), counts)
    sources = {"train": _source(train_root, classes, counts, labels, reader)}
    if test_root is not None:
        test_classes, test_counts = _tree(test_root)
        extra = sorted(set(test_classes) - set(classes))
        if extra:
            raise UserError(f"{test_root}: class folders {', '.join(extra)} have no train folder in {train_root}; "
                            f"the test classes must be among the train classes")
        labels = np.repeat([classes.index(c) for c in test_classes], test_counts)
        sources["test"] = _source(test_root, test_classes, test_counts, labels, reader)
    return sources, tuple(classes), len(classes)
