"""The model and its state: build it from the zoo, restore it (``--resume``,
``--init-from``, ``--freeze``), cut it into this rank's channel blocks, make its
optimizer, and hand back parameters, buffers and optimizer state in the global layout
(channel blocks gathered; pipeline stages merged by the layout's ``merge``)."""
import contextlib
import os

import numpy as np

from .. import backend, models
from ..data import builtin
from ..errors import UserError
from ..io.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from ..nn import init, skip_input_gradient
from ..nn.optim import OPTIMIZERS
from ..parallel.channel import ChannelComm, gather_full, local_block, shard_model
from ..parallel.channel_plan import plan_model
from ..parallel.failure import agree


def build_model(args, comm, image_shape, num_classes, dtype, task, deferred=False):
    """The zoo's ``args.model`` for images of ``image_shape`` (C, H, W) and the dataset's
    ``task``, drawn from ``--seed`` (``deferred``: parameters are placeholders until
    materialized, see ``nn.init``); the first layer computes no input gradient (nobody
    uses the gradient of the images)."""
    init.manual_seed(args.seed)
    options = {"width": args.width} if args.width else {}
    with agree(comm):
        try:
            models.check_fits_data(args.model, image_shape, task)
            with init.deferred() if deferred else contextlib.nullcontext():
                model = models.get(args.model, image_shape[0], num_classes, dtype=dtype,
                                   image_size=image_shape[1:], **options)
            if args.model not in models.MODELS:  # the zoo's models are built to fit
                models.check_user_model(model, num_classes, dtype)
        except (ValueError, TypeError) as e:
            raise UserError(f"--model {args.model}: {e}")
    skip_input_gradient(model)
    return model


