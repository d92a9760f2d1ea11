"""A machine description (``machine.json``) and the costs the planner reads from it.

Written by ``python -m mpicnn.bench calibrate`` (measured on the ranks it runs on) or by
hand for a machine one is not on (``docs/machines/cluster-64x4.json``). Keys:

- ``nodes``, ``ranks_per_node``: the job shape the numbers describe; ranks are placed on
  nodes in order (rank r on node r // ranks_per_node), as ``mpiexec`` does by default.
- ``memory_per_rank``: bytes a rank may use (``--memory-per-rank`` overrides it).
- ``baseline_bytes``: resident memory of a trainer rank besides its arrays (interpreter,
  NumPy, mpi4py, h5py, BLAS and native libraries), and ``allocator_slack``: resident
  bytes per byte of activations (the heap keeps and fragments what layers free each
  step; 1 when unknown). Both fitted by calibration to two real trainer runs' peak
  resident memory against their predicted arrays.
- ``intra`` / ``inter``: message costs inside a node / between nodes. Either per
  operation, ``{"allreduce": {"alpha": s, "beta": s_per_byte}, "allgather": ...,
  "reduce_scatter": ..., "sendrecv": ...}``, or one ``{"alpha": s, "beta": s_per_byte}``
  for all. A collective over P ranks of n bytes (the whole vector) costs
  ``(P-1)*alpha + 2*(P-1)/P*n*beta`` (ring; on P = 2 simply alpha + n*beta, which is how
  calibration fits them); a halo or pipeline message ``alpha + n*beta``.
- ``channel``: what a channel-split layer pays per call on one node, measured by
  calibration through the layers' own ``ChannelComm`` (wrapper, fresh buffers, the copies
  that lay channel blocks out for MPI and back): ``{op: [{"channels": c, "alpha": s,
  "beta": s_per_byte}, ...]}`` for ``allgather``, ``reduce_scatter``, ``allreduce`` and
  ``block`` (a layer's local copy of its channels), ``beta`` per byte of the whole
  array, by the array's channel count (narrow blocks copy slower per byte). Measured on
  the calibration's ranks; other counts scale as the ring formula. Without it (or
  across nodes) the channel collectives cost what ``intra``/``inter`` say.
- ``halo``: what a window layer split over the rows (or columns) of two ranks of one
  node pays per call for its halo (``parallel.halo``: the span buffer filled, the rows
  exchanged, the bands kept; backward: the buffer rebuilt, the halo gradients sent back
  and added): ``{"forward": {"alpha", "beta"}, "backward": {...}}``, ``beta`` per byte
  of the rank's block, measured by calibration; a second split axis adds its
  messages. Without it (or across nodes) a halo costs its messages alone.
- ``overlap_gradients``: whether gradient buckets travel while backward computes (true
  across nodes; on one node MPI moves data only inside the rank's own calls, FACTS.md).
- ``compute``: either a measured table ``{dtype: {kind: [{"config", "points": [[size,
  forward_s, backward_s, backward_without_input_gradient_s], ...]}]}}`` (see
  ``plan.measure``), or a roofline ``{"flops": per second, "bandwidth": bytes per
  second, "layer_overhead": s}`` for hardware one cannot time.
- ``step_overhead``: seconds per step outside the layers (loop, loss, clocks), and
  ``compute_scale``: a real step's compute over the sum of isolated layer timings (both
  fitted by calibration to two real trainer runs; it stretches the ``channel`` calls,
  which run inside the layers, too); ``trainer_fits``: ``{model: {"compute_scale",
  "step_overhead"}}``, the fit of each model calibration ran (small layers lose more
  to a real step's caches than large ones: LeNet-5's scale is not a convnet's), used
  for that model; the two keys above (their medians) for any other;
  ``optimizer``: ``{"per_tensor": s, "per_byte": s}`` of an Adam step (SGD: half);
  ``data_per_byte``: seconds to read and convert one byte of input batch.
"""
import copy
import json
import math
import re

from ..errors import UserError

FORMAT = "mpicnn-machine/1"
OPS = ("allreduce", "allgather", "reduce_scatter", "sendrecv")
SPIKE = 2.0  # the most the cost per unit of size may grow from one calibrated size to the next
UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2 ** 10, "MIB": 2 ** 20,
         "GIB": 2 ** 30, "TIB": 2 ** 40}


