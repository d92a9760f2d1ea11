"""``python -m mpicnn.data``: convert, generate, prepare and inspect datasets.

    python -m mpicnn.data convert pets/ --size 64x64 --test-fraction 0.1 -o pets.h5   # pets/CLASS/*.png
    python -m mpicnn.data convert cifar-10-batches-bin -o cifar10.h5    # data_batch_*.bin, test_batch.bin
    python -m mpicnn.data convert train.npz -o data.h5                 # x_train/y_train/x_test/y_test
    python -m mpicnn.data convert images.npy --labels labels.npy --test-fraction 0.1 -o data.h5
    python -m mpicnn.data convert train.csv --label-column first --test test.csv -o data.h5
    python -m mpicnn.data generate shapes --size 256 --train 500 -o shapes256.h5
    python -m mpicnn.data prepare mnist5k
    python -m mpicnn.data inspect data.h5

Only the command line lives here; the work is done by ``convert.py``, ``shapes.py``,
``builtin.py`` and ``inspect.py``. Errors are one line ``mpicnn: error: ...`` on stderr
with exit status 2.
"""
import argparse
import dataclasses
import sys
import time

from ..cli import Parser, nonnegative, positive, run_command
from ..io.atomic import refuse_existing
from . import builtin, shapes, volumes
from .convert import ConvertOptions, convert
from .inspect import describe

PROG = "python -m mpicnn.data"


def _print_description(path, value_range_on_disk=True):
    for line in describe(path, value_range_on_disk):
        print(line)


