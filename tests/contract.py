"""The correctness contract's test helpers: run a layout and the 1-rank run of the same
command line, compare their parameters, and assert only on figures every rank agrees on,
so a failing check cannot leave one rank waiting in a collective.

    def test_spatial_equals_serial():
        run = lambda comm: compare_with_serial(BASE + ARGV, "spatial=2x1", comm)
        assert agreed_max(on_ranks(2, run)) < 1e-9
"""
import traceback

import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import train

WORLD = MPI.COMM_WORLD
# Every contract run: float64 (so 1e-9 is meaningful), no progress bar, one evaluation batch.
BASE = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000"]

_SERIAL = {}  # argv -> the 1-rank run's parameters


def max_rel_diff(a, b):
    """Largest relative difference over the arrays of ``b`` (name -> array)."""
    return max(float(np.max(np.abs(a[n] - b[n])) / max(np.max(np.abs(b[n])), 1e-300)) for n in b)


def agreed_max(value):
    """The largest ``value`` over all ranks; NaN counts as infinite (max() would drop it)."""
    return WORLD.allreduce(float("inf") if np.isnan(value) else value, op=MPI.MAX)


def on_ranks(n, fn):
    """Run ``fn(comm)`` on groups of ``n`` ranks (the rest idle); the group's figure, or 0.
    An exception (a failed ``pytest.raises`` or ``pytest.fail`` too) counts as an infinite
    figure, so that this rank still meets the others in ``agreed_max`` (one raised inside a
    collective of the group still hangs it)."""
    comm = WORLD.Split(WORLD.Get_rank() // n)
    try:
        value = fn(comm) if comm.Get_size() == n else 0.0
    except (Exception, pytest.fail.Exception):
        traceback.print_exc()
        value = float("inf")
    comm.Free()
    return value


def params_of(result):
    """Copies of the parameters of a run's model on this rank (name -> array)."""
    return {n: p.data.copy() for n, p in result.model.named_parameters()}


def serial_params(argv):
    """The 1-rank run's parameters (global layout) for ``argv``, computed on every rank
    that asks (so all reach the parallel run equally warmed up), once per process."""
    key = tuple(argv)
    if key not in _SERIAL:
        _SERIAL[key] = train.run(list(argv), MPI.COMM_SELF).params
    return _SERIAL[key]


def compare_with_serial(argv, layout, comm):
    """Largest relative difference of this rank's parameters after ``argv`` run as
    ``layout`` on ``comm`` from those of the 1-rank run."""
    parallel = params_of(train.run(argv + ["--parallel", layout], comm))
    return max_rel_diff(parallel, serial_params(argv))
