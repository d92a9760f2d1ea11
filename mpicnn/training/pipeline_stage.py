"""A pipeline stage, ``--parallel pipeline=S`` (with ``data=D``): the model's top-level
layers cut into S contiguous stages, one per rank of ``grid.pipeline`` (rank = stage).

Layout. Every rank builds the whole model with ``nn.init.deferred()``: the random
draws advance the generator as in a 1-rank run, but parameters are placeholders that
hold no memory. After the cut a stage materializes only its own layers (the same
numbers, redrawn), then restores checkpoints and applies ``--init-from``/``--freeze``
to them, checked against the whole model's names and shapes; so no rank ever holds
more than its stage (plus one layer at a time while profiling), and a model too large
for one rank can be pipelined. Parameter names stay those of the whole model
("7.weight"), and the global state merges the stages, so checkpoints are in the global
layout: a pipeline run resumes on one rank and a one-rank run resumes on a pipeline.

Balance. Before training every rank times each layer's forward and backward on one
micro-batch (the fastest of a few repeats, one layer materialized at a time) and the ranks average the figures, so all
choose the same cut: the one whose slowest stage is fastest, not equal layer counts
(``stage_balance.partition``; cuts within 5% of it tie, and the one whose largest stage
holds the fewest parameter and activation bytes wins).

Schedules (``parallel.pipeline.schedule``). The global batch is cut into M
micro-batches as without a pipeline (``batch_plan``; each data rank takes its piece of
every micro-batch). ``gpipe`` runs all M forwards, then all M backwards; ``1f1b`` runs
S-1-s forwards on stage s, then alternates one forward and one backward, then drains
the backwards, so at most S - s micro-batches are in flight. Activations travel forward
and their gradients back as nonblocking point-to-point messages (``parallel.pipeline.Link``),
contiguous, in the Sequential's internal layout (NHWC for feature maps, (N, F) once
flattened), into fresh buffers sized from the plan (a layer may keep its input for
backward); a message of another size is an error. The first stage reads images, the
last reads labels and computes the loss. Parameter gradients accumulate over the
micro-batches and are summed over the stage's data replicas after the last backward only.

Layers keep what backward needs in ``_``-prefixed attributes; with several
micro-batches in flight a stage saves those attributes of every module after each
forward and puts them back before that micro-batch's backward.

Figures. The run summary's ``pipeline`` entry (also in the final metrics record) holds
the cut (each stage's [first, end) layer range), each stage's predicted and measured
busy milliseconds per step (forward and backward compute, not waits), and the bubble
1 - busy/wall of each stage, where wall sums over the timed steps the longest span from
the start of a stage's compute to its last action; beside it the ideal (S-1)/(M+S-1)
of equal stages.

BatchNorm statistics are those of each micro-batch (of each data rank's piece of it),
as in a 1-rank run with the same ``--micro-batches``: that run, not the run without
micro-batches, is the one a pipeline run equals.
"""
import time

import numpy as np

from .. import backend
from ..errors import UserError
from ..nn import Sequential
from ..nn.module import convert
from ..parallel.collectives import gather_objects, max_in_place, sum_in_place
from ..parallel.failure import agree
from ..parallel.pipeline import Link, Stage
from ..parallel.pipeline_schedule import schedule
from ..parallel.stage_balance import partition
from .grid_rank import GridRank
from .layer_profile import profile_layers