def image_size(text):
    """``--size`` "HxW" (or "S" for S x S) as (H, W)."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return (int(parts[0]), int(parts[-1]))
    raise argparse.ArgumentTypeError(f"expected HxW in pixels, such as 64x64 (or 64), got {text!r}")


def cmd_convert(args):
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(ConvertOptions)}
    started = time.perf_counter()
    path = convert(ConvertOptions(**options))
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s")
    _print_description(path, value_range_on_disk=False)


def cmd_generate(args):
    refuse_existing(args.output, args.force)
    if args.kind == "shapes":
        seed = shapes.SEED if args.seed is None else args.seed
        path = shapes.generate(args.output, args.size, args.train, args.test, seed, overwrite=args.force)
    else:
        path = volumes.generate(args.kind, args.output, args.size, args.train, args.test, args.seed,
                                overwrite=args.force)
    print(f"wrote {path}")
    _print_description(path, value_range_on_disk=False)


def cmd_prepare(args):
    print(builtin.prepare(args.spec))


def cmd_inspect(args):
    _print_description(args.spec)


def build_parser():
    p = Parser(prog=PROG, description="Create, generate and check mpicnn HDF5 datasets "
                                      "(/train/images (N, C, H, W), /train/labels (N,), optional /test/...).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    c = sub.add_parser("convert", help="convert image folders, CIFAR .bin files or arrays to the HDF5 format",
                       description="Convert an image-folder tree, CIFAR-10/100 binary files or arrays to an "
                                   "mpicnn HDF5 dataset, streaming (one block of samples in memory at a time). "
                                   "uint8 images (or whole numbers 0..255) are stored as uint8 and read as "
                                   "value/255; other numbers are stored as float32 and read as they are. "
                                   "Pickles (CIFAR's Python version, .pt files) are refused.")
    c.add_argument("input", help="a folder of class folders (ROOT/CLASS/*.png|jpg, or ROOT/train and ROOT/test), "
                                 "CIFAR binary files (a folder of data_batch_N.bin/test_batch.bin or "
                                 "train.bin/test.bin, or one .bin), .npz (images+labels, or "
                                 "x_train/y_train[/x_test/y_test]), .npy (with --labels), .h5 (with --key and "
                                 "--labels-key) or .csv[.gz] (one image per row, with its label)")
    c.add_argument("-o", "--output", required=True, help="output .h5 file")
    c.add_argument("--labels", help=".npy input: its labels (.npy, or text: one per line), (N, K) float "
                                    "regression targets or (N, *spatial) masks (.npy); CIFAR-100: coarse or "
                                    "fine (default fine)")
    c.add_argument("--test", help="test images (same kinds as INPUT)")
    c.add_argument("--test-labels", help="labels of an .npy --test input")
    c.add_argument("--test-fraction", type=float, help="hold out this fraction of INPUT (stratified) as the test split")
    c.add_argument("--seed", type=int, default=0, help="seed of --test-fraction (default 0)")
    c.add_argument("--size", type=image_size, metavar="HxW", help="image folders: resize every image to H x W "
                                                                  "(bilinear; default: all must have one size)")
    c.add_argument("--mode", choices=["gray", "rgb"], help="image folders: store 1 gray or 3 RGB channels "
                                                           "(default: as the first image; all must agree)")
    c.add_argument("--key", "--images-key", dest="key", help="array name of the images in an .npz or .h5")
    c.add_argument("--labels-key", help="array name of the labels (targets, masks) in an .npz or .h5")
    c.add_argument("--label-column", choices=["first", "last"],
                   help="CSV: which column is the label (required for CSV)")
    c.add_argument("--header", choices=["auto", "yes", "no"], default="auto",
                   help="CSV: skip a header line (auto: when the first line is not all numbers)")
    c.add_argument("--channels", type=positive(int), help="channels of flat pixel rows (default 1)")
    c.add_argument("--height", type=positive(int), help="image height of flat pixel rows (default: square)")
    c.add_argument("--width", type=positive(int), help="image width of flat pixel rows (default: square)")
    c.add_argument("--layout", choices=["auto", "nchw", "nhwc", "ndhw"], default="auto",
                   help="axis order of 4-D/5-D arrays: channels first (nchw) or last (nhwc, also for flat "
                        "rows: pixel-interleaved channels); ndhw: 4-D arrays are single-channel volumes")
    c.add_argument("--dtype", choices=["auto", "uint8", "float32", "float64"], default="auto",
                   help="stored image dtype (auto: uint8 for whole numbers 0..255, else float32); float32 "
                        "and float64 keep the values, which the trainer reads as stored (uint8: value/255)")
    c.add_argument("--num-classes", type=positive(int), help="number of classes (default: max label + 1; "
                                                             "image folders: their number; CIFAR: 10, 20 or 100)")
    c.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
    c.set_defaults(func=cmd_convert)

    g = sub.add_parser("generate", help="write a synthetic dataset (shapes, cosmo, blobs)")
    g.add_argument("kind", choices=["shapes", "cosmo", "blobs"],
                   help="synthetic dataset kind: shapes (classification), cosmo (3-D regression), "
                        "blobs (segmentation)")
    g.add_argument("--size", type=positive(int), required=True, help="image (volume) side in pixels (voxels)")
    g.add_argument("--train", type=positive(int), help="train samples (default: the built-in's, e.g. shapes "
                                                       "clamp(2**26 // SIZE**2, 64, 2000))")
    g.add_argument("--test", type=positive(int), help="test samples (default max(train // 4, 32); cosmo, blobs 16)")
    g.add_argument("--seed", type=nonnegative(int), help="seed (default: the built-in's)")
    g.add_argument("-o", "--output", required=True, help="output .h5 file")
    g.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("prepare", help="build a built-in dataset's cache file and print its path")
    r.add_argument("spec", help=builtin.BUILTIN_HELP)
    r.set_defaults(func=cmd_prepare)

    i = sub.add_parser("inspect", help="validate a dataset and print its splits, shapes, dtypes, classes")
    i.add_argument("spec", help="an .h5 file or a built-in name")
    i.set_defaults(func=cmd_inspect)
    return p


def main(argv=None):
    return run_command(_run, argv)


def _run(argv):
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
