"""Checkpoints of the run: the global state gathered by every rank that holds a part of
it, written by one (atomically, by ``io.checkpoint``), and the old ones pruned."""
import os

from ..data import is_builtin
from ..errors import UserError
from ..io.checkpoint import checkpoint_path, prune_checkpoints, save_checkpoint
from ..parallel.failure import agree


def rng_state(seed, step):
    """Every random stream is counter-based, so (seed, step) is the whole state."""
    return {"seed": seed, "step": step,
            "data_order": "numpy default_rng([seed, epoch]).permutation(N)",
            "dropout": "splitmix64 hash of (layer seed, step, global sample, element)"}


def recorded_options(args):
    """The run's options as its checkpoints record them: a dataset file by its absolute
    path, so that evaluate, export and --resume find it from any working directory
    (built-in names such as mnist5k or cosmo:16:8 stay names)."""
    options = dict(vars(args))
    if not is_builtin(args.dataset):
        options["dataset"] = os.path.abspath(args.dataset)
    return options


def write(comm, writer, path, args, step, steps_per_epoch, global_state, task):
    """Gather the state (``global_state()``: a collective over ``comm``), write it on the
    ``writer`` rank; a failed write is an error on every rank of ``comm``. ``task``:
    classification, regression or segmentation (the training dataset's), recorded so
    that predict knows what the outputs mean without the dataset."""
    params, buffers, optimizer = global_state()
    with agree(comm):
        if writer:
            try:
                save_checkpoint(path, params, buffers, optimizer, step=step, epoch=step // steps_per_epoch,
                                seed=args.seed, rng_state=rng_state(args.seed, step),
                                config=recorded_options(args), task=task)
            except OSError as e:
                raise UserError(f"cannot write checkpoint {path!r}: {e}")


def checkpoint(comm, writer, args, step, steps_per_epoch, global_state, task):
    """``ckpt-STEP.h5`` in --checkpoint-dir; only the newest --keep-checkpoints stay."""
    write(comm, writer, checkpoint_path(args.checkpoint_dir, step), args, step, steps_per_epoch, global_state,
          task)
    if writer:
        prune_checkpoints(args.checkpoint_dir, args.keep_checkpoints)


def stop_note(args, step):
    """Where a stopped run's state went, for the stop message."""
    if args.checkpoint_dir:
        return f"checkpoint {checkpoint_path(args.checkpoint_dir, step)} written; continue with --resume"
    return "no --checkpoint-dir, nothing saved"
