"""Channel axis: convolutions and linear layers split over the channel ranks.

``--parallel channel=C`` (alone or with data=D and spatial=PxQ[xR]) splits every Conv2d
and Conv3d (groups=1) and Linear one of two ways; blocks are ``block_range(count, C, c)``, so
uneven counts give blocks that differ by at most one.

- Output split (``filter`` conv, ``neuron`` linear): the rank holds weight[lo:hi] and
  bias[lo:hi] (axis 0) and computes its block of outputs from the whole input. The
  output is allgathered unless the next layer takes it split; the input gradient is
  partial (its outputs only) and is allreduced.
- Input split (``channel`` conv, ``row`` linear): the rank holds weight[:, lo:hi]
  (axis 1) and the whole bias (replicated), and computes the partial sum of every
  output over its block of input channels. A whole input is just sliced; the partial
  outputs are allreduced, or reduce-scattered when the next layer takes its input
  split, and the bias is added once, after the sum. Backward needs the whole output
  gradient (allgathered if the output was left split); the input gradient of its
  block is complete and is allgathered unless the previous layer gave the input split.

A split layer hands its output split to the next split layer when that one splits its
input and only per-channel layers separate them (``_links``): ReLU, LeakyReLU,
BatchNorm2d, Dropout, MaxPool2d, AvgPool2d, and, from a conv to a Linear, one global pool
(its (N, C) output, a Flatten of it too, is the channels as features); between Conv3d
layers their 3-D versions (BatchNorm3d, MaxPool3d, AvgPool3d, the 3-D global pools), not
Dropout. Volumes are split along axis 1 (NCDHW), images and features along the last. Those layers act
on each channel alone, so they run on the rank's block without communication and the
activation, and its gradient, stay split the whole way, ~1/C per rank: a BatchNorm2d
there holds its block of weight, bias and running statistics (sharded along axis 0 like
the other parameters; its statistics are still summed over the data/spatial ranks,
which share the block), a Dropout keys its mask on the global channel index, and window
pools under spatial splits exchange halos of the rank's channels only. Everywhere else
(Flatten of a map, container edges, the loss) activations are whole and the layers in
between run replicated: each channel rank computes the same values, so their gradients
are already complete (so is an input split layer's bias gradient: it comes from the
whole output gradient). Every gradient, sharded or replicated, is summed over sample x
spatial only (``grid.replicas``), never over the channel axis. Sharded weights, their
gradients and their optimizer state exist only as the shard; checkpoints hold the global
layout (``gather_full``, ``local_block``). The count attributes of a split layer
(``in_channels``, ``out_features`` ...) and a sharded BatchNorm's ``num_features``
describe its shard.

Which layout each layer gets is ``plan_model``'s pure decision (``--channel-split``):

- ``auto``: each conv or Linear takes the layout with the smaller estimated volume
  (``estimate_volume``), given whether the previous split layer could hand over its
  output split; a tie goes to the input split, which keeps the activation split. On
  convnet: the first conv filter-parallel (output left split), every other conv
  channel-parallel with input and output split (reduce-scattered), and the head
  row-parallel behind the global pool: activations split from the first conv to the
  logits.
- ``filter``/``channel``: every conv output/input split; a channel-parallel conv takes
  its input split when it can.
- A Linear, under ``filter`` and ``channel``: row-parallel when its input can arrive
  split, neuron-parallel otherwise (so a neuron + row pair costs one allreduce forward
  and one backward).

Not done: gathering late (after a pool) or splitting early (before a BatchNorm) at the
ends of a chain, Flatten of a split map, splits across container edges (Residual),
grouped convolutions.

Layers do not see MPI: this module builds the split layers and gives them a
``ChannelComm`` that does the collectives.
"""
import time
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from mpi4py import MPI

from ..backend import array_module
from ..nn.conv import Conv2d
from ..nn.conv3d import Conv3d
from ..nn.dropout import Dropout
from ..nn.linear import Linear
from ..nn.module import Parameter
from ..nn.norm import BatchNorm2d
from .channel_plan import COUNTS, plan_model
from . import events
from .blocks import block_range, block_sizes
from .device_buffers import MPIBuffer

COLLECTIVES = ("allgather", "allreduce", "reduce_scatter")