class ModelState:
    """``model``: what this rank holds; ``whole``: the model it is part of (default: the
    same), whose names and shapes checkpoints, --init-from and --freeze are checked
    against. ``comm``: the ranks that restore together (agree on errors).
    ``channel_comm``: the ranks splitting channels (None: no split). ``say``: prints on
    the reporting rank."""

    def __init__(self, args, comm, model, say, channel_comm=None, whole=None):
        self.args, self.comm, self.model, self.say = args, comm, model, say
        self.whole = whole if whole is not None else model
        self.channel = ChannelComm(channel_comm) if channel_comm is not None else None
        self.shards = {}  # parameter/buffer name -> Shard(sizes, axis) of its channel split
        self.new_parameters = []  # names --init-from did not find (the new head)
        self.optimizer = None
        self.merge = lambda local: local  # {name: array} of this rank -> of the whole model

    # ---- restore -------------------------------------------------------------------
    def restore(self, total_steps, optimized=None):
        """Load --resume or --init-from, apply --freeze, shard channels, make the optimizer
        over ``optimized(model)`` ((name, Parameter) pairs; default all). Returns the step
        to start from."""
        args = self.args
        path = args.resume
        if path == "latest":
            path = latest_checkpoint(args.checkpoint_dir)
            if path is None:
                self.say(f"mpicnn: no checkpoint in {args.checkpoint_dir!r} yet; starting from step 0")
        with agree(self.comm):
            ckpt = load_checkpoint(path) if path else None
            fresh = load_checkpoint(args.init_from) if args.init_from and ckpt is None else None
            if ckpt is not None:
                self._check_optimizer(ckpt)
                self._load_state(ckpt)
            elif args.checkpoint_dir:
                self._claim_directory(args.checkpoint_dir)
            if fresh is not None:
                self._init_from(fresh)
            if args.freeze:
                self._freeze(args.freeze)
            self._shard()
        self.optimized = optimized or (lambda model: model.named_parameters())
        self.optimizer = self.make_optimizer()
        if ckpt is None:
            return 0
        with agree(self.comm):
            try:
                self.optimizer.load_state_dict(self._local_optimizer_state(ckpt.optimizer))
            except (KeyError, ValueError) as e:
                raise UserError(f"checkpoint {path!r}: its optimizer state does not fit --optimizer "
                                f"{args.optimizer} ({e}); resume with the options it was written with")
        self.say(f"mpicnn: resumed from {path} at step {ckpt.step}")
        if ckpt.step >= total_steps:
            self.say(f"mpicnn: the run ends at step {total_steps} (--steps/--epochs): nothing left "
                     f"to train; raise --steps or --epochs to continue")
        return ckpt.step

    def make_optimizer(self):
        a = self.args
        params = self.optimized(self.model)
        scale = {name: a.new_lr_scale for name in self.new_parameters}
        if a.optimizer == "sgd":
            return OPTIMIZERS["sgd"](params, a.lr, momentum=a.momentum, nesterov=a.nesterov,
                                     weight_decay=a.weight_decay, lr_scale=scale)
        return OPTIMIZERS[a.optimizer](params, a.lr, weight_decay=a.weight_decay, lr_scale=scale)

    def _claim_directory(self, directory):
        """A new run's --checkpoint-dir must not hold another run's checkpoints: --resume
        would pick up theirs and pruning would delete them. --overwrite deletes them."""
        found = list_checkpoints(directory)
        if not found:
            return
        names = ", ".join(os.path.basename(p) for _, p in found[-3:])
        if not self.args.overwrite:
            raise UserError(f"--checkpoint-dir {directory!r} holds another run's checkpoints ({names}); continue "
                            f"that run with --resume, use another directory, or pass --overwrite to start a new "
                            f"run there (its checkpoints are deleted)")
        if self.comm.Get_rank() == 0:
            for _, path in found:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass  # another role's first rank was quicker
            self.say(f"mpicnn: --overwrite: deleted {len(found)} checkpoint(s) of an earlier run in {directory}")

    def _check_optimizer(self, ckpt):
        """A resumed run continues the checkpoint's optimizer: another one has other state
        (Adam's moments are not SGD's momentum), so switching is refused by name."""
        saved = ckpt.config.get("optimizer")
        if saved is not None and saved != self.args.optimizer:
            raise UserError(f"checkpoint {ckpt.path!r} was written with --optimizer {saved}; resume with "
                            f"--optimizer {saved}, or start a new run from its weights with --init-from "
                            f"{ckpt.path} --optimizer {self.args.optimizer}")

    def _shard(self):
        """Under channel=C, cut the full (initialised or loaded) model into this rank's
        filter and feature blocks. Every rank holds the same full model first, so a
        checkpoint written on any grid loads here by slicing."""
        if self.channel is None:
            return
        a = self.args
        try:
            plans = plan_model(self.model, a.channel_split)
            self.shards = shard_model(self.model, self.channel, split=a.channel_split)
        except ValueError as e:
            raise UserError(f"--model {a.model} under --parallel {a.parallel}: {e}")
        self.say("\n".join(f"mpicnn: channel plan {n}: {p}" for n, p in plans.items()))

    def _local_optimizer_state(self, saved):
        """A global optimizer state from a checkpoint -> this rank's blocks of it."""
        if not self.shards:
            return saved
        rank = self.channel.comm.Get_rank()
        params = {}
        for name, arrays in saved["params"].items():
            shard = self.shards.get(name)
            params[name] = {s: (local_block(v, shard, rank) if shard else v) for s, v in arrays.items()}
        return {**saved, "params": params}

    def _load_state(self, ckpt):
        state = {**ckpt.params, **ckpt.buffers}
        try:
            _check_fits(self.whole, state)
            own = set(self.model.state_dict())
            self.model.load_state_dict({k: v for k, v in state.items() if k in own})
        except (KeyError, ValueError) as e:
            saved = {k: v for k, v in ckpt.config.items() if k in ("model", "width", "dataset")}
            if any(v != getattr(self.args, k) for k, v in saved.items() if k != "dataset"):
                # the usual cause: a resume without the first run's options
                what = " ".join(f"--{k} {v}" for k, v in saved.items() if v is not None)
                raise UserError(f"checkpoint {ckpt.path!r} was written with {what}; resume with the same "
                                f"options (or --init-from to start a new run from its weights)")
            detail = str(e) if len(str(e)) < 300 else str(e)[:300] + " ..."
            misfit = _data_misfit(self.whole, ckpt.params)
            if misfit or not _same_dataset(saved.get("dataset", self.args.dataset), self.args.dataset):
                misfit = misfit or f"built for these images it has other weights ({detail})"
                raise UserError(f"dataset {self.args.dataset} does not fit the model of checkpoint {ckpt.path!r} "
                                f"(--model {self.args.model}): {misfit}; use data with the image channels, size "
                                f"and classes it was trained on, or --init-from to start a new run from its weights")
            raise UserError(f"checkpoint {ckpt.path!r} does not match --model {self.args.model} ({detail}); "
                            "use --init-from to start a new run from different weights")

    def _init_from(self, ckpt):
        """Every parameter whose name and shape match (in the whole model) is loaded, with
        its BatchNorm buffers; the rest keep their initial values and count as new."""
        matches = {name for name, p in self.whole.named_parameters()
                   if name in ckpt.params and ckpt.params[name].shape == p.data.shape}
        if not matches:
            raise UserError(f"--init-from {ckpt.path!r}: no parameter matches --model {self.args.model} "
                            "by name and shape")
        # Found now, not as "the loss is not finite at step 0": the file is at fault, not the run.
        loaded = {**{n: ckpt.params[n] for n in matches},
                  **{n: v for n, v in ckpt.buffers.items() if n.rsplit(".", 1)[0] + ".weight" in matches}}
        bad = sorted(n for n, v in loaded.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all())
        if bad:
            raise UserError(f"--init-from {ckpt.path!r}: {', '.join(bad)} hold NaN or Inf; a run cannot start "
                            f"from them: export the weights again from a finite model")
        for name, p in self.model.named_parameters():
            if name in matches:
                p.data[...] = ckpt.params[name]
        for name, buf in self.model.named_buffers():
            saved = ckpt.buffers.get(name)
            if saved is not None and np.shape(saved) == buf.shape and name.rsplit(".", 1)[0] + ".weight" in matches:
                buf[...] = saved
        self.new_parameters = [name for name, _ in self.whole.named_parameters() if name not in matches]
        self.say(f"mpicnn: initialised {len(matches)} tensors from {ckpt.path}; "
                 f"new: {', '.join(self.new_parameters) if self.new_parameters else 'none'}")

    def _freeze(self, spec):
        prefixes = [p.strip() for p in spec.split(",") if p.strip()]
        names = [n for n, _ in self.whole.named_parameters()]
        for prefix in prefixes:
            if not any(n.startswith(prefix) for n in names):
                raise UserError(f"--freeze {prefix!r} matches no parameter; names look like "
                                f"{', '.join(names[:4])} ...")
        for name, p in self.model.named_parameters():
            if any(name.startswith(prefix) for prefix in prefixes):
                p.requires_grad = False

    # ---- global layout ---------------------------------------------------------------
    def _global(self, name, array):
        """``array`` (a parameter, its optimizer state or a buffer) in the global layout, on host."""
        host = backend.to_host(array)
        shard = self.shards.get(name)
        return gather_full(self.channel, host, shard) if shard else host

    def global_parameters(self):
        """name -> parameter in the global layout (host NumPy), on every rank: a collective
        over the ranks that split the model."""
        return self.merge({n: self._global(n, p.data) for n, p in self.model.named_parameters()})

    def global_state(self):
        """(parameters, buffers, optimizer state) in the global layout (host NumPy), on
        every rank; a collective where the model is split over ranks."""
        params = self.global_parameters()
        optimizer = dict(self.optimizer.state_dict())
        optimizer["params"] = self.merge({n: {k: self._global(n, v) for k, v in st.items()}
                                          for n, st in optimizer["params"].items()})
        buffers = self.merge({n: self._global(n, b) for n, b in self.model.named_buffers()})
        return params, buffers, optimizer