def parse_bytes(text):
    """Bytes of a size written ``16GB``, ``512MiB`` or ``2e9``: the command line's and the
    machine file's ``memory_per_rank`` alike. A limit of 0 bytes fits nothing."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text or "")
    if not m or m.group(2).upper() not in UNITS or float(m.group(1)) <= 0:
        raise UserError(f"--memory-per-rank {text!r}: write a size greater than 0 like 16GB, 512MiB or 2e9")
    return float(m.group(1)) * UNITS[m.group(2).upper()]


class Machine:
    def __init__(self, spec, where="machine"):
        self.spec, self.where = spec, where
        self.nodes = int(spec.get("nodes", 1))
        self.ranks_per_node = int(spec.get("ranks_per_node", 1 << 30))
        self.memory_per_rank = spec.get("memory_per_rank")
        self.baseline = float(spec.get("baseline_bytes", 120e6))
        self.allocator_slack = float(spec.get("allocator_slack", 1.0))
        self.overlap = bool(spec.get("overlap_gradients", False))
        self.step_overhead = float(spec.get("step_overhead", 0.0))
        self.compute_scale = float(spec.get("compute_scale", 1.0))
        self.trainer_fits = spec.get("trainer_fits") or {}
        self.optimizer = spec.get("optimizer", {"per_tensor": 5e-6, "per_byte": 1e-10})
        self.data_per_byte = float(spec.get("data_per_byte", 1e-10))
        self.links = {"intra": self._link(spec.get("intra"), "intra")}
        self.links["inter"] = self._link(spec.get("inter"), "inter")
        self.channel = spec.get("channel") or {}
        self.halo = spec.get("halo") or {}
        self.compute = spec.get("compute")
        if not isinstance(self.compute, dict):
            raise UserError(f"{where}: 'compute' must be a table or a roofline (flops, bandwidth, "
                            f"layer_overhead); see mpicnn/plan/machine.py")
        self._cache = {}

    def _link(self, value, level):
        if value is None:
            if level == "inter":
                return self.links["intra"]
            raise UserError(f"{self.where}: needs 'intra' message costs (alpha, beta)")
        if "alpha" in value:
            value = {op: value for op in OPS}
        out = {}
        for op in OPS:
            ab = value.get(op) or value.get("allreduce")
            try:
                out[op] = (float(ab["alpha"]), float(ab["beta"]))
            except (TypeError, KeyError, ValueError):
                raise UserError(f"{self.where}: {level}.{op} needs numbers alpha (s) and beta (s/byte)")
        return out

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                spec = json.load(f)
        except FileNotFoundError:
            raise UserError(f"machine file {path!r} not found; write one with "
                            f"mpiexec -n 2 python -m mpicnn.bench calibrate -o {path}")
        except (OSError, ValueError) as e:
            raise UserError(f"machine file {path!r} is not valid JSON: {e}")
        if not isinstance(spec, dict):
            raise UserError(f"machine file {path!r} must hold a JSON object")
        base = spec.get("extends")
        if base:  # a cluster file may take its compute table from a calibrated file
            import os
            merged = cls.load(os.path.join(os.path.dirname(os.path.abspath(path)), base)).spec
            spec = {**merged, **spec}
        return cls(spec, f"machine file {path!r}")

    def for_model(self, name):
        """This machine with the step fit calibration measured for model ``name``, if any."""
        fit = self.trainer_fits.get(name)
        if not fit:
            return self
        machine = copy.copy(self)  # shares the interpolation cache: it holds unscaled seconds
        machine.compute_scale = float(fit["compute_scale"])
        machine.step_overhead = float(fit["step_overhead"])
        machine.trainer_fits = {}
        return machine

    # ---- messages -------------------------------------------------------------------
    def collective(self, op, nbytes, ranks, inter=False):
        if ranks <= 1:
            return 0.0
        alpha, beta = self.links["inter" if inter else "intra"][op]
        return (ranks - 1) * alpha + 2.0 * (ranks - 1) / ranks * nbytes * beta

    def message(self, nbytes, inter=False):
        alpha, beta = self.links["inter" if inter else "intra"]["sendrecv"]
        return alpha + nbytes * beta

    def channel_op(self, op, nbytes, ranks, channels):
        """Seconds of a channel layer's ``op`` on an array of ``nbytes`` (whole) and
        ``channels`` channels over ``ranks`` ranks of one node, from the measured
        ``channel`` table (log-linear between the measured channel counts); None when the
        table lacks it."""
        series = self.channel.get(op)
        if not series or ranks <= 1:
            return None if not series else 0.0
        pts = sorted((float(p["channels"]), float(p["alpha"]), float(p["beta"])) for p in series)
        c = min(max(float(channels or pts[-1][0]), pts[0][0]), pts[-1][0])
        lo = max(i for i, p in enumerate(pts) if p[0] <= c)
        hi = min(lo + 1, len(pts) - 1)
        f = 0.0 if hi == lo else math.log(c / pts[lo][0]) / math.log(pts[hi][0] / pts[lo][0])
        alpha, beta = (pts[lo][k] + f * (pts[hi][k] - pts[lo][k]) for k in (1, 2))
        if op == "block":  # a local copy: one rank's share of the array, whatever the count
            return alpha + nbytes * beta * 2.0 / ranks
        return (ranks - 1) * alpha + 2.0 * (ranks - 1) / ranks * nbytes * beta

    def halo_call(self, phase, block_bytes):
        """Seconds of a split window layer's halo handling in ``phase`` (forward or
        backward) for a block of ``block_bytes``, from the measured ``halo`` fit; None
        without one."""
        fit = self.halo.get(phase)
        return None if fit is None else float(fit["alpha"]) + block_bytes * float(fit["beta"])

    # ---- compute ----------------------------------------------------------------------
    def layer_seconds(self, kind, config, size, work, flops, nbytes, dtype):
        """(forward, backward, backward without input gradient) seconds of a layer of
        ``kind``/``config`` on ``size`` (see ``plan.measure.size_of``); ``work``: its
        work per unit of size; ``flops``/``nbytes``: for a roofline machine."""
        if "flops" in self.compute:
            c = self.compute
            t = float(c.get("layer_overhead", 0.0)) + flops / float(c["flops"]) + nbytes / float(c["bandwidth"])
            return t, 2 * t, t
        table = self.compute.get(dtype)
        scale = 1.0
        if table is None:  # another dtype: scale by the item size (bandwidth and GEMM alike)
            other = next(iter(self.compute))
            table, scale = self.compute[other], (8 if dtype == "float64" else 4) / (8 if other == "float64" else 4)
        series = table.get(kind)
        if not series:
            raise UserError(f"{self.where} has no compute figures for {kind} layers ({dtype}); "
                            f"recalibrate with this model: python -m mpicnn.bench calibrate --model ...")
        key = (kind, json.dumps(config, sort_keys=True), size, dtype)
        if key not in self._cache:
            best = min(series, key=lambda s: _distance(s["config"], config))
            ratio = work / _work(kind, best["config"]) if work else 1.0
            self._cache[key] = tuple(scale * ratio * _interp(best["points"], size, i) for i in (1, 2, 3))
        return self._cache[key]


def _work(kind, config):
    from .measure import work_of
    return work_of(kind, config)


def _distance(a, b):
    """How unlike two configs are: log-ratios of their numbers; a mismatched key counts 10."""
    d = 0.0
    for k in set(a) | set(b):
        x, y = a.get(k), b.get(k)
        if x is None or y is None:
            d += 10.0
            continue
        for u, v in zip(x if isinstance(x, list) else [x], y if isinstance(y, list) else [y]):
            d += abs(math.log((u + 1) / (v + 1)))
    return d


def _interp(points, size, column):
    """Seconds at ``size`` from the measured ``points`` (size ascending): log-log linear
    between points, proportional to size beyond the largest, the smallest's time below."""
    pts = sorted(points)
    xs = [p[0] for p in pts]
    ts = [p[column] for p in pts]
    # Noise only adds time. Larger sizes amortise the fixed cost, so a step up in the cost
    # per unit of more than SPIKE (caches spilling) is another process's doing: cut it back.
    for i in range(1, len(ts)):
        ts[i] = min(ts[i], SPIKE * ts[i - 1] / xs[i - 1] * xs[i]) if ts[i - 1] > 0 else ts[i]
    # ... and a larger size never takes less time than a smaller one.
    for i in range(len(ts) - 2, -1, -1):
        ts[i] = min(ts[i], ts[i + 1])
    if size <= xs[0]:
        return ts[0]
    if size >= xs[-1]:
        return ts[-1] * size / xs[-1]
    for i in range(1, len(xs)):
        if size <= xs[i]:
            x0, x1, t0, t1 = xs[i - 1], xs[i], max(ts[i - 1], 1e-9), max(ts[i], 1e-9)
            f = math.log(size / x0) / math.log(x1 / x0)
            return math.exp(math.log(t0) + f * math.log(t1 / t0))
    return ts[-1]
