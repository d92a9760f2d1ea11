"""Each rank's view of a model under a layout: every leaf layer's local shapes and the
messages it causes, from the partition functions the layouts use (``parallel.blocks``,
``halo_geometry``, ``channel_plan``). Pure: no MPI, no timing.

``walk(model, layout, sample_shape, n)`` returns one ``Leaf`` per leaf layer, in forward
order, for the busiest rank: the first block of every split (balanced blocks give the
first ones the extra row) and, for halos, the most a block of the axis receives
(checked on the first, a middle and the last block).
"""
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .. import nn
from ..ops.conv import conv_paths
from ..parallel.blocks import block_range
from ..parallel.channel_plan import plan_model
from ..parallel.halo_geometry import axis_plan
from .layouts import enumerate_layouts
from .measure import kind_of, work_of

SAVES_INPUT = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.LeakyReLU)  # keep x for backward
SAVES_OUTPUT = (nn.ReLU, nn.MaxPool2d)  # keep y for backward
SAVES_COPY = (nn.BatchNorm2d, nn.Dropout)  # keep a new array of the input's size (xhat, mask)


@dataclass
class Leaf:
    name: str
    top: int  # index of the model's top-level layer it belongs to (pipeline stages cut there)
    kind: str
    config: dict  # the local layer (channels of its shard)
    size: int  # plan.measure.size_of on the local input
    needs_dx: bool
    flops: float  # forward multiply-adds x 2 (roofline machines)
    in_elems: int  # local input elements (all n samples)
    out_elems: int
    params: int = 0  # local parameter elements
    tensors: int = 0  # local parameter tensors
    saved: int = 0  # elements kept for backward
    copies: int = 0  # of those, a new array only training keeps (BatchNorm's xhat, Dropout's mask)
    keeps_output: bool = False  # its output is kept for its own backward (ReLU, max pool)
    workspace: int = 0  # transient elements while it runs (im2col of one 8-sample chunk, halo buffer)
    # (phase, op, bytes, axis, extra): phase fwd/bwd, the axis of the comm; extra: for the
    # channel layers' calls the array's channel count (their copies' cost depends on it),
    # for a halo call (bytes: the block) the bytes of its messages
    messages: list = field(default_factory=list)


class State:
    """The activation entering a layer: channels (or features), global rows and columns
    (None for (N, F)), and whether the channel ranks hold it split."""

    def __init__(self, c, h=None, w=None, split=False):
        self.c, self.h, self.w, self.split = c, h, w, split


