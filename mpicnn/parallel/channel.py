"""Channel axis: filter-parallel convolutions and neuron-parallel linear layers.

What ships (``--parallel channel=C``, alone or with data=D and spatial=PxQ):

- Every Conv2d (groups=1) keeps only its block of output channels (filters) and its
  bias, ``block_range(out_channels, C, c)``: uneven counts give blocks that differ by
  at most one. Forward computes this rank's output channels from the full input and
  allgathers the blocks over the channel communicator, so the next layer sees the
  whole map. Backward takes this rank's slice of the output gradient; the input
  gradient is then partial (its filters only) and is summed over the channel ranks.
- Every Linear keeps its block of output features (neuron-parallel) the same way.
- Everything else (BatchNorm, pooling, activations, the loss) runs replicated on the
  full, gathered activations: each channel rank computes the same values, so its
  replicated gradients are already complete and are summed over sample x spatial
  only (``grid.replicas``), never over the channel axis. Sharded weights, their
  gradients and their optimizer state exist only as the shard.

Not (yet) done: channel-parallel (input-split) convolutions with reduce-scatter,
keeping activations channel-split through BatchNorm, and a per-layer choice by volume.

Layers do not see MPI: this module builds the sharded layers and gives them a
``ChannelComm`` that does the two collectives.
"""
import time

import numpy as np
from mpi4py import MPI

from ..backend import array_module
from ..nn.conv import Conv2d
from ..nn.linear import Linear
from ..nn.module import Module, Parameter
from .blocks import block_range, block_sizes
from .device_buffers import MPIBuffer


class ChannelComm:
    """Allgather along the last axis and sum over the channel ranks."""

    def __init__(self, comm):
        self.comm = comm
        self.size, self.rank = comm.Get_size(), comm.Get_rank()

    def gather_last(self, y, sizes):
        """Concatenate every rank's ``y`` (..., sizes[rank]) along the last axis."""
        xp = array_module(y)
        lead = y.shape[:-1]
        m = int(np.prod(lead, dtype=np.int64))
        send = MPIBuffer(xp.ascontiguousarray(y))
        recv = MPIBuffer(xp.empty(m * sum(sizes), y.dtype))
        send.before()
        self.comm.Allgatherv(send.buf.reshape(-1), [recv.buf, [m * s for s in sizes]])
        recv.after()
        blocks, offset = [], 0
        for s in sizes:
            blocks.append(recv.array[offset:offset + m * s].reshape(lead + (s,)))
            offset += m * s
        return xp.concatenate(blocks, axis=-1)

    def sum(self, x):
        x = array_module(x).ascontiguousarray(x)
        staged = MPIBuffer(x)
        staged.before()
        self.comm.Allreduce(MPI.IN_PLACE, staged.buf, op=MPI.SUM)
        staged.after()
        return x


def _shard(p, lo, hi):
    """A Parameter holding rows [lo, hi) of ``p`` (its own copy, so the full array is freed)."""
    q = Parameter(array_module(p.data).ascontiguousarray(p.data[lo:hi]))
    q.requires_grad = p.requires_grad
    return q


class _Sharded:
    """Mixin: output block [lo, hi) of ``total`` outputs on this channel rank.

    ``comm_stats``: bytes this rank received (allgather) or reduced (input gradient)
    and seconds in those calls, for ``python -m mpicnn.bench channel``."""

    def _take_shard(self, channel, total):
        self.channel = channel
        self.comm_stats = {"gather_bytes": 0, "sum_bytes": 0, "gather_s": 0.0, "sum_s": 0.0}
        self.shard_sizes = block_sizes(total, channel.size)
        self.shard_lo, self.shard_hi = block_range(total, channel.size, channel.rank)
        self.weight = _shard(self.weight, self.shard_lo, self.shard_hi)
        if self.bias is not None:
            self.bias = _shard(self.bias, self.shard_lo, self.shard_hi)

    def _gather(self, y):
        t0 = time.perf_counter()
        y = self.channel.gather_last(y, self.shard_sizes)
        if self.training:  # training steps only: evaluation batches would skew the per-step figures
            self.comm_stats["gather_s"] += time.perf_counter() - t0
            self.comm_stats["gather_bytes"] += y.nbytes
        return y

    def _sum(self, dx):
        if dx is None:
            return None
        t0 = time.perf_counter()
        dx = self.channel.sum(dx)
        self.comm_stats["sum_s"] += time.perf_counter() - t0
        self.comm_stats["sum_bytes"] += dx.nbytes
        return dx


class FilterParallelConv2d(_Sharded, Conv2d):
    """Conv2d holding its block of filters; input and output are whole maps (see module doc)."""

    def _forward(self, x):
        return self._gather(super()._forward(x))

    def _backward(self, dy):
        dx = super()._backward(array_module(dy).ascontiguousarray(dy[..., self.shard_lo:self.shard_hi]))
        return self._sum(dx)


class NeuronParallelLinear(_Sharded, Linear):
    """Linear holding its block of output features; input and output are whole."""

    def forward(self, x):
        out, self.out_features = self.out_features, self.shard_hi - self.shard_lo
        try:
            y = super().forward(x)
        finally:
            self.out_features = out
        return self._gather(y)

    def backward(self, dy):
        out, self.out_features = self.out_features, self.shard_hi - self.shard_lo
        try:
            dx = super().backward(array_module(dy).ascontiguousarray(dy[..., self.shard_lo:self.shard_hi]))
        finally:
            self.out_features = out
        return self._sum(dx)


def _sharded_copy(layer, cls, channel, total):
    new = object.__new__(cls)
    new.__dict__.update(vars(layer))
    new._take_shard(channel, total)
    return new


def shard_model(model, channel, split="filter"):
    """Replace, in place, every Conv2d and Linear of ``model`` by its sharded copy.

    Call on the full, identically initialised (or loaded) model on every rank; the
    parameter names stay those of the global model. Returns the sharded names, each
    with the axis-0 block this rank holds, for checkpoints (``gather_full``).
    """
    shards = {}

    def walk(module, prefix):
        for name, child in list(module.named_children()):
            full = prefix + name
            new = None
            if type(child) is Conv2d:
                if child.groups != 1:
                    raise ValueError(f"layer {full} ({child!r}): grouped convolutions cannot be split "
                                     "by filters here; use --parallel data=N or spatial=PxQ")
                new = _sharded_copy(child, FilterParallelConv2d, channel, child.out_channels)
            elif type(child) is Linear:
                new = _sharded_copy(child, NeuronParallelLinear, channel, child.out_features)
            if new is not None:
                setattr(module, name, new)
                for pname in ("weight", "bias"):
                    if getattr(new, pname) is not None:
                        shards[f"{full}.{pname}"] = new.shard_sizes
            else:
                walk(child, full + ".")

    if isinstance(model, Module):
        walk(model, "")
    return shards


def gather_full(channel, array, sizes):
    """The global array from every rank's axis-0 block (host NumPy, on every rank)."""
    host = np.ascontiguousarray(np.asarray(array))
    rest = host.shape[1:]
    inner = int(np.prod(rest, dtype=np.int64))
    out = np.empty((sum(sizes),) + rest, host.dtype)
    channel.comm.Allgatherv(host.reshape(-1), [out.reshape(-1), [s * inner for s in sizes]])
    return out


def local_block(array, sizes, rank):
    """This rank's axis-0 block of a global array (what loading a checkpoint keeps)."""
    lo = sum(sizes[:rank])
    return array[lo:lo + sizes[rank]]
