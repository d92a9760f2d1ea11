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
import difflib
import json
import math
import os
import re

from ..errors import UserError

FORMAT = "mpicnn-machine/1"
OPS = ("allreduce", "allgather", "reduce_scatter", "sendrecv")
# The calls parallel.link_timing times for the ``channel`` table (not imported: it needs MPI).
CHANNEL_OPS = ("allgather", "reduce_scatter", "allreduce", "block")
DTYPES = ("float32", "float64")
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


class _Checker:
    """Reads a machine description's values, refusing with one line that names the
    file and the key what the cost model cannot use: a negative or infinite cost, a
    zero rate (the model divides by it), a count that is not a whole number >= 1."""

    def __init__(self, where):
        self.where = where

    def fail(self, key, value, expected):
        shown = json.dumps(value) if value is not None else "missing"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise UserError(f"{self.where}: {key} is {shown}; expected {expected} (keys: mpicnn/plan/machine.py)")

    def number(self, value, key, unit, positive=False):
        """A finite number >= 0 (> 0 with ``positive``: a rate or size the model divides by)."""
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0 or (positive and value == 0)):
            self.fail(key, value, f"a number {'> 0' if positive else '>= 0'} ({unit})")
        return float(value)

    def count(self, value, key, what):
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value != int(value) or value < 1):
            self.fail(key, value, f"a whole number >= 1 ({what})")
        return int(value)

    def table(self, value, key, expected, keys=None):
        """A JSON object, its keys among ``keys`` if given."""
        if not isinstance(value, dict) or (keys is not None and any(k not in keys for k in value)):
            self.fail(key, value, f"{expected}" + (f" with keys among {', '.join(keys)}" if keys else ""))
        return value

    def pair(self, value, key, unit="s per byte"):
        """An {"alpha": seconds, "beta": seconds per ``unit``} fit: both may be 0."""
        self.table(value, key, 'an object {"alpha": seconds, "beta": seconds per byte}')
        for k, u in (("alpha", "seconds"), ("beta", unit)):
            self.number(value.get(k), f"{key}.{k}", u)
        return value

    def compute(self, value):
        self.table(value, "compute", 'a table {dtype: {kind: [...]}} from calibration or a roofline '
                                     '{"flops", "bandwidth", "layer_overhead"}')
        if "flops" in value:
            self.number(value["flops"], "compute.flops", "floating-point operations per second", positive=True)
            self.number(value.get("bandwidth"), "compute.bandwidth", "bytes per second", positive=True)
            self.number(value.get("layer_overhead", 0.0), "compute.layer_overhead", "seconds per layer")
            return value
        if not self.table(value, "compute", "a table by dtype", DTYPES):
            self.fail("compute", value, "a table by dtype (float32, float64) or a roofline")
        for dtype, kinds in value.items():
            for kind, series in self.table(kinds, f"compute.{dtype}", "a table by layer kind").items():
                key = f"compute.{dtype}.{kind}"
                if not isinstance(series, list) or not series:
                    self.fail(key, series, 'a list of {"config", "points"}')
                for i, s in enumerate(series):
                    self.table(s, f"{key}[{i}]", 'an object {"config", "points"}')
                    for name, v in self.table(s.get("config"), f"{key}[{i}].config", "the layer's config").items():
                        for x in (v if isinstance(v, list) else [v]):
                            self.number(x, f"{key}[{i}].config.{name}", "channels, kernel, stride or padding")
                    points = s.get("points")
                    if not isinstance(points, list) or not points:
                        self.fail(f"{key}[{i}].points", points, "a list of [size, forward, backward, "
                                                                 "backward without input gradient]")
                    for j, pt in enumerate(points):
                        where = f"{key}[{i}].points[{j}]"
                        if not isinstance(pt, list) or len(pt) != 4:
                            self.fail(where, pt, "[size, forward, backward, backward without input gradient]")
                        self.number(pt[0], f"{where}[0]", "size", positive=True)
                        for t in (1, 2, 3):
                            self.number(pt[t], f"{where}[{t}]", "seconds")
        return value


# The keys the cost model reads, and those calibration writes for the record (or a person
# for the reader): any other key is a typo whose value would be silently ignored.
MODEL_KEYS = ("nodes", "ranks_per_node", "memory_per_rank", "baseline_bytes", "allocator_slack",
              "overlap_gradients", "step_overhead", "compute_scale", "trainer_fits", "optimizer", "data_per_byte",
              "intra", "inter", "channel", "halo", "compute")
RECORD_KEYS = ("format", "extends", "description", "comment", "host", "measured", "backend", "threads_per_rank",
               "ranks", "links_measured", "channel_measured", "halo_measured", "calibration_seconds")


