"""Command-line options of ``python -m mpicnn.train`` and their TOML config file.

A config file holds the same keys as the long options (``batch-size`` or
``batch_size``); the command line wins over the file. Every error is a
``UserError`` (one line, exit status 2), never argparse's own exit, so that MPI
ranks agree on it instead of each printing usage.
"""
import argparse
import os
import sys
import tempfile

from . import __version__, data
from .cli import Parser, nonnegative, positive
from .data import augment
from .errors import UserError
from .io.atomic import same_file
from .io.checkpoint import is_checkpoint
from .io.metrics import is_metrics_log
from .nn.optim import OPTIMIZERS
from .nn.schedule import SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3}


def build_parser():
    p = Parser(prog="python -m mpicnn.train",
               description="Train a CNN with MPI. With no arguments: LeNet-5 on the built-in mnist5k digits.")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="lenet5", help="lenet5, convnet, resnet8, resnet20, vgg11, cosmoflow, unet, unet3d, or "
                   "package.module:function for a builder of your own (default lenet5)")
    g.add_argument("--width", type=positive(int), help="base channel width of convnet/resnet/vgg11/cosmoflow/unet/unet3d")
    g.add_argument("--dataset", default="mnist5k",
                   help="mnist5k, shapes:SIZE[:NTRAIN], cosmo:SIZE[:NTRAIN], blobs:SIZE[:NTRAIN] or an HDF5 file path (default mnist5k)")
    g.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    g.add_argument("--backend", default="auto", choices=["auto", "numpy", "emu", "cupy"],
                   help="numpy (CPU), cupy (CUDA kernels on the GPU), emu (the same CUDA kernels on "
                        "the CPU emulator); auto picks cupy when a GPU is visible, else numpy")
    g = p.add_argument_group("data feed")
    g.add_argument("--augment", metavar="SPEC", help="training-set augmentation, every draw a function of (seed, epoch, "
                   "sample): crop:P (random crop, zero padding P), flip (horizontal), flip:AXES (x, y, z), "
                   "rot90[:AXES] (quarter turns in the H-W or the named square plane); e.g. crop:4,flip")
    g.add_argument("--data-shards", type=positive(int), metavar="K",
                   help="cut the training set into K fixed shards; each batch takes B/K samples of every "
                        "shard and a data rank reads only its own (the same batches on any rank count)")
    g.add_argument("--stage-dir", metavar="PATH", help="copy the training samples each node reads to this "
                   "node-local directory once at start, and read them there (e.g. /dev/shm)")
    g.add_argument("--prefetch", action="store_true",
                   help="read (and augment) each batch in a background thread during the step before; "
                        "pays off when reads are slow (a shared file system, large images, no cache)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive(int), default=30)
    g.add_argument("--steps", type=positive(int), help="total optimizer steps (overrides --epochs)")
    g.add_argument("--batch-size", type=positive(int), default=64, help="global batch size")
    g.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    g.add_argument("--lr", type=nonnegative(float), help="base learning rate (default: sgd 0.05, adam/adamw 3e-3)")
    g.add_argument("--momentum", type=nonnegative(float), default=0.9, help="SGD momentum")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=nonnegative(float), default=0.0)
    g.add_argument("--schedule", default="cosine", choices=list(SCHEDULES))
    g.add_argument("--warmup", type=nonnegative(int), default=0, help="linear warm-up steps")
    g.add_argument("--step-size", type=positive(int), help="steps between decays of the step schedule")
    g.add_argument("--gamma", type=positive(float), default=0.1, help="decay factor of the step schedule")
    g.add_argument("--seed", type=nonnegative(int), default=0)
    g = p.add_argument_group("parallelism")
    g.add_argument("--parallel", help="process grid, e.g. data=2 (default: data parallel over all ranks); "
                                      "auto: the planner chooses (python -m mpicnn.plan)")
    g.add_argument("--machine", help="under --parallel auto: machine file of python -m mpicnn.bench calibrate "
                                     "(default $MPICNN_MACHINE, else a quick calibration at start-up)")
    g.add_argument("--micro-batches", type=positive(int), default=1,
                   help="cut each global batch into M micro-batches whose gradients accumulate before "
                        "one optimizer step (gradient accumulation; the pipeline's unit of work)")
    g.add_argument("--pipeline-schedule", default="1f1b", choices=["gpipe", "1f1b"],
                   help="under pipeline=S: gpipe (all forwards, then all backwards) or 1f1b (one "
                        "forward, one backward; at most S micro-batches in flight; default)")
    g.add_argument("--staleness", type=nonnegative(int), default=0,
                   help="under ps=K: how many steps a worker may run ahead of the slowest "
                        "(0: synchronous SGD)")
    g.add_argument("--balance", default="static", choices=["static", "dynamic"],
                   help="data parallel: split each batch evenly (static) or in proportion to each "
                        "rank's measured throughput (dynamic)")
    g.add_argument("--balance-every", type=positive(int), default=10,
                   help="steps between throughput measurements under --balance dynamic (default 10)")
    g.add_argument("--channel-split", default="auto", choices=["auto", "filter", "channel"],
                   help="under channel=C: split convs by output channels (filter), by input channels "
                        "(channel, partial sums reduce-scattered) or choose per layer by "
                        "communication volume (auto, default)")
    g.add_argument("--bucket-mb", type=positive(float), default=25.0,
                   help="size of fused gradient allreduce buckets in MiB (default 25)")
    g.add_argument("--skip-nonfinite", action="store_true",
                   help="skip steps whose loss or gradients are NaN/Inf instead of stopping the run")
    g.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over all data-parallel ranks")
    g = p.add_argument_group("checkpoints and output")
    g.add_argument("--checkpoint-dir", help="directory for checkpoints (ckpt-STEP.h5)")
    g.add_argument("--checkpoint-every", type=nonnegative(int), default=0, help="steps between checkpoints (0: at the end)")
    g.add_argument("--keep-checkpoints", type=positive(int), default=3, help="how many checkpoints to keep")
    g.add_argument("--resume", nargs="?", const="latest",
                   help="continue from a checkpoint (default: the latest in --checkpoint-dir)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in a --checkpoint-dir that holds another run's checkpoints "
                        "(they are deleted); without it such a run is refused")
    g.add_argument("--init-from", help="load matching weights from a checkpoint (fine-tuning); "
                   "ignored when --resume finds a checkpoint of this run")
    g.add_argument("--new-lr-scale", type=nonnegative(float), default=1.0,
                   help="learning-rate multiplier for parameters --init-from could not load (a new head)")
    g.add_argument("--freeze", help="comma-separated parameter name prefixes to freeze, e.g. 0.,3.")
    g.add_argument("--save", help="write the final parameters to this HDF5 file")
    g.add_argument("--metrics", help="write JSON-lines metrics to this file (rank 0)")
    g.add_argument("--eval-every", type=nonnegative(int), default=0,
                   help="steps between test evaluations (0: after each epoch)")
    g.add_argument("--eval-batch-size", type=positive(int), default=500)
    g.add_argument("--log-every", type=positive(int), default=10, help="steps between metrics records")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--trace", metavar="DIR", help="every rank writes DIR/rank{R}.trace.json of --trace-steps")
    g.add_argument("--trace-steps", metavar="A:B", help="steps A <= step < B to trace (default 10:20)")
    g.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard scalars to DIR (rank 0)")
    g.add_argument("--config", help="TOML file with the same keys as these options")
    p.add_argument("--version", action="version", version=f"mpicnn {__version__}")
    _show_defaults(p)
    return p