class ChannelComm:
    """The channel ranks' collectives, on arrays split along ``axis`` (the last: NHWC maps
    and (N, F) features; 1: NCDHW volumes)."""

    def __init__(self, comm):
        self.comm = comm
        self.size, self.rank = comm.Get_size(), comm.Get_rank()

    def allgather(self, y, sizes, axis=-1):
        """Concatenate every rank's ``y`` (sizes[rank] along ``axis``) along ``axis``."""
        xp = array_module(y)
        axis %= y.ndim
        m = int(np.prod(y.shape[:axis] + y.shape[axis + 1:], dtype=np.int64))
        send = MPIBuffer(xp.ascontiguousarray(y))
        recv = MPIBuffer(xp.empty(m * sum(sizes), y.dtype))
        send.before()
        self.comm.Allgatherv(send.buf.reshape(-1), [recv.buf, [m * s for s in sizes]])
        recv.after()
        blocks, offset = [], 0
        for s in sizes:  # each rank's block arrives whole, in its own shape
            blocks.append(recv.array[offset:offset + m * s].reshape(y.shape[:axis] + (s,) + y.shape[axis + 1:]))
            offset += m * s
        return xp.concatenate(blocks, axis=axis)

    def allreduce(self, x):
        """The sum of every rank's ``x`` (in place)."""
        x = array_module(x).ascontiguousarray(x)
        staged = MPIBuffer(x)
        staged.before()
        self.comm.Allreduce(MPI.IN_PLACE, staged.buf, op=MPI.SUM)
        staged.after()
        return x

    def reduce_scatter(self, y, sizes, axis=-1):
        """This rank's block (``sizes`` along ``axis``) of the sum of every rank's ``y``."""
        xp = array_module(y)
        axis %= y.ndim
        m = int(np.prod(y.shape[:axis] + y.shape[axis + 1:], dtype=np.int64))
        edges = np.cumsum([0] + list(sizes))
        # MPI scatters contiguous pieces: lay the channel blocks out one after another.
        send = MPIBuffer(xp.concatenate([_block(y, axis, a, b).reshape(-1) for a, b in zip(edges[:-1], edges[1:])]))
        recv = MPIBuffer(xp.empty(m * sizes[self.rank], y.dtype))
        send.before()
        self.comm.Reduce_scatter(send.buf, recv.buf, [m * s for s in sizes], op=MPI.SUM)
        recv.after()
        return recv.array.reshape(y.shape[:axis] + (sizes[self.rank],) + y.shape[axis + 1:])


# ---- global <-> sharded parameters --------------------------------------------------
class Shard(NamedTuple):
    """How a parameter is cut over the channel ranks: block ``sizes`` along ``axis``."""
    sizes: tuple
    axis: int = 0


def _sizes_axis(shard):
    """A Shard, or a plain list of sizes along axis 0."""
    return (shard.sizes, shard.axis) if isinstance(shard, Shard) else (shard, 0)


def gather_full(channel, array, shard):
    """The global array from every rank's block (host NumPy, on every rank). ``shard``:
    the ``Shard`` that ``shard_model`` returned for it (a plain list: sizes along axis 0)."""
    sizes, axis = _sizes_axis(shard)
    host = np.ascontiguousarray(np.moveaxis(np.asarray(array), axis, 0))  # MPI gathers axis-0 blocks
    rest = host.shape[1:]
    inner = int(np.prod(rest, dtype=np.int64))
    out = np.empty((sum(sizes),) + rest, host.dtype)
    channel.comm.Allgatherv(host.reshape(-1), [out.reshape(-1), [s * inner for s in sizes]])
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def local_block(array, shard, rank):
    """This rank's block of a global array (what loading a checkpoint keeps)."""
    sizes, axis = _sizes_axis(shard)
    lo = sum(sizes[:rank])
    return array[(slice(None),) * axis + (slice(lo, lo + sizes[rank]),)]


# ---- the split layers -----------------------------------------------------------------
@contextmanager
def _swapped(obj, **attrs):
    """Set attributes of ``obj`` for the duration of a with block."""
    old = {k: getattr(obj, k) for k in attrs}
    vars(obj).update(attrs)
    try:
        yield
    finally:
        vars(obj).update(old)


def _block(x, axis, lo, hi):
    """Channels [lo, hi) of ``x`` along ``axis``, contiguous."""
    return array_module(x).ascontiguousarray(x[(slice(None),) * (axis % x.ndim) + (slice(lo, hi),)])


