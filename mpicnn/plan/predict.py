"""Predict one layout's step time, memory per rank and traffic per rank from a Problem
and a Machine. Pure functions; the partition functions are the layouts' own
(``walk``: blocks, halo plans, channel plans; here: ``batch_plan.pieces`` for the batch
cut, ``stage_balance.partition`` for the stage cut, ``pipeline_schedule.schedule`` for
the order of a stage's work).

What the code does and the model follows:
- grid layouts (data/spatial/channel) run the micro-batches one after another; halo
  exchanges and channel collectives sit on the critical path (blocking in the layers);
- gradients are summed once per step in ``--bucket-mb`` buckets over the ranks that
  replicate each parameter (data x spatial); launched during backward, they overlap it
  only where the machine says MPI progresses meanwhile (``overlap_gradients``);
- a pipeline stage runs its schedule's forwards and backwards; a stage waits for its
  neighbour's activation (or gradient) plus the message; the bubble is what the
  schedule leaves idle on the slowest stage.
"""
from dataclasses import dataclass, field

from ..parallel.batch_plan import pieces
from ..parallel.pipeline_schedule import schedule
from ..parallel.spec import ParallelSpec
from ..parallel.stage_balance import partition
from .walk import walk

OPTIMIZER_STATE = {"adam": 2, "adamw": 2, "sgd": 1}  # state arrays per parameter (SGD: momentum)
RING_BYTES = {"allreduce": 2.0, "allgather": 1.0, "reduce_scatter": 1.0}  # x (P-1)/P x n per rank
# memory parts that are not arrays of their own (a label, views of the training step, a
# share of another part)
NOT_SUMMED = ("activations_phase", "training_activations", "train_cache", "allocator_slack",
              "training_allocator_slack", "baseline")
PAGE = 4096


@dataclass
class Layout:
    spec: ParallelSpec
    micro_batches: int = 1
    channel_split: str = "auto"

    @property
    def parallel(self):
        """The exact --parallel string."""
        s = self.spec
        if s.ps:
            return f"data={s.data},ps={s.ps}"
        parts = [f"data={s.data}"]
        if s.spatial != (1, 1):
            parts.append(f"spatial={s.spatial[0]}x{s.spatial[1]}")
        if s.channel > 1:
            parts.append(f"channel={s.channel}")
        if s.pipeline > 1:
            parts.append(f"pipeline={s.pipeline}")
        return ",".join(parts)

    @property
    def family(self):
        s = self.spec
        names = [n for n, on in (("spatial", s.spatial != (1, 1)), ("channel", s.channel > 1),
                                 ("pipeline", s.pipeline > 1), ("ps", s.ps > 0)) if on]
        if s.data > 1 or not names:
            names.insert(0, "data")
        return "+".join(names)

    def flags(self):
        out = [f"--parallel {self.parallel}"]
        if self.micro_batches > 1:
            out.append(f"--micro-batches {self.micro_batches}")
        if self.spec.channel > 1:
            out.append(f"--channel-split {self.channel_split}")
        return " ".join(out)