class Machine:
    def __init__(self, spec, where="machine"):
        self.spec, self.where = spec, where
        c = _Checker(where)
        for key in spec:
            if key not in MODEL_KEYS + RECORD_KEYS:
                near = difflib.get_close_matches(key, MODEL_KEYS + RECORD_KEYS, n=1)
                hint = f"did you mean {near[0]!r}?" if near else f"the planner reads {', '.join(MODEL_KEYS)}"
                raise UserError(f"{where}: unknown key {key!r} (its value would be ignored); {hint} "
                                f"(keys: mpicnn/plan/machine.py)")
        if spec.get("format", FORMAT) != FORMAT:  # a hand-written file may leave it out
            c.fail("format", spec["format"], f"{FORMAT!r}, the format this mpicnn reads; recalibrate with "
                                             f"mpiexec -n 2 python -m mpicnn.bench calibrate -o FILE")
        self.nodes = c.count(spec.get("nodes", 1), "nodes", "nodes of the job")
        self.ranks_per_node = c.count(spec.get("ranks_per_node", 1 << 30), "ranks_per_node", "ranks on a node")
        memory = self.memory_per_rank = spec.get("memory_per_rank")
        size = 'bytes, or a size like "16GB", "512MiB" or "2e9"'
        if isinstance(memory, str):  # as --memory-per-rank takes it
            try:
                self.memory_per_rank = parse_bytes(memory)
            except UserError:
                c.fail("memory_per_rank", memory, f"a number > 0 ({size})")
        elif memory is not None:
            self.memory_per_rank = c.number(memory, "memory_per_rank", size, positive=True)
        self.baseline = c.number(spec.get("baseline_bytes", 120e6), "baseline_bytes", "bytes")
        allocator_slack = spec.get("allocator_slack", 1.0)
        # Resident bytes per byte of activations: the heap cannot hold less than was allocated.
        if c.number(allocator_slack, "allocator_slack", "resident bytes per byte of activations") < 1:
            c.fail("allocator_slack", allocator_slack, "a number >= 1 (resident bytes per byte of activations)")
        self.allocator_slack = float(allocator_slack)
        self.overlap = spec.get("overlap_gradients", False)
        if not isinstance(self.overlap, bool):
            c.fail("overlap_gradients", self.overlap, "true or false")
        self.step_overhead = c.number(spec.get("step_overhead", 0.0), "step_overhead", "seconds")
        self.compute_scale = c.number(spec.get("compute_scale", 1.0), "compute_scale", "a factor", positive=True)
        self.trainer_fits = c.table(spec.get("trainer_fits") or {}, "trainer_fits",
                                    '{model: {"compute_scale", "step_overhead"}}')
        for model, fit in self.trainer_fits.items():
            c.table(fit, f"trainer_fits.{model}", 'an object {"compute_scale", "step_overhead"}')
            c.number(fit.get("compute_scale"), f"trainer_fits.{model}.compute_scale", "a factor", positive=True)
            c.number(fit.get("step_overhead"), f"trainer_fits.{model}.step_overhead", "seconds")
        self.optimizer = c.table(spec.get("optimizer", {"per_tensor": 5e-6, "per_byte": 1e-10}), "optimizer",
                                 'an object {"per_tensor": seconds, "per_byte": seconds}')
        for k in ("per_tensor", "per_byte"):
            c.number(self.optimizer.get(k), f"optimizer.{k}", "seconds")
        self.data_per_byte = c.number(spec.get("data_per_byte", 1e-10), "data_per_byte", "seconds per byte")
        self.links = {"intra": self._link(c, spec.get("intra"), "intra")}
        self.links["inter"] = self._link(c, spec.get("inter"), "inter")
        self.channel = c.table(spec.get("channel") or {}, "channel", "a table by op", CHANNEL_OPS)
        for op, series in self.channel.items():
            if not isinstance(series, list) or not series:
                c.fail(f"channel.{op}", series, 'a list of {"channels", "alpha", "beta"}')
            for i, point in enumerate(series):
                c.pair(point, f"channel.{op}[{i}]")
                c.count(point.get("channels"), f"channel.{op}[{i}].channels", "channels of the array")
        self.halo = c.table(spec.get("halo") or {}, "halo", "a table by phase", ("forward", "backward"))
        for phase, fit in self.halo.items():
            c.pair(fit, f"halo.{phase}", "s per byte of the block")
        self.compute = c.compute(spec.get("compute"))
        self._cache = {}

    def _link(self, c, value, level):
        if value is None:
            if level == "inter":
                return self.links["intra"]
            c.fail("intra", value, 'message costs {"alpha": seconds, "beta": seconds per byte}')
        c.table(value, level, 'an object {"alpha", "beta"} or one per op')
        if "alpha" in value or "beta" in value:  # one fit for every op
            c.pair(value, level)
            return {op: (float(value["alpha"]), float(value["beta"])) for op in OPS}
        c.table(value, level, 'an object {"alpha", "beta"} or one per op', OPS)
        out = {}
        for op in OPS:
            given = op if op in value else "allreduce"  # an op the file leaves out costs what its allreduce does
            ab = c.pair(value.get(given), f"{level}.{given}")
            out[op] = (float(ab["alpha"]), float(ab["beta"]))
        return out

    @classmethod
    def load(cls, path, _extended_by=()):
        """The machine of file ``path``; ``_extended_by``: the real paths of the files
        whose ``extends`` led here (a loop among them is refused)."""
        where = f"machine file {path!r}"
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
        if base is not None:  # a cluster file may take its compute table from a calibrated file
            if not isinstance(base, str) or not base:
                _Checker(where).fail("extends", base, "the path of a machine file (relative to this one)")
            chain = _extended_by + (os.path.realpath(path),)
            base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base)
            if os.path.realpath(base_path) in chain:
                _Checker(where).fail("extends", base, "a file that does not extend this one back "
                                                      "(the files extend each other in a loop)")
            merged = cls.load(base_path, chain).spec
            spec = {**merged, **spec}
        return cls(spec, where)

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