def _cut(value, shard, rank):
    """This rank's block of a Parameter or buffer, as its own copy (so the whole one is freed)."""
    if isinstance(value, Parameter):
        q = Parameter(_cut(value.data, shard, rank))
        q.requires_grad = value.requires_grad
        return q
    return local_block(value, shard, rank).copy()


def _take_channel_block(layer, sizes, rank):
    """Set a per-channel layer on a split activation to its block of channels (``sizes``:
    the blocks of every rank). A BatchNorm2d keeps its block of weight, bias and running
    statistics, which are per channel (its statistics are still summed over the data and
    spatial ranks, which share this block); a Dropout keys its mask on the global channel
    index. The others need nothing. Returns attribute -> Shard of what was cut."""
    if isinstance(layer, Dropout):
        layer.channel_offset = sum(sizes[:rank])
    if not isinstance(layer, BatchNorm2d):
        return {}
    if not min(sizes):  # its statistics kernels need a channel
        raise ValueError(f"{layer!r} between split layers cannot be cut into {len(sizes)} blocks of "
                         f"channels; use at most {sum(sizes)} channel ranks")
    shard = Shard(tuple(sizes), 0)
    names = [n for n in ("weight", "bias", "running_mean", "running_var") if getattr(layer, n) is not None]
    for name in names:
        setattr(layer, name, _cut(getattr(layer, name), shard, rank))
    layer.num_features = sizes[rank]
    return dict.fromkeys(names, shard)


class _Split:
    """Mixin: a Conv2d, Conv3d or Linear split over the channel ranks as its ``plan`` says.
    ``channel_axis``: where its activations hold the channels (the last in NHWC maps and
    (N, F) features, 1 in NCDHW volumes).

    ``comm_stats``: per collective, the bytes of the whole array it acted on and the
    seconds spent in it, training steps only (``python -m mpicnn.bench channel``)."""

    def _take_shard(self, channel, plan):
        C, c = channel.size, channel.rank
        self.channel, self.plan = channel, plan
        self.comm_stats = {f"{op}_{unit}": 0 for op in COLLECTIVES for unit in ("bytes", "s")}
        in_attr, out_attr = COUNTS[next(base for base in COUNTS if isinstance(self, base))]
        n_in, n_out = getattr(self, in_attr), getattr(self, out_attr)
        self.in_sizes, self.out_sizes = block_sizes(n_in, C), block_sizes(n_out, C)
        self.in_block, self.out_block = block_range(n_in, C, c), block_range(n_out, C, c)
        if self.weight_axis:  # weight (out, in, ...): input split
            attr, sizes, (lo, hi) = in_attr, self.in_sizes, self.in_block
        else:
            attr, sizes, (lo, hi) = out_attr, self.out_sizes, self.out_block
        setattr(self, attr, hi - lo)  # the base layer checks its input/output against its shard
        self.shards = {"weight": Shard(tuple(sizes), self.weight_axis)}
        if self.bias is not None and not self.weight_axis:  # an input split layer's bias is whole, added once
            self.shards["bias"] = Shard(tuple(sizes), 0)
        for name, shard in self.shards.items():
            setattr(self, name, _cut(getattr(self, name), shard, c))

    channel_axis = -1

    def _collective(self, op, x, *sizes):
        t0 = time.perf_counter()
        y = getattr(self.channel, op)(x, *sizes, **({"axis": self.channel_axis} if sizes else {}))
        t1 = time.perf_counter()
        events.count(t1 - t0)
        if self.training:  # training steps only: evaluation batches would skew the per-step figures
            nbytes = (x if op == "reduce_scatter" else y).nbytes
            self.comm_stats[op + "_s"] += t1 - t0
            self.comm_stats[op + "_bytes"] += nbytes
            rec = events.recorder
            if rec:
                rec.span("compute", f"channel {op} {rec.layer}", t0, t1, layer=rec.layer, bytes=int(nbytes))
        return y


class _OutputSplit(_Split):
    weight_axis = 0

    def _output(self, y):
        return y if self.plan.split_out else self._collective("allgather", y, self.out_sizes)

    def _output_grad(self, dy):
        return dy if self.plan.split_out else _block(dy, self.channel_axis, *self.out_block)

    def _input_grad(self, dx):  # partial: this rank's outputs only
        return None if dx is None else self._collective("allreduce", dx)