@dataclass
class Prediction:
    layout: Layout
    step_seconds: float = 0.0
    compute_seconds: float = 0.0
    comm_seconds: float = 0.0
    bubble_seconds: float = 0.0
    other_seconds: float = 0.0  # optimizer, data, loop
    memory_bytes: float = 0.0  # the peak: a training step or evaluation, whichever is larger
    array_bytes: float = 0.0
    bytes_per_step: float = 0.0
    fits: bool = True
    caveat: str = ""
    memory_parts: dict = field(default_factory=dict)
    stages: list = field(default_factory=list)

    samples_per_step: int = 0  # samples this rank reads per step (its pieces of every micro-batch)
    sample_bytes: int = 0  # stored bytes of one sample's block on this rank

    @property
    def training_memory_bytes(self):
        """Memory per rank of the training steps alone (what the trainer's summary reports
        as peak_rss_mb: it is taken before the final evaluation)."""
        parts = self.memory_parts
        return (self.memory_bytes - parts["activations"] - parts["allocator_slack"]
                + parts["training_activations"] + parts["training_allocator_slack"])

    def training_memory_after(self, steps, num_train):
        """Resident memory per rank after ``steps`` training steps, as ``peak_rss_mb``
        measures it: the data cache maps its pages lazily (``np.empty``), so it holds
        only the pages of the samples this rank read (a page of small samples is touched
        when any of them is), and the test split's none before the final evaluation."""
        parts = self.memory_parts
        cache = parts["train_cache"]
        if not cache:
            return self.training_memory_bytes - parts["data_cache"]
        read = min(1.0, steps * self.samples_per_step / num_train)  # each epoch is a permutation
        per_page = max(PAGE / max(self.sample_bytes, 1), 1.0)
        touched = 1.0 - (1.0 - read) ** per_page
        return self.training_memory_bytes - parts["data_cache"] + cache * touched

    def images_per_sec(self, batch):
        return batch / self.step_seconds if self.step_seconds else 0.0

    def record(self, batch):
        return {"parallel": self.layout.parallel, "micro_batches": self.layout.micro_batches,
                "channel_split": self.layout.channel_split if self.layout.spec.channel > 1 else None,
                "family": self.layout.family, "flags": self.layout.flags(),
                "step_seconds": self.step_seconds, "images_per_sec": self.images_per_sec(batch),
                "compute_seconds": self.compute_seconds, "comm_seconds": self.comm_seconds,
                "bubble_seconds": self.bubble_seconds, "other_seconds": self.other_seconds,
                "memory_per_rank_bytes": int(self.memory_bytes), "array_bytes": int(self.array_bytes),
                "training_memory_bytes": int(self.training_memory_bytes),
                "memory_parts": {k: v if isinstance(v, str) else int(v) for k, v in self.memory_parts.items()},
                "bytes_per_step": int(self.bytes_per_step), "fits": self.fits, "caveat": self.caveat,
                "stages": self.stages}


class Comms:
    """Which ranks each axis's communicator holds: (size, stride) in the grid's rank order
    (sample, depth, rows, columns, channel, stage; the last varies fastest)."""

    def __init__(self, spec, machine):
        S, C = spec.pipeline, spec.channel
        P, Q = spec.spatial
        self.m = machine
        self.axes = {"stage": (S, 1), "channel": (C, S), "columns": (Q, S * C), "rows": (P, S * C * Q),
                     "spatial": (P * Q, S * C), "replicas": (spec.data * P * Q, S * C),
                     "world": (spec.size, 1)}

    def seconds(self, op, nbytes, axis, extra=None):
        """Seconds of ``op`` on ``axis`` (``walk.Leaf.messages`` say what ``nbytes`` and
        ``extra`` are)."""
        size, stride = self.axes[axis]
        inter = size > 1 and stride * size > self.m.ranks_per_node
        if op.startswith("halo_"):
            # The layer's halo call, copies included: CPU work inside the layer, like
            # the channel calls below; without a measured fit, its messages alone.
            measured = None if inter or size <= 1 else self.m.halo_call(op[5:], nbytes)
            if measured is not None:
                return measured * self.m.compute_scale
            op, nbytes = "sendrecv", extra
        channels = extra
        if axis == "channel" and not inter:
            # The channel layers' calls, wrapper and copies included: CPU work inside the
            # layers, timed as the layer table is, so a step stretches them as it does the
            # layers (compute_scale).
            measured = self.m.channel_op(op, nbytes, size, channels)
            if measured is not None:
                return measured * self.m.compute_scale
        if op == "block":  # a local copy (read and write) of this rank's share, at a roofline's bandwidth
            bandwidth = self.m.compute.get("bandwidth")
            return 2.0 * nbytes / size / float(bandwidth) if bandwidth and size > 1 else 0.0
        if op == "sendrecv":
            return self.m.message(nbytes, inter) if size > 1 and nbytes else 0.0
        return self.m.collective(op, nbytes, size, inter)

    def traffic(self, op, nbytes, axis, extra=None):
        size = self.axes[axis][0]
        if op.startswith("halo_"):
            op, nbytes = "sendrecv", extra  # the halo call's messages
        if size <= 1 or op == "block":
            return 0.0
        return nbytes if op == "sendrecv" else RING_BYTES[op] * (size - 1) / size * nbytes