class PipelineStage(GridRank):
    def __init__(self, args, comm, stop):
        super().__init__(args, comm, stop)
        self.state.merge = self._merge
        self.plan = schedule(args.pipeline_schedule, self.spec.pipeline, self.grid.stage, args.micro_batches)
        self.layers = list(self.model.modules())  # whose forward state is saved per micro-batch
        self.spans, self.busy = [], 0.0  # per timed step: seconds from compute start to last action; busy total

    # ---- setup: cut the whole model into stages ------------------------------------
    defer_init = True  # the whole model is built as placeholders; only this stage's layers get memory

    def shape(self, model):
        """Cut the whole model at measured layer costs; materialize and keep this stage's layers."""
        S, stage, args = self.spec.pipeline, self.grid.stage, self.args
        with agree(self.comm):
            if not isinstance(model, Sequential):
                raise UserError(f"--parallel pipeline={S} cuts a Sequential into stages; --model {args.model} "
                                f"is a {type(model).__name__}")
            layers = list(model.named_children())
            if S > len(layers):
                raise UserError(f"--parallel pipeline={S} needs at least {S} layers, --model {args.model} "
                                f"has {len(layers)}; use at most pipeline={len(layers)}")
        n = max(hi - lo for lo, hi in self.batches.pieces())
        x, y = self.train_set.read(np.arange(n), dtype=self.dtype)
        seconds, nbytes, outputs = profile_layers(model, x, y, self.comm)
        self.bounds = partition(seconds, nbytes, S)
        self.predicted = [float(sum(seconds[lo:hi])) for lo, hi in self.bounds]
        self.say(f"mpicnn: pipeline of {S} stages ({args.pipeline_schedule}, {args.micro_batches} "
                 f"micro-batches), cut at measured layer times:\n" + "\n".join(
                     f"  stage {s}: layers {lo}-{hi - 1} ({type(layers[lo][1]).__name__} .. "
                     f"{type(layers[hi - 1][1]).__name__}), predicted {1e3 * t:.2f} ms per micro-batch"
                     for s, ((lo, hi), t) in enumerate(zip(self.bounds, self.predicted))))
        lo, hi = self.bounds[stage]
        mine = Stage(layers[lo:hi]).materialize()
        for _, layer in layers[:lo] + layers[hi:]:
            layer.forget()  # never materialized here: their draws are another stage's
        if stage > 0:  # only stage 0 may skip its input gradient; later stages send it back
            for m in mine.modules():
                if hasattr(m, "needs_input_grad"):
                    m.needs_input_grad = True
        self.first, self.last = stage == 0, stage == S - 1
        comm = self.grid.pipeline
        # What arrives: the previous stage's output, and the gradient of our own output.
        self.prev = None if self.first else Link(comm, stage - 1, *outputs[lo - 1])
        self.next = None if self.last else Link(comm, stage + 1, *outputs[hi - 1])
        return mine

    def _merge(self, local):
        """Every stage's ``{name: value}`` merged, on every rank, in stage (= model) order."""
        merged = {}
        for part in gather_objects(self.grid.pipeline, local):
            merged.update(part)
        return merged

    # ---- one training step -----------------------------------------------------------
    def read_batch(self, dataset, indices):
        # The first stage needs the images, the last the labels, a middle stage neither.
        # Later stages get a one-element stand-in for the images: a nan fault (the step
        # sets the images to NaN) reaches their input through it.
        if self.first:
            return self.batches.read(dataset, indices)
        return np.zeros(1, self.dtype), (dataset.labels[indices] if self.last else None)

    def _snapshot(self):
        """What every layer keeps from its forward for its backward (``_`` attributes)."""
        return [{k: v for k, v in vars(m).items() if k.startswith("_")} for m in self.layers]

    def _resume(self, snapshot):
        for m, state in zip(self.layers, snapshot):
            vars(m).update(state)

    def _compute_seconds(self, t0, comm0):
        """Compute since ``t0`` (gradient bucket launches excluded), stretched by the
        straggler switch."""
        backend.synchronize()
        seconds = time.perf_counter() - t0 - (self.buckets.comm_seconds - comm0)
        return seconds + self.straggler.after(seconds)

    def compute(self, x, y, pieces):
        """This stage's forwards and backwards of every micro-batch in schedule order.
        Returns (loss sum, correct, busy seconds); loss and correct from the last stage only."""
        B, M, clock = self.args.batch_size, len(pieces), self.clock
        sizes = [hi - lo for lo, hi in pieces]
        offsets = np.cumsum([0] + sizes)  # of each micro-batch in this rank's x and y
        links = [link for link in (self.prev, self.next) if link]
        poisoned = not self.first and bool(backend.array_module(x).isnan(x).any())  # see read_batch
        t_start = time.perf_counter()
        loss_sum = correct = busy = 0.0
        held = {}  # micro-batch -> (layer state after its forward, gradient of the loss when last)
        for link in links:
            link.post(0, sizes[0])
        for kind, m in self.plan:
            a, b = offsets[m], offsets[m + 1]
            if kind == "F":
                if self.first:
                    h = convert(x[a:b], "NCHW", self.model.layout)
                else:
                    h = self.prev.take(m)
                    if m + 1 < M:
                        self.prev.post(m + 1, sizes[m + 1])
                    if poisoned:
                        h[...] = np.nan
                t0, comm0 = time.perf_counter(), self.buckets.comm_seconds
                self.context.sample_offset = pieces[m][0]
                with clock.phase("forward"):
                    out = self.model._forward(h)
                    grad = None
                    if self.last:
                        loss = self.criterion(out, y[a:b])
                        grad = self.criterion.backward() * self.dtype.type(sizes[m] / B)
                        loss_sum += loss * sizes[m]
                        correct += self.criterion.correct
                    held[m] = (self._snapshot(), grad)
                busy += self._compute_seconds(t0, comm0)
                if not self.last:
                    self.next.send(out, m)
            else:
                state, grad = held.pop(m)
                if not self.last:
                    grad = self.next.take(m)
                    if m + 1 < M:
                        self.next.post(m + 1, sizes[m + 1])
                t0, comm0 = time.perf_counter(), self.buckets.comm_seconds
                with clock.phase("backward"):
                    self._resume(state)
                    self.buckets.begin(reduce=m == M - 1)  # the summation starts in the last backward
                    dx = self.model._backward(grad)
                busy += self._compute_seconds(t0, comm0)
                if not self.first:
                    self.prev.send(dx, m)
            for link in links:
                link.poke()
        span = time.perf_counter() - t_start
        for link in links:
            link.finish()
        if clock.step - self.start_step >= self.figures.warmup:  # the steps the loop times
            self.spans.append(span)
            self.busy += busy
        return loss_sum, correct, busy

    # ---- evaluation, summary ------------------------------------------------------------
    def evaluate(self, done, dataset=None):
        """Accuracy and mean loss of ``dataset`` (default: the test set) on every rank: it
        is split over the data ranks and its batches flow through the stages (forward only)."""
        self.sync_buffers()
        self.model.eval()
        dataset = self.test_set if dataset is None else dataset
        lo, hi = self.batches.eval_range(dataset)
        size = self.args.eval_batch_size
        batches = [np.arange(s, min(s + size, hi)) for s in range(lo, hi, size)]
        totals = np.zeros(2)
        if self.prev and batches:
            self.prev.post(0, len(batches[0]))
        for k, idx in enumerate(batches):
            if self.first:
                h = convert(backend.asarray(self.read_batch(dataset, idx)[0]), "NCHW", self.model.layout)
            else:
                h = self.prev.take(k)
                if k + 1 < len(batches):
                    self.prev.post(k + 1, len(batches[k + 1]))
            out = self.model._forward(h)
            if self.last:
                y = dataset.labels[idx]
                loss = self.criterion(out, y)
                totals += (loss * len(idx), self.criterion.correct)
            else:
                self.next.finish()  # one batch in flight: the test set may be large
                self.next.send(out, k)
        if self.next:
            self.next.finish()
        sum_in_place(self.comm, totals)  # only last-stage ranks hold figures
        self.model.train()
        return totals[1] / dataset.num_samples, totals[0] / dataset.num_samples

    def summary_extras(self, summary):
        S, M = self.spec.pipeline, self.args.micro_batches
        busy = np.zeros(S)
        busy[self.grid.stage] = self.busy
        sum_in_place(self.comm, busy)
        busy /= self.spec.data  # mean over a stage's data replicas
        # A step's pipeline lasts as long as its slowest stage's span.
        spans = max_in_place(self.comm, np.array(self.spans))
        steps, wall = len(spans), float(spans.sum())
        bubble = (1.0 - busy / wall).tolist() if wall else None
        figures = {"schedule": self.args.pipeline_schedule, "micro_batches": M,
                   "layers": [list(b) for b in self.bounds],
                   "predicted_ms_per_step": [1e3 * M * t for t in self.predicted],
                   "busy_ms_per_step": (1e3 * busy / steps).tolist() if steps else None,
                   "bubble": bubble, "bubble_mean": float(np.mean(bubble)) if bubble else None,
                   "bubble_ideal": (S - 1) / (M + S - 1)}
        summary["pipeline"] = figures
        if bubble:
            self.say("mpicnn: pipeline busy per step: " + ", ".join(
                f"stage {s} {ms:.1f} ms (predicted {p:.1f})" for s, (ms, p) in
                enumerate(zip(figures["busy_ms_per_step"], figures["predicted_ms_per_step"])))
                + f"; bubble {100 * figures['bubble_mean']:.0f}% (" + ", ".join(f"{100 * b:.0f}%" for b in bubble)
                + f" per stage), ideal {100 * figures['bubble_ideal']:.0f}% for {S} stages x {M} micro-batches")
