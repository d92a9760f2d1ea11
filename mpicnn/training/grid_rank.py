"""What every rank of the process grid holds, whatever its step: the grid and its
communicators, the data, the model state, gradient buckets, the loss. ``GridLayout``
(data/spatial/channel) and ``PipelineStage`` add their own step to it."""
import time

import numpy as np

from .. import backend
from ..errors import UserError
from ..faults import FaultPlan
from ..nn import Conv2d, Conv3d, CrossEntropyLoss, MSELoss
from ..nn.module import declared
from ..parallel import events
from ..parallel.balance import Balancer
from ..parallel.collectives import bcast_array, node_local, sum_in_place
from ..parallel.failure import agree
from ..parallel.gradsync import GradientBuckets
from ..parallel.grid import ProcessGrid
from ..parallel.spatial import make_context
from ..parallel.spec import parse_parallel
from ..signals import STOP_SIGNALS
from ..straggler import Straggler
from . import checkpoints, evaluation
from .batches import Batches
from .layout import Layout, Outcome
from .model_state import ModelState, build_model
from .phases import PhaseClock


class GridRank(Layout):
    """Set up this rank of ``comm``'s grid: build the model, keep this rank's part of it
    (``shape``), restore that part, move it to the backend. ``gradients_over``: the communicator gradients
    are summed over (default: the ranks replicating each parameter); ``optimized(model)``:
    the (name, Parameter) pairs this rank's optimizer keeps state for (default: all)."""

    def __init__(self, args, comm, stop, gradients_over=None, optimized=None):
        self.args, self.comm, self.world, self.stop = args, comm, comm, stop
        self.rank = comm.Get_rank()
        self.reports = self.rank == 0
        self.dtype = np.dtype(args.dtype)
        self.clock = PhaseClock()
        with agree(comm):
            self.spec = parse_parallel(args.parallel, comm.Get_size())
            self.faults = FaultPlan(self.rank)
            self.straggler = Straggler(self.rank, comm.Get_size())
        spec = self.spec
        self.grid = ProcessGrid(comm, spec)
        self.layout_text = f"{spec.size} rank(s) ({spec})"
        self.context = make_context(self.grid, args.sync_bn)
        self.batches = Batches(args, comm, spec, self.grid, self.dtype, prepare=node_local(comm)[0] == 0)
        self.train_set, self.test_set = self.batches.train_set, self.batches.test_set
        # classification, regression or segmentation (the dataset's targets say which)
        self.task = getattr(self.train_set, "task", "classification")
        self.dense = self.task == "segmentation"  # per-pixel outputs, split like the maps
        with agree(comm):
            if self.task != "classification" and spec.pipeline > 1:
                raise UserError(f"--parallel {args.parallel}: pipeline stages train classifiers only in "
                                f"this version, and {args.dataset} is a {self.task} dataset; use data=, "
                                f"spatial= or channel=")
        # Ranks holding each sample's loss: the spatial and channel blocks of one sample
        # (pipeline stages other than the last report none). Dense outputs stay split:
        # each spatial block holds its own pixels' share, summed rather than repeated.
        self.loss_copies = comm.Get_size() // (spec.data * spec.pipeline)
        if self.dense:
            self.loss_copies //= spec.blocks
        self.steps_per_epoch, self.total_steps = self.batches.steps_per_epoch, self.batches.total_steps
        self.balancer = self._balancer()
        whole = self._model()
        self.state = ModelState(args, comm, self.shape(whole), self.say,
                                self.grid.channel if spec.channel > 1 else None, whole=whole)
        self.start_step = self.state.restore(self.total_steps, optimized)
        if self.context.spatial and self.shards:
            self.context.name_layers(self.model)  # the sharded layers are new objects
        backend.to_backend(self.model, self.optimizer)  # a no-op unless the arrays live on a GPU
        self.buckets = GradientBuckets(self.model, gradients_over or self.grid.replicas, int(args.bucket_mb * 2 ** 20))
        self.criterion = MSELoss() if self.task == "regression" else CrossEntropyLoss()
        if self.task == "regression":  # the baseline: predict the training set's mean targets
            self.target_mean = self.train_set.labels.mean(axis=0)
        self.read_ahead_layer = self._read_ahead_at_last_conv() if self.batches.prefetch.enabled else None

    model = property(lambda self: self.state.model)
    optimizer = property(lambda self: self.state.optimizer)
    shards = property(lambda self: self.state.shards)

    defer_init = False  # build the model with init.deferred() (a layout that keeps part of it)

    def shape(self, model):
        """The part of the whole model this rank holds (a pipeline stage cuts it); the grid
        keeps it whole."""
        return model

    def say(self, *text):
        if self.reports:
            print(*text, flush=True)

    def _balancer(self):
        if self.args.balance != "dynamic":
            return None
        if self.spec.data == 1:
            self.say("mpicnn: --balance dynamic has a single data rank to feed: nothing to balance")
            return None
        self.batches.balancer = Balancer(self.comm, self.grid.data_rank, self.spec.data, self.args.balance_every)
        return self.batches.balancer

    def _model(self):
        args = self.args
        model = build_model(args, self.comm, self.train_set.shape, self.train_set.num_classes, self.dtype,
                            self.task, deferred=self.defer_init)
        model.set_context(self.context)
        with agree(self.comm):
            _check_declared(model, args.parallel, self.spec)
        if self.context.spatial:
            self.context.name_layers(model)
            with agree(self.comm):
                if any(type(m).__name__ == "Flatten" for m in model.modules()):
                    raise UserError(f"--model {args.model} flattens its feature maps (Flatten), which "
                                    f"--parallel spatial=... does not support; use a model with global "
                                    f"pooling (convnet, resnet8, resnet20, vgg11) or --parallel data=N")
        return model

    # ---- state shared by the grid's ranks ------------------------------------------------
    def sync_buffers(self):
        """Give every data rank rank 0's BatchNorm running statistics (as DDP does), so
        evaluation and checkpoints see one model."""
        if self.spec.data > 1 and not self.args.sync_bn:
            for _, buf in self.model.named_buffers():
                bcast_array(self.grid.data, buf, root=0)

    def global_state(self):
        self.sync_buffers()
        return self.state.global_state()

    def checkpoint(self, step):
        checkpoints.checkpoint(self.comm, self.reports, self.args, step, self.steps_per_epoch, self.global_state,
                               self.task)

    def save(self, path, step):
        checkpoints.write(self.comm, self.reports, path, self.args, step, self.steps_per_epoch, self.global_state,
                          self.task)

    def evaluate(self, done, dataset=None):
        """Figures of ``dataset`` (default: the test set) over the data ranks (``evaluation.evaluate``)."""
        return evaluation.evaluate(self, self.test_set if dataset is None else dataset)

    def step(self, step):
        with self.clock.phase("data"):
            x, y, pieces = self.batches.next_batch(step, self.read_batch)
        self.read_ahead_from = step  # compute() starts the next read (start_read_ahead)
        comm0, layers0 = self.buckets.comm_seconds, events.comm_seconds
        self.inject_faults(step, x)
        self.context.step = step
        loss_sum, correct, seconds = self.compute(x, y, pieces)
        self.start_read_ahead()  # if compute did not
        in_layers = events.comm_seconds - layers0  # halos, channel collectives, reductions, pipeline transfers
        with self.clock.phase("exchange"):
            self.buckets.finish()
            t0 = time.perf_counter()
            outcome = self.exchange(loss_sum, correct)
            t_figures = time.perf_counter() - t0
        outcome.data_seconds = self.clock.seconds["data"]
        outcome.comm_seconds = self.buckets.comm_seconds - comm0 + t_figures + in_layers
        if self.balancer:
            self.balancer.record(sum(hi - lo for lo, hi in pieces), seconds)
            self.balancer.update(step)
        return outcome

    read_ahead_from = None  # the step whose compute has yet to start the next step's read
    # This rank's (compute seconds before a straggler's sleep, samples) in the step, and
    # the other ranks' seconds per sample in the step before: what the straggler switch
    # slows a rank against (per sample, so that --balance dynamic can still move samples
    # off it).
    own_compute, others_per_sample = (0.0, 0), None

    def update(self, lr):
        t0 = time.perf_counter()
        super().update(lr)
        self.straggler.after(time.perf_counter() - t0)  # a slow rank is slow at its update too

    def _read_ahead_at_last_conv(self):
        """With --prefetch, start the next read as backward reaches the model's last
        convolution (its long native kernels run without the GIL); returns that layer,
        or None (the read then starts as backward begins)."""
        convs = [m for m in self.model.modules() if isinstance(m, (Conv2d, Conv3d))]
        if not convs:
            return None
        def read_ahead_then_backward(inner, dy):
            self.start_read_ahead()
            return inner(dy)

        convs[-1].wrap_pass("backward", read_ahead_then_backward)
        return convs[-1]

    def start_read_ahead(self):
        """Start reading the next step's batch in the background (with --prefetch), once a
        step, where the step's Python wants the GIL least (the reader's own Python holds
        it): as backward reaches the last convolution (``_read_ahead_at_last_conv``), or
        as backward begins in a model without one."""
        if self.read_ahead_from is not None:
            self.batches.read_ahead(self.read_ahead_from, self.read_batch)
            self.read_ahead_from = None

    def exchange(self, loss_sum, correct):
        """ONE allreduce over all ranks of the step's figures: loss sum, correct,
        non-finite flags, and a count per stop signal (and under the straggler switch,
        the ranks' compute seconds). Every rank acts on the same reduced figures, so stops
        and skips happen at the same step everywhere."""
        finite = np.isfinite(loss_sum) and self.buckets.all_finite()
        figures = np.array([loss_sum, correct, not finite]
                           + [self.stop.signal == sig for sig in STOP_SIGNALS]
                           + (list(self.own_compute) if self.straggler.active else []), dtype=np.float64)
        sum_in_place(self.grid.world, figures)
        # Ranks that split one sample's maps (spatial or channel blocks) all hold its loss:
        # count it once.
        figures[:2] /= self.loss_copies
        signals = figures[3:3 + len(STOP_SIGNALS)]
        signum = next((sig for sig, n in zip(STOP_SIGNALS, signals) if n), 0)
        if self.straggler.active:
            seconds, samples = figures[-2:] - self.own_compute
            self.others_per_sample = seconds / samples if samples else None
        return Outcome(loss_sum=figures[0], correct=figures[1], nonfinite=bool(figures[2]), signum=int(signum))

    def compute(self, x, y, pieces):
        """Forward and backward of this rank's pieces of the step's micro-batches.
        Returns (loss sum, correct, seconds of compute excluding communication waits)."""
        raise NotImplementedError

    def data_figures(self, summary):
        """Training bytes each rank read from the shared file per epoch, and each node's
        staged copy (``Batches.figures``)."""
        figures = summary["data_reads"] = self.batches.figures(self.comm)
        per_rank = figures["shared_bytes_per_rank_epoch"]
        for copy in figures.get("staging", []):
            self.say(f"mpicnn: staged {copy['samples']} training samples ({copy['bytes_read'] / 2 ** 20:.2f} MiB "
                     f"read from the shared file{'' if copy['bytes_read'] else ': reused an earlier copy'}) "
                     f"to {copy['path']}")
        if self.args.stage_dir:
            most = max((b for rank in per_rank for b in rank), default=0)
            self.say(f"mpicnn: after staging, training reads from the shared file: at most {most} bytes per rank "
                     f"and epoch")

    def read_batch(self, dataset, indices):
        return self.batches.read(dataset, indices)

    def inject_faults(self, step, x):
        """MPICNN_INJECT_FAULT for this step: raise and kill act inside fire()."""
        kinds = self.faults.fire(step)
        if "nan" in kinds:
            x[...] = np.nan
        if "term" in kinds:
            self.stop.request()

    def close(self):
        self.batches.close()
        self.grid.free()


def _check_declared(model, parallel, spec):
    """Under spatial or channel splits every layer of one's own (a leaf defined outside
    mpicnn) must say how it touches space and channels (``nn.module.declared``)."""
    spatial, channel = spec.blocks > 1, spec.channel > 1
    if not (spatial or channel):
        return
    for name, layer in _named_leaves(model):
        if type(layer).__module__.startswith("mpicnn."):
            continue
        kind = type(layer).__name__
        if not declared(layer.touches):
            raise UserError(f"--parallel {parallel} splits the feature maps, and layer {name} ({kind}) does "
                            f"not say how it touches them; declare it in the class: touches = 'pointwise', "
                            f"'spatial-reduction' (through self.spatial_sum/spatial_mean), "
                            f"'channel-reduction' or nn.Window(kernel, stride, padding, dilation) (through "
                            f"self.window_input/window_input_grad) (README, Your own layers)")


def _named_leaves(module, prefix=""):
    for name, child in module.named_children():
        if child.children():
            yield from _named_leaves(child, prefix + name + ".")
        else:
            yield prefix + name, child