def _leaf_seconds(machine, leaf, dtype, itemsize):
    fwd, bwd, nodx = machine.layer_seconds(leaf.kind, leaf.config, leaf.size, _work(leaf), leaf.flops,
                                           (leaf.in_elems + leaf.out_elems) * itemsize, dtype)
    return fwd, (bwd if leaf.needs_dx else nodx)


def _work(leaf):
    from .measure import work_of
    return work_of(leaf.kind, leaf.config)


def _gradient_seconds(comms, machine, grad_bytes, bucket_bytes, axis, backward_seconds):
    """Exposed seconds of the bucketed gradient allreduce (and its bytes per rank)."""
    if comms.axes[axis][0] <= 1 or grad_bytes <= 0:
        return 0.0, 0.0
    full, rest = divmod(grad_bytes, bucket_bytes)
    sizes = [bucket_bytes] * int(full) + ([rest] if rest else [])
    times = [comms.seconds("allreduce", b, axis) for b in sizes]
    total = sum(times)
    if machine.overlap:  # buckets travel while backward computes: only what outlasts it shows
        total = max(times[-1], total - backward_seconds)
    return total, sum(comms.traffic("allreduce", b, axis) for b in sizes)


def _optimizer_seconds(machine, params, tensors, itemsize, optimizer):
    o = machine.optimizer
    scale = 1.0 if OPTIMIZER_STATE.get(optimizer, 2) == 2 else 0.5
    return scale * (o["per_tensor"] * tensors + o["per_byte"] * params * itemsize)