def _same_dataset(a, b):
    """Whether dataset specs ``a`` and ``b`` name the same data: one built-in, or one file
    (relative paths resolved against this working directory)."""
    a, b = builtin.parse_spec(a), builtin.parse_spec(b)
    if a[0] == b[0] == "file":
        return os.path.realpath(a[1]) == os.path.realpath(b[1])
    return a == b


def _data_misfit(whole, saved):
    """What of the data ``whole`` was built for the checkpoint's model (``saved``, its
    parameters) did not take, as far as the weights tell: the image channels (the first
    conv weight's axis 1) and the classes (the head weight's axis 0, as predict and
    export read them). "" when neither differs."""
    weights = [(n, p.data.shape) for n, p in whole.named_parameters() if len(p.data.shape) >= 2]
    if not weights:
        return ""
    (first, first_shape), (head, head_shape) = weights[0], weights[-1]
    found = []
    if len(first_shape) >= 4 and first in saved and saved[first].shape[1] != first_shape[1]:
        found.append(f"the images have {first_shape[1]} channel(s), the model takes {saved[first].shape[1]}")
    if head in saved and saved[head].shape[0] != head_shape[0]:
        found.append(f"the data has {head_shape[0]} classes, the model {saved[head].shape[0]}")
    return "; ".join(found)


def _check_fits(whole, state):
    """Raise KeyError/ValueError as ``load_state_dict`` would if ``state`` (a checkpoint's
    arrays) does not fit ``whole``, without writing anything."""
    shapes = {n: p.data.shape for n, p in whole.named_parameters()}
    shapes.update((n, np.shape(b)) for n, b in whole.named_buffers())
    missing, unexpected = [n for n in shapes if n not in state], [n for n in state if n not in shapes]
    if missing or unexpected:
        raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
    for name, value in state.items():
        if np.shape(value) != shapes[name]:
            raise ValueError(f"{name}: shape {np.shape(value)} in state_dict, model has {shapes[name]}")