def _show_defaults(parser):
    """--help shows every option's default where its text does not say it already."""
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default in (None, False, argparse.SUPPRESS):
            continue
        text = action.help or ""
        if "default" not in text:
            action.help = f"{text} (default {default})".strip()


def _config_argv(path, parser):
    """Turn a TOML file into argv items placed before the real command line."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path!r} not found")
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"config file {path!r} is not valid TOML: {e}")
    options = {a.dest: a for a in parser._actions if a.option_strings}
    argv = []
    for key, value in table.items():
        dest = key.replace("-", "_")
        if dest not in options or dest in ("config", "help"):
            raise UserError(f"config file {path!r}: unknown key {key!r}; keys are the long options "
                            f"of python -m mpicnn.train --help without the dashes")
        flag = options[dest].option_strings[-1]
        if dest == "resume" and isinstance(value, bool):  # resume = true: the latest checkpoint
            argv += [flag] if value else []
        elif isinstance(options[dest], argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise UserError(f"config file {path!r}: {key} takes true or false, got {value!r}")
            argv += [flag] if value else []
        elif isinstance(value, (dict, list)):
            raise UserError(f"config file {path!r}: {key} takes a single value, got {value!r}")
        else:
            argv += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


PATH_OPTIONS = ("dataset", "stage_dir", "machine", "checkpoint_dir", "resume", "init_from", "save", "metrics",
                "trace", "tensorboard", "config")


def parse_args(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    first = parser.parse_args(argv)
    if first.config:
        argv = _config_argv(first.config, parser) + argv
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.resume and args.resume == "latest" and not args.checkpoint_dir:
        raise UserError("--resume without a path needs --checkpoint-dir to look in")
    for dest in PATH_OPTIONS:  # "" is what an unset variable gives ("--stage-dir $TMPDIR"): not "none"
        if getattr(args, dest) == "":
            raise UserError(f"--{dest.replace('_', '-')} is empty (an unset shell variable?); give a path, "
                            f"or leave the option out")
    if args.trace_steps is not None and not args.trace:
        raise UserError(f"--trace-steps {args.trace_steps} traces nothing without --trace DIR (where each rank's "
                        f"trace goes); add --trace DIR, or leave --trace-steps out")
    augment.parse(args.augment)  # a bad spec fails here, before any rank opens data
    return args


def check_outputs(args, reports):
    """Refuse at start-up an output that would write over an input or another output, or
    that cannot be written where it goes (found when written, that costs the input, or the
    whole run for --save, or ends in a traceback). Call it on every rank under ``agree``:
    each rank checks what it may write, as its file system shows it. Every rank writes
    --trace and reads --checkpoint-dir; which rank writes --save and the checkpoints depends
    on the layout, chosen later; only the reporting rank (``reports``) writes --metrics
    and --tensorboard."""
    inputs = [("--dataset", args.dataset, data.resolve(args.dataset)),
              ("--init-from", args.init_from, args.init_from), ("--config", args.config, args.config),
              ("--machine", args.machine, args.machine),
              ("--resume", args.resume, None if args.resume == "latest" else args.resume)]
    # (option, path, checked on every rank, and for a file an example name in a directory)
    files = [("--save", args.save, True, "model.h5"), ("--metrics", args.metrics, False, "metrics.jsonl")]
    directories = [("--checkpoint-dir", args.checkpoint_dir, True), ("--trace", args.trace, True),
                   ("--tensorboard", args.tensorboard, False)]
    file_outputs = [(option, path) for option, path, *_ in files if path]
    outputs = file_outputs + [(option, path) for option, path, _ in directories if path]
    for option, path in outputs:
        for other, value, used in inputs:
            if used and same_file(path, used):
                raise UserError(f"{option} {path!r} is the same file as {other} {value!r}: the run would "
                                f"overwrite its own input; choose another {option}")
    for i, (option, path) in enumerate(file_outputs):  # directories may be shared, a file may not
        for other, used in outputs[i + 1:]:
            if same_file(path, used):
                raise UserError(f"{option} and {other} are both {path!r}: one would overwrite the other; "
                                f"give them different paths")
    for option, path, everywhere, example in files:
        if path and (everywhere or reports):
            check_file_output(option, path, example)
    for option, path, everywhere in directories:
        if path and (everywhere or reports):
            if os.path.exists(path) and not os.path.isdir(path):
                raise UserError(f"{option} {path!r} is a file, not a directory; give a directory "
                                f"(it is created if missing)")
            probe_writable(option, path, path)
    if args.save and os.path.exists(args.save) and not is_checkpoint(args.save):
        raise UserError(f"--save {args.save!r} exists and is not an mpicnn checkpoint; --save replaces only "
                        f"an earlier --save or checkpoint: remove that file or choose another path")
    if reports and args.metrics and not is_metrics_log(args.metrics):
        raise UserError(f"--metrics {args.metrics!r} exists and is not a metrics log (JSON lines); --metrics "
                        f"replaces only an earlier one: remove that file or choose another path")


def check_file_output(option, path, example):
    """UserError unless the file ``path`` can be written: not a directory (``example``: a
    file name to suggest in it), and in a place this process can create files in."""
    if os.path.isdir(path):
        raise UserError(f"{option} {path!r} is a directory; give a file path, e.g. {os.path.join(path, example)}")
    probe_writable(option, path, os.path.dirname(os.path.abspath(path)))


def probe_writable(option, path, directory):
    """Create and remove a file in ``directory``, or in its nearest existing parent if the
    run is to create it: the one sure test that the run can write there."""
    directory = os.path.abspath(directory)
    while not os.path.exists(directory):
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        raise UserError(f"{option} {path!r}: {directory} is a file, not a directory; choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".mpicnn-probe-")
    except OSError as e:
        raise UserError(f"{option} {path!r}: cannot create files in {directory} ({e.strerror}); "
                        f"choose a writable location") from None
    os.close(fd)
    os.unlink(probe)
