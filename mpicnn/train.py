"""``mpirun -n N python -m mpicnn.train``: config -> data -> model -> parallel plan -> loop.

``run(argv, comm)`` does the work and returns the trained model and its figures, so
tests can run the same code on COMM_SELF and on COMM_WORLD and compare parameters;
``main`` adds the process-level rules: one error line and exit status 2 on bad input,
an aborted job (never a hang) on an unexpected exception.
"""
import gc
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from . import backend, blas, data, models
from .config import parse_args
from .errors import UserError
from .faults import FaultPlan
from .straggler import Straggler
from .io.checkpoint import (checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints,
                            save_checkpoint)
from .io.metrics import MetricsLog
from .nn import CrossEntropyLoss, init
from .nn.optim import OPTIMIZERS
from .nn.schedule import make_schedule
from .parallel import batch_plan
from .parallel.balance import Balancer
from .parallel.blocks import block_range
from .parallel.channel import ChannelComm, gather_full, local_block, plan_model, shard_model
from .parallel.spatial import make_context
from .parallel.device_buffers import MPIBuffer
from .parallel.failure import agree, install_abort_hook
from .parallel.gradsync import GradientBuckets
from .parallel.grid import ProcessGrid
from .parallel.spec import parse_parallel
from .signals import STOP_SIGNALS, StopRequest


@dataclass
class RunResult:
    model: object
    step: int
    summary: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # name -> global-layout parameter (channel shards gathered)


