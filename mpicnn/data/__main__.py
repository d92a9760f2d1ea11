"""``python -m mpicnn.data``: convert, generate, prepare and inspect datasets.

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
import dataclasses
import sys

from ..cli import Parser, nonnegative, positive, run_command
from . import builtin, shapes, volumes
from .convert import ConvertOptions, convert
from .hdf5 import refuse_existing
from .inspect import describe

PROG = "python -m mpicnn.data"


def _print_description(path, value_range_on_disk=True):
    for line in describe(path, value_range_on_disk):
        print(line)


def cmd_convert(args):
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(ConvertOptions)}
    path = convert(ConvertOptions(**options))
    print(f"wrote {path}")
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

    c = sub.add_parser("convert", help="convert .npy/.npz/.csv arrays to the HDF5 format",
                       description="Convert arrays to an mpicnn HDF5 dataset. uint8 images (or whole "
                                   "numbers 0..255) are stored as uint8 and read as value/255; other "
                                   "numbers are stored as float32 and read as they are.")
    c.add_argument("input", help="train images: .npz (images+labels, or x_train/y_train[/x_test/y_test]), "
                                 ".npy (with --labels) or .csv[.gz] (one image per row, with its label)")
    c.add_argument("-o", "--output", required=True, help="output .h5 file")
    c.add_argument("--labels", help="labels of an .npy input (.npy, or text: one per line)")
    c.add_argument("--test", help="test images (same kinds as INPUT)")
    c.add_argument("--test-labels", help="labels of an .npy --test input")
    c.add_argument("--test-fraction", type=float, help="hold out this fraction of INPUT (stratified) as the test split")
    c.add_argument("--seed", type=int, default=0, help="seed of --test-fraction (default 0)")
    c.add_argument("--images-key", help="array name of the images in an .npz")
    c.add_argument("--labels-key", help="array name of the labels in an .npz")
    c.add_argument("--label-column", choices=["first", "last"],
                   help="CSV: which column is the label (required for CSV)")
    c.add_argument("--header", choices=["auto", "yes", "no"], default="auto",
                   help="CSV: skip a header line (auto: when the first line is not all numbers)")
    c.add_argument("--channels", type=positive(int), help="channels of flat pixel rows (default 1)")
    c.add_argument("--height", type=positive(int), help="image height of flat pixel rows (default: square)")
    c.add_argument("--width", type=positive(int), help="image width of flat pixel rows (default: square)")
    c.add_argument("--layout", choices=["auto", "nchw", "nhwc"], default="auto",
                   help="axis order of 4-D arrays (and of flat rows: nhwc = pixel-interleaved channels)")
    c.add_argument("--dtype", choices=["auto", "uint8", "float32", "float64"], default="auto",
                   help="stored image dtype (auto: uint8 for whole numbers 0..255, else float32)")
    c.add_argument("--num-classes", type=positive(int), help="number of classes (default: max label + 1)")
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
