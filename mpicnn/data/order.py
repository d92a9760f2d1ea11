"""Sample order: one global permutation per epoch, identical for every process layout.

``epoch_order(N, seed, epoch)`` is ``np.random.default_rng([seed, epoch]).permutation(N)``:
a pure function of its arguments, so every rank computes the same order without
communicating, and a run on any process grid (or resumed at any step) sees the same
global batches. Step ``k`` of an epoch uses ``order[k*B:(k+1)*B]``; the trainer
splits that global batch among its data-parallel ranks.

The last partial batch of an epoch is dropped (``steps_per_epoch = N // B``), so every
step has exactly ``B`` samples and the global batch splits the same way on every
layout; the dropped samples differ from epoch to epoch because the order does.
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
