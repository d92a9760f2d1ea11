"""``python -m mpicnn.evaluate CKPT [--dataset D] [--split test] [--parallel ...]``: the
loss and accuracy of a checkpoint on a split of its dataset (or of any dataset whose
images and classes fit its model), on any data/spatial/channel/pipeline layout
(``mpirun -n N``), through the same evaluation the trainer runs at the end of a run, so
the test figures equal the trainer's final test accuracy and loss."""
import os

from . import data
from .cli import Parser
from .config import parse_args
from .errors import UserError
from .io.checkpoint import load_checkpoint
from .parallel.collectives import world
from .parallel.failure import agree
from .parallel.spec import parse_parallel
from .signals import StopRequest
from .train import mpi_main, use_node
from .training import make_layout

# Options of the training run that decide the model and its arrays; taken from the checkpoint.
MODEL_OPTIONS = ("model", "width", "dtype", "optimizer", "channel_split", "seed")


def build_parser():
    p = Parser(prog="python -m mpicnn.evaluate",
               description="Test loss and accuracy of a checkpoint (any layout under mpirun).")
    p.add_argument("checkpoint", help="an mpicnn checkpoint (ckpt-STEP.h5 or a --save file)")
    p.add_argument("--dataset", help="dataset to evaluate on, with the image channels and classes of the "
                                    "checkpoint's (default: the checkpoint's)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split (default test)")
    p.add_argument("--parallel", default=None, help="process grid, as for training (default data=N)")
    p.add_argument("--backend", default="numpy", help="numpy, cupy, emu or auto (default numpy)")
    p.add_argument("--eval-batch-size", default="500", help="samples per forward pass (default 500)")
    return p


def recorded_dataset(ckpt):
    """The dataset ``ckpt`` was trained on, if it can be found from here. Checkpoints
    record a file by its absolute path; older ones by the path the run was given,
    relative to the directory it ran in, which no guess can recover."""
    spec = ckpt.config.get("dataset")
    if not spec:
        raise UserError(f"checkpoint {ckpt.path!r} does not say which dataset it was trained on; "
                        f"pass --dataset FILE_OR_NAME")
    if not data.is_builtin(spec) and not os.path.exists(spec):
        raise UserError(f"checkpoint {ckpt.path!r} was trained on dataset {spec!r}, which is not there (from "
                        f"{os.getcwd()}); pass --dataset with its path")
    return spec


def training_argv(options, ckpt):
    """The trainer's command line that rebuilds ``ckpt``'s model on this layout and stops at once."""
    config = ckpt.config
    # One step more than the checkpoint's: nothing runs, and the trainer does not say
    # "nothing left to train".
    argv = ["--resume", options.checkpoint, "--steps", str(ckpt.step + 1), "--no-progress",
            "--dataset", options.dataset or recorded_dataset(ckpt), "--backend", options.backend,
            "--eval-batch-size", options.eval_batch_size]
    for key in MODEL_OPTIONS + ("batch_size", "micro_batches"):
        if config.get(key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(config[key])]
    return argv + (["--parallel", options.parallel] if options.parallel else [])


def evaluate(argv=None, comm=None):
    """(accuracy, loss, samples) of the checkpoint named in ``argv``, on every rank."""
    comm = comm or world()
    with agree(comm):
        options = build_parser().parse_args(argv)
        ckpt = load_checkpoint(options.checkpoint)
        args = parse_args(training_argv(options, ckpt))
        spec = parse_parallel(args.parallel, comm.Get_size())
        if spec.ps:
            raise UserError("evaluate runs on data, spatial, channel and pipeline layouts; drop ps=K")
    use_node(args, comm)
    layout = make_layout(args, comm, StopRequest())
    try:
        with agree(comm):
            dataset = layout.test_set if options.split == "test" else layout.train_set
            if dataset is None:
                raise UserError(f"dataset {args.dataset} has no test split; use --split train")
        accuracy, loss = layout.evaluate(ckpt.step, dataset)
    finally:
        layout.close()
    return accuracy, loss, dataset.num_samples


def main(argv=None):
    accuracy, loss, n = mpi_main(evaluate, argv)
    if world().Get_rank() == 0:
        what = "mse" if accuracy is None else f"accuracy {100 * accuracy:.2f}%  loss"  # regression: no accuracy
        print(f"{what} {loss:.4f}  ({n} samples)", flush=True)


if __name__ == "__main__":
    main()