class _InputSplit(_Split):
    weight_axis = 1

    def _input(self, x):
        return x if self.plan.split_in else _block(x, self.channel_axis, *self.in_block)

    def _output(self, y):  # partial sums over this rank's input block
        split = self.plan.split_out
        y = self._collective("reduce_scatter", y, self.out_sizes) if split else self._collective("allreduce", y)
        if self.bias is not None:
            b = self.bias.data[slice(*self.out_block)] if split else self.bias.data
            y += b.reshape(b.shape + (1,) * (y.ndim - 1 - self.channel_axis % y.ndim))  # along the channels
        return y

    def _output_grad(self, dy):  # the weight and input gradients need every output's
        return self._collective("allgather", dy, self.out_sizes) if self.plan.split_out else dy

    def _input_grad(self, dx):  # complete for this rank's input block
        return dx if dx is None or self.plan.split_in else self._collective("allgather", dx, self.in_sizes)


class FilterParallelConv2d(_OutputSplit, Conv2d):
    def _forward(self, x):
        return self._output(super()._forward(x))

    def _backward(self, dy):
        return self._input_grad(super()._backward(self._output_grad(dy)))


class ChannelParallelConv2d(_InputSplit, Conv2d):
    def _forward(self, x):
        with _swapped(self, bias=None):  # partial sums: the bias is added once, after the sum
            y = super()._forward(self._input(x))
        return self._output(y)

    def _backward(self, dy):
        return self._input_grad(super()._backward(self._output_grad(dy)))


class NeuronParallelLinear(_OutputSplit, Linear):
    def forward(self, x):
        return self._output(super().forward(x))

    def backward(self, dy):
        return self._input_grad(super().backward(self._output_grad(dy)))


class RowParallelLinear(_InputSplit, Linear):
    def forward(self, x):
        with _swapped(self, bias=None):  # partial sums: the bias is added once, after the sum
            y = super().forward(self._input(x))
        return self._output(y)

    def backward(self, dy):
        return self._input_grad(super().backward(self._output_grad(dy)))


class FilterParallelConv3d(_OutputSplit, Conv3d):
    channel_axis = 1  # NCDHW

    def forward(self, x):
        return self._output(super().forward(x))

    def backward(self, dy):
        return self._input_grad(super().backward(self._output_grad(dy)))


class ChannelParallelConv3d(_InputSplit, Conv3d):
    channel_axis = 1  # NCDHW

    def forward(self, x):
        with _swapped(self, bias=None):  # partial sums: the bias is added once, after the sum
            y = super().forward(self._input(x))
        return self._output(y)

    def backward(self, dy):
        return self._input_grad(super().backward(self._output_grad(dy)))


CLASSES = {(Conv2d, "filter"): FilterParallelConv2d, (Conv2d, "channel"): ChannelParallelConv2d,
           (Conv3d, "filter"): FilterParallelConv3d, (Conv3d, "channel"): ChannelParallelConv3d,
           (Linear, "neuron"): NeuronParallelLinear, (Linear, "row"): RowParallelLinear}


def shard_model(model, channel, split="auto"):
    """Replace, in place, every Conv2d, Conv3d and Linear of ``model`` by its split copy, as
    ``plan_model(model, split)`` says; each keeps its Plan as ``layer.plan``. The
    per-channel layers of a plan's ``chain`` take their block of channels.

    Call on the full, identically initialised (or loaded) model on every rank; the
    parameter and buffer names stay those of the global model. Returns name -> ``Shard``
    (block sizes and axis) for every sharded parameter and buffer (BatchNorm running
    statistics), for checkpoints (``gather_full``, ``local_block``); those not named are
    whole on every rank.
    """
    plans = plan_model(model, split)
    shards = {}

    def walk(module, prefix):
        for name, child in list(module.named_children()):
            full = prefix + name
            plan = plans.get(full)
            if plan is None:
                walk(child, full + ".")
                continue
            new = object.__new__(CLASSES[type(child), plan.layout])
            new.__dict__.update(vars(child))
            new._take_shard(channel, plan)
            setattr(module, name, new)
            shards.update({f"{full}.{p}": s for p, s in new.shards.items()})
            for link in plan.chain:  # siblings of this layer in its Sequential
                cut = _take_channel_block(getattr(module, link[len(prefix):]), new.out_sizes, channel.rank)
                shards.update({f"{link}.{p}": s for p, s in cut.items()})

    walk(model, "")
    return shards