def _memory(problem, machine, leaves, in_flight, n_input, params, n, data_ranks):
    """(bytes per rank, bytes of arrays, parts). Activations peak either in a training
    step (``in_flight`` micro-batches of ``n`` samples kept for backward, plus the
    largest layer's transient buffers) or in evaluation (every layer keeps its input in
    eval mode too; a piece of --eval-batch-size over the data ranks), whichever is larger."""
    isz = problem.itemsize
    state = OPTIMIZER_STATE.get(problem.optimizer, 2)
    parts = {"parameters": params * isz, "gradients": params * isz, "optimizer_state": state * params * isz}
    saved = sum(l.saved for l in leaves) * isz
    transient = max((l.in_elems + l.out_elems + l.workspace) for l in leaves) * isz
    # Evaluation keeps every layer's input but no training-only copies; its transient
    # arrays half-counted (fitted to tracemalloc peaks of lenet5 and convnet runs).
    kept = saved - sum(l.copies for l in leaves) * isz
    flow = max((l.in_elems + l.out_elems) for l in leaves) * isz
    evaluated = -(-min(problem.eval_batch_size, max(problem.num_test, 1)) // data_ranks)
    train, evaluation = saved * in_flight + transient, (kept + flow / 2) * evaluated / n
    parts["activations"] = max(train, evaluation)
    parts["activations_phase"] = "training" if train >= evaluation else "evaluation"
    parts["training_activations"] = train
    blocks = [count * n_input * problem.stored_itemsize for count in (problem.num_train, problem.num_test)]
    blocks = [b if b <= 512 * 2 ** 20 else 0 for b in blocks]  # the data cache's default bound (data/hdf5.py)
    parts["data_cache"] = sum(blocks)
    parts["train_cache"] = blocks[0]
    arrays = sum(v for k, v in parts.items() if k not in NOT_SUMMED)
    # Activations are allocated and freed every layer of every step; the heap keeps what
    # they free and fragments, so resident memory grows by a measured factor of them
    # (``allocator_slack``). Parameters, optimizer state and the cache are allocated once.
    parts["allocator_slack"] = (machine.allocator_slack - 1.0) * parts["activations"]
    parts["training_allocator_slack"] = (machine.allocator_slack - 1.0) * train
    parts["baseline"] = machine.baseline
    return arrays + parts["allocator_slack"] + machine.baseline, arrays, parts


def predict(problem, layout, machine):
    """The Prediction of ``layout`` for ``problem`` on ``machine``; raises ValueError when
    the layout cannot run this problem (the reason in the message)."""
    machine = machine.for_model(problem.model_name)
    spec, M = layout.spec, layout.micro_batches
    if spec.ps:
        return _predict_ps(problem, layout, machine)
    B = problem.batch_size
    if B < spec.data * M:
        raise ValueError(f"batch {B} is smaller than {spec.data} data ranks x {M} micro-batches")
    n = max(hi - lo for lo, hi in pieces(B, M, spec.data, 0))
    leaves = walk(problem.model, spec, layout.channel_split, problem.sample_shape, n, problem.itemsize,
                  problem.sync_bn)
    if spec.pipeline > 1:
        return _predict_pipeline(problem, layout, machine, leaves, n)
    comms = Comms(spec, machine)
    dtype, isz = problem.dtype, problem.itemsize
    compute = comm = traffic = backward = 0.0
    for leaf in leaves:
        fwd, bwd = _leaf_seconds(machine, leaf, dtype, isz)
        compute += fwd + bwd
        backward += bwd
        for phase, op, nbytes, axis, extra in leaf.messages:
            comm += comms.seconds(op, nbytes, axis, extra)
            traffic += comms.traffic(op, nbytes, axis, extra)
    compute, comm, traffic = M * compute * machine.compute_scale, M * comm, M * traffic
    params = sum(l.params for l in leaves)
    tensors = sum(l.tensors for l in leaves)
    grad, grad_traffic = _gradient_seconds(comms, machine, params * isz, problem.bucket_mb * 2 ** 20,
                                           "replicas", backward)
    small = comms.seconds("allreduce", 64, "world")  # the step's one reduction of loss, flags, signals
    n_input = leaves[0].in_elems // n  # elements of one sample's local block
    other = (machine.compute_scale * (_optimizer_seconds(machine, params, tensors, isz, problem.optimizer)
                                      + M * n * n_input * machine.data_per_byte * isz) + machine.step_overhead)
    p = Prediction(layout)
    p.compute_seconds, p.comm_seconds, p.other_seconds = compute, comm + grad + small, other
    p.step_seconds = compute + p.comm_seconds + other
    p.bytes_per_step = traffic + grad_traffic
    p.memory_bytes, p.array_bytes, p.memory_parts = _memory(problem, machine, leaves, 1, n_input, params, n,
                                                            spec.data)
    p.samples_per_step, p.sample_bytes = M * n, n_input * problem.stored_itemsize
    return p


def _predict_pipeline(problem, layout, machine, leaves, n):
    spec, M = layout.spec, layout.micro_batches
    S = spec.pipeline
    tops = len(problem.model.children())
    if S > tops:
        raise ValueError(f"pipeline={S} needs at least {S} top-level layers, the model has {tops}")
    isz, dtype = problem.itemsize, problem.dtype
    comms = Comms(spec, machine)
    fwd, bwd, mem = [0.0] * tops, [0.0] * tops, [0.0] * tops
    out_bytes = [0] * tops
    for leaf in leaves:
        f, b = _leaf_seconds(machine, leaf, dtype, isz)
        fwd[leaf.top] += f
        bwd[leaf.top] += b
        mem[leaf.top] += leaf.params * isz
        out_bytes[leaf.top] = leaf.out_elems * isz  # the last leaf of a top-level layer: its output
    for t in range(tops):
        mem[t] += out_bytes[t]
    bounds = partition([f + b for f, b in zip(fwd, bwd)], mem, S)  # the stages' own cut
    stage_f, stage_b = [], []
    for s, (lo, hi) in enumerate(bounds):
        f, b = sum(fwd[lo:hi]), sum(bwd[lo:hi])
        if s > 0:  # a later stage computes its first layer's input gradient
            first = next(l for l in leaves if l.top == lo and l.kind != "convert")
            if not first.needs_dx:
                _, with_dx, _ = machine.layer_seconds(first.kind, first.config, first.size, _work(first),
                                                      first.flops, 0, dtype)
                b += with_dx - _leaf_seconds(machine, first, dtype, isz)[1]
        stage_f.append(f * machine.compute_scale)
        stage_b.append(b * machine.compute_scale)
    link = [comms.seconds("sendrecv", out_bytes[hi - 1], "stage") for lo, hi in bounds[:-1]]
    makespan = _simulate(problem.pipeline_schedule, S, M, stage_f, stage_b, link)
    busy = max(M * (f + b) for f, b in zip(stage_f, stage_b))
    stage_leaves = [[l for l in leaves if lo <= l.top < hi] for lo, hi in bounds]
    worst_other = worst_grad = 0.0
    traffic = 2 * M * max(out_bytes[hi - 1] for lo, hi in bounds[:-1])
    grad_traffic = 0.0
    memory = (0.0, 0.0, {})
    n_input = leaves[0].in_elems // n
    for s, ls in enumerate(stage_leaves):
        params = sum(l.params for l in ls)
        grad, gt = _gradient_seconds(comms, machine, params * isz, problem.bucket_mb * 2 ** 20, "replicas",
                                     stage_b[s])
        worst_grad, grad_traffic = max(worst_grad, grad), max(grad_traffic, gt)
        worst_other = max(worst_other, _optimizer_seconds(machine, params, sum(l.tensors for l in ls), isz,
                                                          problem.optimizer))
        in_flight = M if problem.pipeline_schedule == "gpipe" else min(S - s, M)
        mine = _memory(problem, machine, ls, in_flight, n_input if s == 0 else 0, params, n, spec.data)
        if mine[0] > memory[0]:
            memory = mine
    small = comms.seconds("allreduce", 64, "world")
    p = Prediction(layout)
    p.compute_seconds = busy
    p.bubble_seconds = makespan - busy
    p.comm_seconds = worst_grad + small
    p.other_seconds = (machine.compute_scale * (worst_other + M * n * n_input * machine.data_per_byte * isz)
                       + machine.step_overhead)
    p.step_seconds = makespan + p.comm_seconds + p.other_seconds
    p.bytes_per_step = traffic + grad_traffic
    p.memory_bytes, p.array_bytes, p.memory_parts = memory
    p.samples_per_step, p.sample_bytes = M * n, n_input * problem.stored_itemsize
    p.stages = [[lo, hi] for lo, hi in bounds]
    return p


def _simulate(kind, S, M, f, b, link):
    """Makespan of the pipeline schedule: every stage runs its actions in order, a
    forward once the previous stage's forward of that micro-batch has arrived, a
    backward once the next stage's backward has."""
    plans = [schedule(kind, S, s, M) for s in range(S)]
    done = {}
    clock = [0.0] * S
    at = [0] * S
    remaining = sum(len(p) for p in plans)
    while remaining:
        progressed = False
        for s in range(S):
            while at[s] < len(plans[s]):
                action, m = plans[s][at[s]]
                if action == "F":
                    dep = 0.0 if s == 0 else done.get(("F", s - 1, m))
                    extra = 0.0 if s == 0 else link[s - 1]
                else:
                    dep = done.get(("F", s, m)) if s == S - 1 else done.get(("B", s + 1, m))
                    extra = 0.0 if s == S - 1 else link[s]
                if dep is None:
                    break
                start = max(clock[s], dep + extra)
                clock[s] = start + (f[s] if action == "F" else b[s])
                done[(action, s, m)] = clock[s]
                at[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise ValueError("pipeline schedule deadlocks")  # cannot happen with the stages' schedules
    return max(clock)


def _predict_ps(problem, layout, machine):
    """Parameter server, staleness 0: workers compute as data=W, then push their
    gradients to and pull parameters from the K servers; each server moves W shares."""
    spec = layout.spec
    workers = Layout(ParallelSpec(data=spec.data), 1, layout.channel_split)
    p = predict(problem, workers, machine)
    grad_bytes = p.memory_parts["parameters"]
    server_bytes = 2 * spec.data * grad_bytes / spec.ps
    inter = spec.size > machine.ranks_per_node
    alpha, beta = machine.links["inter" if inter else "intra"]["sendrecv"]
    exchange = 2 * spec.data * alpha + server_bytes * beta  # the busiest server, both directions
    grad, _ = _gradient_seconds(Comms(workers.spec, machine), machine, grad_bytes, problem.bucket_mb * 2 ** 20,
                                "replicas", 0.0)
    p.layout = layout
    p.comm_seconds += exchange - grad
    p.step_seconds = p.compute_seconds + p.comm_seconds + p.other_seconds
    p.bytes_per_step = 2 * grad_bytes
    p.caveat = "parameter server: predicted at --staleness 0; staleness hides waits the model does not count"
    return p