class Walker:
    def __init__(self, model, spec, channel_split, n, itemsize, sync_bn=False):
        self.spec, self.n, self.isz, self.sync_bn = spec, n, itemsize, sync_bn
        self.C = spec.channel
        self.P, self.Q = spec.spatial
        self.plans = plan_model(model, channel_split) if self.C > 1 else {}
        self.chain = {m for p in self.plans.values() for m in p.chain}
        self.leaves = []

    # ---- local sizes --------------------------------------------------------------
    def own(self, size, parts):
        """The largest block: the first (balanced blocks give the first ones the extra)."""
        if size is None:
            return None
        lo, hi = block_range(size, parts, 0)
        return hi - lo

    def local_c(self, c, split):
        return self.own(c, self.C) if split else c

    def elems(self, state):
        c = self.local_c(state.c, state.split)
        if state.h is None:
            return self.n * c
        return self.n * c * self.own(state.h, self.P) * self.own(state.w, self.Q)

    # ---- halos --------------------------------------------------------------------
    def halo(self, size, k, s, p, d, parts):
        """(most rows a block receives, output rows of the biggest block) along one axis."""
        return _halo(size, k, s, p, d, parts)

    def window(self, leaf, state, k, s, p, d):
        """Output rows/columns of a window op and its halo messages (forward; backward
        sends the halo gradients back when the op computes its input gradient)."""
        c = self.local_c(state.c, state.split)
        rh, ho = self.halo(state.h, k[0], s[0], p[0], d[0], self.P)
        rw, wo = self.halo(state.w, k[1], s[1], p[1], d[1], self.Q)
        hown, wown = self.own(state.h, self.P), self.own(state.w, self.Q)
        phases = []
        if self.P > 1:
            phases.append((rh * wown * c * self.n * self.isz, "rows"))
        if self.Q > 1:
            phases.append((rw * (hown + rh) * c * self.n * self.isz, "columns"))
        # The first phase is the layer's halo call (``parallel.halo``: the span buffer of
        # its block, the exchange, the bands kept; backward, rebuilt and sent back), a
        # cost of the block's bytes with its messages' bytes beside; a second, its messages.
        block = hown * wown * c * self.n * self.isz
        for i, (nbytes, axis) in enumerate(phases):
            for phase, op in (("fwd", "halo_forward"), ("bwd", "halo_backward")):
                if phase == "fwd" or leaf.needs_dx:
                    leaf.messages.append((phase, op, block, axis, nbytes) if i == 0 else
                                         (phase, "sendrecv", nbytes, axis, None))
        leaf.workspace = max(leaf.workspace, (hown + rh) * (wown + rw) * c * self.n)
        return ho, wo

    # ---- the walk -------------------------------------------------------------------
    def module(self, m, name, top, state):
        if isinstance(m, nn.Sequential):
            for child_name, child in m.named_children():
                state = self.module(child, f"{name}{child_name}" if not name else f"{name}.{child_name}",
                                    top if name else int(child_name), state)
            return state
        if isinstance(m, nn.Residual):
            out = self.module(m.block, f"{name}.block", top, state)
            shortcut = m._branch("shortcut")
            if shortcut is not None:
                self.module(shortcut, f"{name}.shortcut", top, state)
            e = self.elems(out)
            self.leaves.append(Leaf(f"{name}.add", top, "add", {}, e, True, e, e, e))
            return out
        return self.leaf(m, name, top, state)

    def leaf(self, m, name, top, state):
        kc = kind_of(m)
        if kc is None:
            raise ValueError(f"layer {name} ({type(m).__name__}) is not modelled by the planner")
        kind, config = kc
        needs_dx = getattr(m, "needs_input_grad", True)
        in_e = self.elems(state)
        plan = self.plans.get(name)
        in_chain = name in self.chain
        split_in = state.split
        if kind in ("conv", "linear"):
            cin_key, cout_key = ("cin", "cout") if kind == "conv" else ("fin", "fout")
            cin, cout = config[cin_key], config[cout_key]
            local = dict(config)
            out_split = False
            if plan is not None:
                if plan.layout in ("filter", "neuron"):
                    local[cout_key] = self.own(cout, self.C)
                    out_split = plan.split_out
                else:
                    local[cin_key] = self.own(cin, self.C)
                    out_split = plan.split_out
            leaf = Leaf(name, top, kind, local, 0, needs_dx, 0, in_e, 0)
            if kind == "conv":
                ho, wo = self.window(leaf, state, m.kernel_size, m.stride, m.padding, m.dilation)
                out = State(cout, (state.h + 2 * m.padding[0] - m.dilation[0] * (m.kernel_size[0] - 1) - 1)
                            // m.stride[0] + 1,
                            (state.w + 2 * m.padding[1] - m.dilation[1] * (m.kernel_size[1] - 1) - 1)
                            // m.stride[1] + 1, out_split)
                leaf.size = self.n * ho * wo
                # The buffers of the code that runs (ops.conv.conv_paths): the native
                # kernels pad one sample; im2col copies a chunk of up to 8 samples.
                paths = conv_paths(np.float32 if self.isz == 4 else np.float64,
                                   (local["cout"], local["cin"] // m.groups) + tuple(m.kernel_size), m.stride,
                                   m.padding, m.dilation, m.groups, (state.h, state.w))
                if all(p == "native" for p in paths.values()):
                    work = (state.h + 2 * m.padding[0]) * (state.w + 2 * m.padding[1]) * local["cin"]
                else:
                    work = min(self.n, 8) * ho * wo * m.kernel_size[0] * m.kernel_size[1] * local["cin"]
                leaf.workspace = max(leaf.workspace, work)
            else:
                out = State(cout, split=out_split)
                leaf.size = self.n
            leaf.flops = 2.0 * leaf.size * work_of(kind, local)
            leaf.out_elems = self.elems(out)
            whole_out = leaf.out_elems if not out_split else self.elems(State(out.c, out.h, out.w, False))
            whole_in = self.elems(State(state.c, state.h, state.w, False))
            if plan is not None:  # what parallel.channel's split layers call, in order
                outs = (whole_out * self.isz, "channel", cout)
                ins = (whole_in * self.isz, "channel", cin)
                if plan.layout in ("filter", "neuron"):
                    if not out_split:
                        leaf.messages.append(("fwd", "allgather") + outs)
                        leaf.messages.append(("bwd", "block") + outs)  # its block of the whole output gradient
                    if needs_dx:
                        leaf.messages.append(("bwd", "allreduce") + ins)
                else:
                    if not plan.split_in:
                        leaf.messages.append(("fwd", "block") + ins)  # its block of the whole input
                    leaf.messages.append(("fwd", "reduce_scatter" if out_split else "allreduce") + outs)
                    if out_split:
                        leaf.messages.append(("bwd", "allgather") + outs)
                    if needs_dx and not plan.split_in:
                        leaf.messages.append(("bwd", "allgather") + ins)
            for p in m.parameters():
                leaf.params += self._local_param(p, plan)
                leaf.tensors += 1
            leaf.saved = self._saved_input(in_e)
            self.leaves.append(leaf)
            return out
        split = split_in and in_chain
        state = State(state.c, state.h, state.w, split)
        in_e = self.elems(state)
        leaf = Leaf(name, top, kind, dict(config), in_e, needs_dx, in_e, in_e, in_e)
        if kind in ("maxpool2d", "avgpool2d") or kind.startswith("global"):
            # NHWC pools run per pixel over a channel vector: the time per element
            # depends on how many channels there are (3 of 6 after a channel split
            # costs several times 16's per element), so the table keys them by it.
            leaf.config["c"] = self.local_c(state.c, split)
        if kind in ("maxpool2d", "avgpool2d"):
            ho, wo = self.window(leaf, state, m.kernel_size, m.stride, m.padding, (1, 1))
            out = State(state.c, (state.h + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1,
                        (state.w + 2 * m.padding[1] - m.kernel_size[1]) // m.stride[1] + 1, split)
        elif kind.startswith("global"):
            out = State(state.c, split=split)
            if self.P * self.Q > 1:
                leaf.messages.append(("fwd", "allreduce", self.n * self.local_c(state.c, split) * self.isz,
                                      "spatial", None))
        elif kind == "flatten":
            out = State(state.c * (state.h or 1) * (state.w or 1), split=split and state.h is None)
        else:
            out = state
        if kind == "batchnorm":
            if split and state.c < self.C:
                raise ValueError(f"BatchNorm {name} has fewer channels than channel={self.C}")
            c = self.local_c(state.c, split)
            leaf.config = {"c": c}
            # Statistics over the blocks of a sample, and with --sync-bn over the data ranks too.
            axis = "replicas" if self.sync_bn and self.spec.data > 1 else "spatial"
            if self.P * self.Q > 1 or axis == "replicas":
                for phase in ("fwd", "bwd"):
                    leaf.messages.append((phase, "allreduce", 2 * c * 8, axis, None))
            leaf.params, leaf.tensors = 2 * c, 2
        leaf.out_elems = self.elems(out)
        leaf.copies = in_e if isinstance(m, SAVES_COPY) else 0
        leaf.keeps_output = isinstance(m, SAVES_OUTPUT)
        leaf.saved = ((self._saved_input(in_e) if isinstance(m, SAVES_INPUT) else 0)
                      + (leaf.out_elems if leaf.keeps_output else 0) + leaf.copies)
        self.leaves.append(leaf)
        return out

    def _saved_input(self, in_e):
        """Elements a layer that keeps its input adds: none when that input is the array
        the layer before already keeps as its output (a conv after a ReLU holds the
        ReLU's output, not a copy)."""
        prev = self.leaves[-1] if self.leaves else None
        return 0 if prev is not None and prev.keeps_output and prev.out_elems == in_e else in_e

    def _local_param(self, p, plan):
        shape = p.shape
        size = 1
        for s in shape:
            size *= s
        if plan is None:
            return size
        if plan.layout in ("filter", "neuron"):
            return size // shape[0] * self.own(shape[0], self.C)
        if len(shape) == 1:  # an input-split layer's bias is whole
            return size
        return size // shape[1] * self.own(shape[1], self.C)


@lru_cache(maxsize=None)
def _halo(size, k, s, p, d, parts):
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if parts == 1:
        return 0, out
    rows = max(axis_plan(size, k, s, p, d, parts, i).halo_rows for i in sorted({0, parts // 2, parts - 1}))
    lo, hi = block_range(out, parts, 0)
    return rows, hi - lo


def layout_configs(model, sample_shape, ranks, itemsize=4):
    """The distinct (kind, config) of the leaves every data/spatial/channel layout of
    ``ranks`` ranks gives its busiest rank (a channel split's shards, a pool's local
    channels): what a calibration times so that the planner reads each layer it plans
    from its own measured series. Pipelines and parameter servers keep whole layers."""
    seen = []
    for spec, _, split in enumerate_layouts(ranks, pipeline=False, ps=False):
        try:
            leaves = walk(model, spec, split, sample_shape, 1, itemsize)
        except ValueError:
            continue  # this layout cannot split this model
        for leaf in leaves:
            kc = (leaf.kind, leaf.config)
            if leaf.kind not in ("add", "convert") and kc not in seen:
                seen.append(kc)
    return seen


def walk(model, spec, channel_split, sample_shape, n, itemsize, sync_bn=False):
    """The leaves of ``model`` for the busiest rank of ``spec`` with ``n`` samples of
    ``sample_shape`` (C, H, W); raises ValueError where the layout cannot split the model
    (an empty block, an unmodelled layer). ``sync_bn``: BatchNorm statistics are
    summed over the data ranks too (--sync-bn)."""
    w = Walker(model, spec, channel_split, n, itemsize, sync_bn)
    c, h, wd = sample_shape
    if spec.spatial != (1, 1) and (h < spec.spatial[0] or wd < spec.spatial[1]):
        raise ValueError(f"{h}x{wd} images cannot be cut into {spec.spatial[0]}x{spec.spatial[1]} blocks")
    if spec.spatial != (1, 1) and any(isinstance(m, nn.Flatten) for m in model.modules()):
        raise ValueError("spatial splits refuse models that flatten a feature map")
    first = State(c, h, wd)
    e = w.elems(first)
    w.leaves.append(Leaf("input", 0, "convert", {}, e, False, e, e, e))
    w.module(model, "", 0, first)
    return w.leaves