class Trainer:
    def __init__(self, args, comm, stop=None):
        self.args, self.comm = args, comm
        self.rank = comm.Get_rank()
        self.dtype = np.dtype(args.dtype)
        self.stop = stop or StopRequest()
        with agree(comm):
            self.spec = parse_parallel(args.parallel, comm.Get_size())
            self.faults = FaultPlan(self.rank)
            self.straggler = Straggler(self.rank, comm.Get_size())
        self.grid = ProcessGrid(comm, self.spec)
        # Ranks holding each sample's loss: the spatial and channel blocks of one sample
        # (pipeline stages other than the last report none).
        self.loss_copies = comm.Get_size() // (self.spec.data * self.spec.pipeline)
        self.balancer = None
        if args.balance == "dynamic" and self.spec.data == 1:
            self.print0("mpicnn: --balance dynamic has a single data rank to feed: nothing to balance")
        elif args.balance == "dynamic":
            self.balancer = Balancer(comm, self.grid.data_rank, self.spec.data, args.balance_every)
        self.context = make_context(self.grid, args.sync_bn)
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.node_rank = node.Get_rank()
        node.Free()
        self._open_data()
        self._build_model()
        self.start_step = 0
        self._order, self._order_epoch = None, None  # the sample order of the current epoch
        self.new_parameters = []
        self.shards = {}  # parameter/buffer name -> Shard(sizes, axis) of its channel split, when channel > 1
        self._restore()
        backend.to_backend(self.model, self.optimizer)  # a no-op unless the arrays live on a GPU
        self.buckets = self._gradient_buckets()
        self.criterion = CrossEntropyLoss()

    # ---- setup -------------------------------------------------------------------
    def _open_data(self):
        args, comm = self.args, self.comm
        with agree(comm):
            if self.node_rank == 0:
                data.prepare(args.dataset)  # built-ins are generated once per node
        with agree(comm):
            self.train_set = data.open_dataset(args.dataset, "train")
            self.test_set = data.open_dataset(args.dataset, "test") if data.has_split(args.dataset, "test") else None
            n, b, d, m = self.train_set.num_samples, args.batch_size, self.spec.data, args.micro_batches
            if b < d * m:
                per = f" times {m} micro-batches" if m > 1 else ""
                ranks = f"{d} data-parallel ranks" if d > 1 else "1 data-parallel rank"
                raise UserError(f"--batch-size {b} is smaller than the {ranks}{per}; "
                                f"use a batch of at least {d * m}")
            if b > n:
                raise UserError(f"--batch-size {b} is larger than the {n} training samples of {args.dataset}")
            self.block = self._spatial_block(self.train_set.shape[1:])
        self.steps_per_epoch = data.steps_per_epoch(self.train_set.num_samples, args.batch_size)
        self.total_steps = args.steps or args.epochs * self.steps_per_epoch

    def _spatial_block(self, image_hw):
        """Rows and columns of every image this rank reads: all of them unless the grid
        splits height/width (then its balanced block; DESIGN.md, data locality)."""
        P, Q = self.spec.spatial
        if (P, Q) == (1, 1):
            return {}
        H, W = image_hw
        if H < P or W < Q:
            raise UserError(f"--parallel spatial={P}x{Q} cuts {H}x{W} images into empty blocks; "
                            f"use at most {H}x{W} blocks")
        r, c = self.grid.spatial_coords
        return {"rows": block_range(H, P, r), "cols": block_range(W, Q, c)}

    def _build_model(self):
        args, ds = self.args, self.train_set
        init.manual_seed(args.seed)
        options = {"width": args.width} if args.width else {}
        with agree(self.comm):
            try:
                self.model = models.get(args.model, ds.shape[0], ds.num_classes, dtype=self.dtype,
                                        image_size=ds.shape[1:], **options)
            except (ValueError, TypeError) as e:
                raise UserError(f"--model {args.model}: {e}")
        first = next(m for m in self.model.modules() if m.parameters() and not m.children())
        if hasattr(first, "needs_input_grad"):
            first.needs_input_grad = False  # nobody uses the gradient of the images
        self.model.set_context(self.context)
        if self.context.spatial:
            self.context.name_layers(self.model)
            with agree(self.comm):
                flat = [m for m in self.model.modules() if type(m).__name__ == "Flatten"]
                if flat:
                    raise UserError(f"--model {args.model} flattens its feature maps (Flatten), which "
                                    f"--parallel spatial=... does not support; use a model with global "
                                    f"pooling (convnet, resnet8, resnet20, vgg11) or --parallel data=N")

    def _restore(self):
        args = self.args
        path = args.resume
        if path == "latest":
            path = latest_checkpoint(args.checkpoint_dir)
            if path is None:
                self.print0(f"mpicnn: no checkpoint in {args.checkpoint_dir!r} yet; starting from step 0")
        with agree(self.comm):
            ckpt = load_checkpoint(path) if path else None
            fresh = load_checkpoint(args.init_from) if args.init_from and ckpt is None else None
            if ckpt is not None:
                self._load_state(ckpt)
            if fresh is not None:
                self._init_from(fresh)
            if args.freeze:
                self._freeze(args.freeze)
            self._shard()
        self.optimizer = self._make_optimizer()
        if ckpt is not None:
            self.optimizer.load_state_dict(self._local_optimizer_state(ckpt.optimizer))
            self.start_step = ckpt.step
            self.print0(f"mpicnn: resumed from {path} at step {ckpt.step}")
            if ckpt.step >= self.total_steps:
                self.print0(f"mpicnn: the run ends at step {self.total_steps} (--steps/--epochs): nothing left "
                            f"to train; raise --steps or --epochs to continue")

    def _shard(self):
        """Under channel=C, cut the full (initialised or loaded) model into this rank's
        filter and feature blocks. Every rank holds the same full model first, so a
        checkpoint written on any grid loads here by slicing."""
        if self.spec.channel == 1:
            return
        self.channel = ChannelComm(self.grid.channel)
        try:
            plans = plan_model(self.model, self.args.channel_split)
            self.shards = shard_model(self.model, self.channel, split=self.args.channel_split)
        except ValueError as e:
            raise UserError(f"--model {self.args.model} under --parallel {self.args.parallel}: {e}")
        self.print0("\n".join(f"mpicnn: channel plan {n}: {p}" for n, p in plans.items()))
        if self.context.spatial:
            self.context.name_layers(self.model)  # the sharded layers are new objects

    def _local_optimizer_state(self, saved):
        """A global optimizer state from a checkpoint -> this rank's blocks of it."""
        if not self.shards:
            return saved
        rank = self.grid.channel.Get_rank()
        params = {}
        for name, arrays in saved["params"].items():
            shard = self.shards.get(name)
            params[name] = {s: (local_block(v, shard, rank) if shard else v) for s, v in arrays.items()}
        return {**saved, "params": params}

    def _global(self, name, array):
        """``array`` (a parameter, its optimizer state or a buffer) in the global layout, on host."""
        host = backend.to_host(array)
        shard = self.shards.get(name)
        return gather_full(self.channel, host, shard) if shard else host

    def _load_state(self, ckpt):
        state = {**ckpt.params, **ckpt.buffers}
        try:
            self.model.load_state_dict(state)
        except (KeyError, ValueError) as e:
            saved = {k: v for k, v in ckpt.config.items() if k in ("model", "width", "dataset")}
            ours = {k: getattr(self.args, k) for k in saved}
            if saved != ours:  # the usual cause: a resume without the first run's options
                what = " ".join(f"--{k} {v}" for k, v in saved.items() if v is not None)
                raise UserError(f"checkpoint {ckpt.path!r} was written with {what}; resume with the same "
                                f"options (or --init-from to start a new run from its weights)")
            detail = str(e) if len(str(e)) < 300 else str(e)[:300] + " ..."
            raise UserError(f"checkpoint {ckpt.path!r} does not match --model {self.args.model} ({detail}); "
                            "use --init-from to start a new run from different weights")

    def _init_from(self, ckpt):
        loaded, fresh = [], []
        for name, p in self.model.named_parameters():
            saved = ckpt.params.get(name)
            if saved is not None and saved.shape == p.data.shape:
                p.data[...] = saved
                loaded.append(name)
            else:
                fresh.append(name)
        for name, buf in self.model.named_buffers():
            saved = ckpt.buffers.get(name)
            if saved is not None and np.shape(saved) == buf.shape and name.rsplit(".", 1)[0] + ".weight" in loaded:
                buf[...] = saved
        if not loaded:
            raise UserError(f"--init-from {ckpt.path!r}: no parameter matches --model {self.args.model} "
                            "by name and shape")
        self.new_parameters = fresh
        self.print0(f"mpicnn: initialised {len(loaded)} tensors from {ckpt.path}; "
                    f"new: {', '.join(fresh) if fresh else 'none'}")

    def _freeze(self, spec):
        prefixes = [p.strip() for p in spec.split(",") if p.strip()]
        names = [n for n, _ in self.model.named_parameters()]
        for prefix in prefixes:
            if not any(n.startswith(prefix) for n in names):
                raise UserError(f"--freeze {prefix!r} matches no parameter; names look like "
                                f"{', '.join(names[:4])} ...")
        for name, p in self.model.named_parameters():
            if any(name.startswith(prefix) for prefix in prefixes):
                p.requires_grad = False

    def _gradient_buckets(self):
        return GradientBuckets(self.model, self.grid.replicas, int(self.args.bucket_mb * 2 ** 20))

    def _optimized_parameters(self):
        """(name, Parameter) pairs this rank's optimizer updates and keeps state for."""
        return self.model.named_parameters()

    def _make_optimizer(self):
        a = self.args
        params = self._optimized_parameters()
        scale = {name: a.new_lr_scale for name in self.new_parameters}
        if a.optimizer == "sgd":
            return OPTIMIZERS["sgd"](params, a.lr, momentum=a.momentum, nesterov=a.nesterov,
                                     weight_decay=a.weight_decay, lr_scale=scale)
        return OPTIMIZERS[a.optimizer](params, a.lr, weight_decay=a.weight_decay, lr_scale=scale)

    # ---- helpers -----------------------------------------------------------------
    def print0(self, *text):
        if self.rank == 0:
            print(*text, flush=True)

    def sync_buffers(self):
        """Give every data rank rank 0's BatchNorm running statistics (as DDP does), so
        evaluation and checkpoints see one model."""
        if self.spec.data > 1 and not self.args.sync_bn:
            for _, buf in self.model.named_buffers():
                staged = MPIBuffer(buf.reshape(-1) if buf.ndim else buf.reshape(1))
                staged.before()
                self.grid.data.Bcast(staged.buf, root=0)
                staged.after()

    def read_batch(self, dataset, indices):
        """Images (NCHW, this rank's rows and columns) and labels of ``indices``."""
        return dataset.read(indices, dtype=self.dtype, **self.block)

    def evaluate(self, dataset):
        """Test accuracy and mean loss; the test set is split over the data ranks."""
        self.sync_buffers()
        self.model.eval()
        lo, hi = block_range(dataset.num_samples, self.spec.data, self.grid.data_rank)
        totals = np.zeros(2)
        for s in range(lo, hi, self.args.eval_batch_size):
            idx = np.arange(s, min(s + self.args.eval_batch_size, hi))
            x, y = dataset.read(idx, dtype=self.dtype, **self.block)
            logits = self.model.forward(backend.asarray(x))
            loss = self.criterion(logits, y)
            totals += (loss * len(idx), np.count_nonzero(backend.to_host(logits).argmax(1) == y))
        self.grid.data.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        self.model.train()
        return totals[1] / dataset.num_samples, totals[0] / dataset.num_samples

    def global_parameters(self):
        """name -> parameter in the global layout (host NumPy), on every rank: channel
        shards are gathered (a collective over the channel ranks when channel > 1)."""
        return {n: self._global(n, p.data) for n, p in self.model.named_parameters()}

    def global_state(self):
        """(parameters, buffers, optimizer state) in the global layout (host NumPy), on
        every rank; a collective where the model is split over ranks."""
        params = self.global_parameters()
        optimizer = dict(self.optimizer.state_dict())
        optimizer["params"] = {n: {k: self._global(n, v) for k, v in st.items()}
                               for n, st in optimizer["params"].items()}
        return params, {n: self._global(n, b) for n, b in self.model.named_buffers()}, optimizer

    def save(self, path, step):
        self.sync_buffers()
        # Gather the model's parts first: every rank takes part, only rank 0 writes.
        params, buffers, optimizer = self.global_state()
        with agree(self.comm):
            if self.rank == 0:
                try:
                    save_checkpoint(path, params, buffers, optimizer,
                                    step=step, epoch=step // self.steps_per_epoch, seed=self.args.seed,
                                    rng_state=self._rng_state(step), config=vars(self.args))
                except OSError as e:
                    raise UserError(f"cannot write checkpoint {path!r}: {e}")

    def _rng_state(self, step):
        """Every random stream is counter-based, so (seed, step) is the whole state."""
        return {"seed": self.args.seed, "step": step,
                "data_order": "numpy default_rng([seed, epoch]).permutation(N)",
                "dropout": "splitmix64 hash of (layer seed, step, global sample, element)"}

    # ---- the loop ----------------------------------------------------------------
    def pieces(self):
        """This rank's (lo, hi) of the global batch per micro-batch (batch_plan)."""
        shares = self.balancer.shares if self.balancer else None
        return batch_plan.pieces(self.args.batch_size, self.args.micro_batches, self.spec.data,
                                 self.grid.data_rank, shares)

    def next_batch(self, step):
        """(images, labels, pieces) of this rank for global step ``step``: its pieces of
        the step's batch in the epoch's global sample order, images on the backend."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._order_epoch != epoch:
            self._order = data.epoch_order(self.train_set.num_samples, self.args.seed, epoch)
            self._order_epoch = epoch
        pieces = self.pieces()
        batch = data.batch_indices(self._order, k, self.args.batch_size)
        x, y = self.read_batch(self.train_set, np.concatenate([batch[lo:hi] for lo, hi in pieces]))
        return backend.asarray(x), y, pieces

    def compute(self, step, x, y, pieces):
        """Forward and backward of this rank's piece of every micro-batch; parameter
        gradients accumulate, and only the last micro-batch launches their reduction.
        Each piece's loss gradient is weighted by its share of the global batch (and
        1/S for the S spatial blocks that each hold the replicated head).
        Returns (loss sum, correct, seconds of compute excluding communication waits)."""
        B, seam = self.args.batch_size, self.context.grad_seam
        t0, comm0 = time.perf_counter(), self.buckets.comm_seconds
        loss_sum = correct = 0.0
        offset = 0
        for m, (lo, hi) in enumerate(pieces):
            n = hi - lo
            xs, ys = x[offset:offset + n], y[offset:offset + n]
            offset += n
            self.buckets.begin(reduce=m == len(pieces) - 1)
            if n == 0:
                continue
            self.context.sample_offset = lo
            logits = self.model.forward(xs)
            loss = self.criterion(logits, ys)
            self.model.backward(self.criterion.backward() * self.dtype.type(n / B / seam))
            loss_sum += loss * n
            correct += np.count_nonzero(backend.to_host(logits).argmax(1) == ys)
        seconds = time.perf_counter() - t0 - (self.buckets.comm_seconds - comm0)
        seconds += self.straggler.after(seconds)
        return loss_sum, correct, seconds

    def train_step(self, step, x, y, pieces):
        """Compute, gradient sum, then ONE allreduce over all ranks of the step's figures:
        loss sum, correct, non-finite flags, and a count per stop signal. Every rank
        acts on the same reduced figures, so stops and skips happen at the same step
        everywhere. Returns ([loss sum, correct, non-finite, stop signal or 0],
        seconds of the figures' allreduce, seconds of compute)."""
        faults = self.faults.fire(step)
        if "nan" in faults:
            x[...] = np.nan
        if "term" in faults:
            self.stop.request()
        self.context.step = step
        loss_sum, correct, seconds = self.compute(step, x, y, pieces)
        self.buckets.finish()
        t0 = time.perf_counter()
        finite = np.isfinite(loss_sum) and self.buckets.all_finite()
        figures = np.array([loss_sum, correct, not finite]
                           + [self.stop.signal == sig for sig in STOP_SIGNALS], dtype=np.float64)
        self.exchange(step, figures)
        # Ranks that split one sample's maps (spatial or channel blocks) all hold its loss:
        # count it once.
        figures[:2] /= self.loss_copies
        signum = next((sig for sig, n in zip(STOP_SIGNALS, figures[3:]) if n), 0)
        return np.array([figures[0], figures[1], figures[2], signum]), time.perf_counter() - t0, seconds

    def exchange(self, step, figures):
        """Sum the step's figures over all ranks, in place: the one sync point per step."""
        self.grid.world.Allreduce(MPI.IN_PLACE, figures, op=MPI.SUM)

    def evaluation_due(self, done):
        """Evaluate after ``done`` steps: every --eval-every steps, else at each epoch's end."""
        every = self.args.eval_every or self.steps_per_epoch
        return self.test_set is not None and done % every == 0

    def apply_update(self, lr):
        self.optimizer.lr = lr
        self.optimizer.step()

    def fit(self):
        args = self.args
        B = args.batch_size
        schedule = make_schedule(args.schedule, args.lr, self.total_steps, args.warmup, args.step_size, args.gamma)
        metrics = MetricsLog(args.metrics if self.rank == 0 else None, append=self.start_step > 0)
        progress = self._progress()
        self.warmup_steps = warmup = min(5, max((self.total_steps - self.start_step) // 4, 0))
        timed = {"images": 0, "seconds": 0.0, "data": 0.0, "comm": 0.0}
        test_acc = test_loss = evaluated_at = stopped = None
        skipped = 0
        step = self.start_step
        self.model.train()
        # Objects made during setup live for the whole run: keep the collector from
        # rescanning them every few steps, a pause that lands on one rank at a time.
        gc.collect()
        gc.freeze()
        for step in range(self.start_step, self.total_steps):
            t0 = time.perf_counter()
            epoch = step // self.steps_per_epoch
            x, y, pieces = self.next_batch(step)
            t_data = time.perf_counter() - t0
            comm0 = self.buckets.comm_seconds
            stats, t_stats, t_compute = self.train_step(step, x, y, pieces)
            if self.balancer:
                self.balancer.record(sum(hi - lo for lo, hi in pieces), t_compute)
                self.balancer.update(step)
            lr = schedule(step)
            if stats[2]:
                if not args.skip_nonfinite:
                    raise nonfinite_error(step, epoch)
                skipped += 1
                self.print0(f"mpicnn: step {step}: non-finite loss or gradients, step skipped")
                metrics.write(step=step + 1, epoch=epoch, skipped=True)
            else:
                self.apply_update(lr)
            self.optimizer.zero_grad()
            elapsed = time.perf_counter() - t0
            if step - self.start_step >= warmup:
                timed["images"] += B
                timed["seconds"] += elapsed
                timed["data"] += t_data
                timed["comm"] += self.buckets.comm_seconds - comm0 + t_stats
            done = step + 1
            ips = timed["images"] / timed["seconds"] if timed["seconds"] else B / elapsed
            global_loss, batch_acc = stats[0] / B, stats[1] / B
            progress.update(1)
            if not stats[2] and (done % args.log_every == 0 or done == self.total_steps):
                progress.set_postfix(loss=f"{global_loss:.4f}", acc=f"{batch_acc:.3f}", img_s=f"{ips:.0f}")
                metrics.write(step=done, epoch=epoch, loss=global_loss, accuracy=batch_acc, lr=lr,
                              images_per_sec=ips)
            step = done
            if stats[3]:
                stopped = signal.Signals(int(stats[3])).name
                break
            if self.evaluation_due(done):
                test_acc, test_loss = self.evaluate(self.test_set)
                evaluated_at = done
                metrics.write(step=done, epoch=epoch, test_accuracy=test_acc, test_loss=test_loss)
            if args.checkpoint_dir and args.checkpoint_every and done % args.checkpoint_every == 0:
                self._checkpoint(done)
        progress.close()
        peak_kb = _peak_rss_kb()  # before evaluation, whose batches may be larger
        halo = {k: dict(v) for k, v in getattr(self.context, "stats", {}).items()}  # training steps only
        if stopped:
            return self._stop(step, stopped, metrics)
        if args.checkpoint_dir and (not args.checkpoint_every or step % args.checkpoint_every):
            self._checkpoint(step)
        if args.save:
            self.save(args.save, step)
        if self.test_set is not None and evaluated_at != step:
            test_acc, test_loss = self.evaluate(self.test_set)
        summary = self._summary(step, timed, test_acc, test_loss)
        summary["skipped_steps"] = skipped
        # Peak resident memory of the training loop, the largest over ranks (MiB).
        summary["peak_rss_mb"] = self.comm.allreduce(peak_kb, op=MPI.MAX) / 1024
        if halo:
            summary["halo"] = halo
        if self.balancer and self.balancer.history:
            summary["balance"] = self.balancer.history[-1][1]  # each data rank's share of a batch
            self.print0("mpicnn: dynamic balance: data ranks take " + ", ".join(
                f"{100 * s:.0f}%" for s in summary["balance"]) + " of each batch")  # this rank's halo bytes and waiting seconds per layer
        metrics.write(step=step, final=True, **summary)
        metrics.close()
        return summary

    def _stop(self, step, signame, metrics):
        """A stop was requested: checkpoint the finished step and leave, skipping evaluation."""
        if self.args.checkpoint_dir:
            self._checkpoint(step)
            where = f"checkpoint {checkpoint_path(self.args.checkpoint_dir, step)} written; continue with --resume"
        else:
            where = "no --checkpoint-dir, nothing saved"
        self.print0(f"mpicnn: stopped by {signame} after step {step}; {where}")
        metrics.write(step=step, stopped=signame)
        metrics.close()
        return {"steps": step, "stopped": signame}

    def _checkpoint(self, step):
        path = checkpoint_path(self.args.checkpoint_dir, step)
        self.save(path, step)
        if self.rank == 0:
            prune_checkpoints(self.args.checkpoint_dir, self.args.keep_checkpoints)

    def _progress(self):
        from tqdm import tqdm
        return tqdm(total=self.total_steps, initial=self.start_step, unit="step", dynamic_ncols=True,
                    disable=self.args.no_progress or self.rank != 0, file=sys.stderr, mininterval=0.5)

    def _summary(self, step, timed, test_acc, test_loss):
        secs = timed["seconds"]
        summary = {"steps": step, "images_per_sec": timed["images"] / secs if secs else None,
                   "compute_seconds": secs - timed["comm"] - timed["data"], "comm_seconds": timed["comm"],
                   "data_seconds": timed["data"], "test_accuracy": test_acc, "test_loss": test_loss}
        if self.rank == 0:
            a = self.args
            lines = [f"mpicnn: {a.model} on {a.dataset}, {self.spec.size} rank(s) ({self.spec}), "
                     f"{step} steps, global batch {a.batch_size}, {a.dtype}"]
            if test_acc is not None:
                lines.append(f"test accuracy {100 * test_acc:.2f}%  test loss {test_loss:.4f}")
            if secs:
                lines.append(f"{summary['images_per_sec']:.0f} images/s after warm-up; time in compute "
                             f"{summary['compute_seconds']:.1f} s, communication {timed['comm']:.1f} s, "
                             f"data {timed['data']:.1f} s")
            print("\n".join(lines), flush=True)
        return summary

    def close(self):
        for ds in (self.train_set, self.test_set):
            if ds is not None:
                ds.close()
        self.grid.free()


def nonfinite_error(step, epoch):
    """The error of a step whose loss or gradients are not finite. Every rank raises it
    together (the flag was summed over ranks), so it is marked agreed."""
    error = UserError(f"the loss or gradients are not finite at step {step} (epoch {epoch}); "
                      "lower --lr, check the data for bad values, or pass --skip-nonfinite")
    error.agreed = True
    return error


def _peak_rss_kb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def make_trainer(args, comm, stop):
    """The trainer for this rank's role: a pipeline stage, a parameter server or one of
    its workers, or the Trainer of the data/spatial/channel grid."""
    with agree(comm):
        spec = parse_parallel(args.parallel, comm.Get_size())
        # A staleness bound without servers would be silently ignored: say so instead.
        if args.staleness and not spec.ps:
            raise UserError(f"--staleness {args.staleness} bounds parameter-server workers; add "
                            f"--parallel ps=K (or drop --staleness)")
    if spec.ps:
        from .parallel.ps import parameter_server_role
        return parameter_server_role(args, comm, stop, spec)
    if spec.pipeline > 1:
        from .parallel.pipeline import PipelineTrainer
        return PipelineTrainer(args, comm, stop)
    return Trainer(args, comm, stop)


def run(argv=None, comm=MPI.COMM_WORLD):
    """Train as the command line says, on ``comm``; return the model and the summary."""
    with agree(comm):
        args = parse_args(argv)
    previous = backend.current()
    with agree(comm):
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, ranks_on_node = node.Get_rank(), node.Get_size()
        node.Free()
        threads = blas.threads_per_rank(ranks_on_node)
        if threads:
            blas.set_threads(threads)  # ranks sharing cores must not each spin a thread per core
        try:
            backend.use(args.backend, local_rank=local_rank)  # each rank takes GPU local_rank % count
        except (RuntimeError, ValueError) as e:
            raise UserError(f"--backend {args.backend}: {e}")
    stop = StopRequest().install()
    try:
        trainer = make_trainer(args, comm, stop)
        try:
            summary = trainer.fit()
            params = trainer.global_parameters()
        finally:
            trainer.close()
    finally:
        stop.uninstall()
        backend.use(previous)
        gc.unfreeze()  # fit() froze setup objects; a long-lived process may collect this run
    return RunResult(trainer.model, summary["steps"], summary, params)


def main(argv=None):
    comm = MPI.COMM_WORLD
    install_abort_hook(comm)
    try:
        run(argv, comm)
    except UserError as e:
        agreed = getattr(e, "agreed", False)
        if comm.Get_rank() == 0 or not agreed:
            print(f"mpicnn: error: {e}", file=sys.stderr, flush=True)
        if not agreed and comm.Get_size() > 1:
            comm.Abort(2)  # only this rank knows: take the others down rather than hang
        sys.exit(2)


if __name__ == "__main__":
    main()
