"""Sample order: one global permutation per epoch, identical for every process layout.

``epoch_order(N, seed, epoch)`` is ``np.random.default_rng([seed, epoch]).permutation(N)``:
a pure function of its arguments, so every rank computes the same order without
communicating, and a run on any process grid (or resumed at any step) sees the same
global batches. Step ``k`` of an epoch uses ``order[k*B:(k+1)*B]``; the trainer
splits that global batch among its data-parallel ranks.

The last partial batch of an epoch is dropped (``steps_per_epoch = N // B``), so every
step has exactly ``B`` samples and the global batch splits the same way on every
layout; the dropped samples differ from epoch to epoch because the order does.

Fixed shards (``--data-shards K``): the training set is cut into K contiguous shards
(sizes differ by at most one sample) that never change, whatever the rank count. In
epoch e shard s is shuffled by ``default_rng([seed, e, s])``, and every global batch
takes B/K samples from each shard, laid out micro-batch by micro-batch and shard by
shard, so each batch mixes all shards, and a data rank that owns whole shards finds its
piece of every micro-batch in them. An epoch has ``min(shard size) // (B/K)`` steps.
"""
import numpy as np

from ..errors import UserError


def _nonneg_int(x, what):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < 0:
        raise UserError(f"{what} must be a non-negative integer, got {x!r}")
    return int(x)


def epoch_order(num_samples, seed, epoch):
    """The permutation (int64) of ``range(num_samples)`` used in ``epoch``."""
    n = _nonneg_int(num_samples, "number of samples")
    rng = np.random.default_rng([_nonneg_int(seed, "seed"), _nonneg_int(epoch, "epoch")])
    return rng.permutation(n).astype(np.int64, copy=False)


def steps_per_epoch(num_samples, batch_size):
    """Full batches per epoch (the last partial batch is dropped)."""
    n = _nonneg_int(num_samples, "number of samples")
    b = _nonneg_int(batch_size, "batch size")
    if b == 0:
        raise UserError("batch size must be at least 1")
    if b > n:
        raise UserError(f"batch size {b} is larger than the {n} training samples; use a batch of "
                        f"at most {n}")
    return n // b


def batch_indices(order, step_in_epoch, batch_size):
    """Global sample indices of step ``step_in_epoch`` of the epoch with ``order``."""
    k = _nonneg_int(step_in_epoch, "step in epoch")
    b = _nonneg_int(batch_size, "batch size")
    if b == 0:
        raise UserError("batch size must be at least 1")
    if (k + 1) * b > len(order):
        raise IndexError(f"step {k} with batch size {b} runs past the {len(order)} samples of the epoch "
                         f"({len(order) // b} full steps)")
    return order[k * b:(k + 1) * b]


def shard_bounds(num_samples, shards):
    """[(lo, hi)] of the K fixed shards: contiguous, sizes differ by at most one."""
    base, extra = divmod(num_samples, shards)
    return [(s * base + min(s, extra), (s + 1) * base + min(s + 1, extra)) for s in range(shards)]


def check_shards(num_samples, shards, batch_size, micro_batches=1):
    """UserError unless K shards of ``num_samples`` can feed batches of ``batch_size``
    cut into ``micro_batches`` (each takes the same count from every shard)."""
    if batch_size % (shards * micro_batches):
        per = f" times {micro_batches} micro-batches" if micro_batches > 1 else ""
        raise UserError(f"--data-shards {shards}: every batch takes the same number of samples from each "
                        f"shard{' in each micro-batch' if micro_batches > 1 else ''}, so --batch-size "
                        f"{batch_size} must be a multiple of {shards}{per}; use a batch of "
                        f"{shards * micro_batches * max(1, batch_size // (shards * micro_batches))}")
    smallest = num_samples // shards
    if smallest < batch_size // shards:
        raise UserError(f"--data-shards {shards}: shards of {smallest} samples cannot give {batch_size // shards} "
                        f"samples each to one batch of {batch_size}; use fewer shards or a smaller batch")


def sharded_steps(num_samples, shards, batch_size):
    """Full batches per epoch over K shards (each batch takes B/K from every shard)."""
    return (num_samples // shards) // (batch_size // shards)


def sharded_order(num_samples, shards, batch_size, micro_batches, seed, epoch):
    """The global sample order (int64, steps * B) of ``epoch`` over K fixed shards:
    step k's batch is ``order[k*B:(k+1)*B]``, micro-batch by micro-batch, and within
    each micro-batch shard by shard (B/(K*M) samples of each)."""
    check_shards(num_samples, shards, batch_size, micro_batches)
    steps, take = sharded_steps(num_samples, shards, batch_size), batch_size // (shards * micro_batches)
    seed, epoch = _nonneg_int(seed, "seed"), _nonneg_int(epoch, "epoch")
    per_shard = [lo + np.random.default_rng([seed, epoch, s]).permutation(hi - lo)[:steps * batch_size // shards]
                 for s, (lo, hi) in enumerate(shard_bounds(num_samples, shards))]
    # (steps, micro-batches, shards, samples): shard s fills its slot of every micro-batch
    order = np.stack([p.reshape(steps, micro_batches, take) for p in per_shard], axis=2)
    return order.reshape(-1).astype(np.int64, copy=False)
