"""The correctness contract's test helpers: compare a layout's parameters with the 1-rank
run's, and assert only on figures every rank agrees on, so a failing check cannot leave
one rank waiting in a collective."""
import traceback

import numpy as np
from mpi4py import MPI

WORLD = MPI.COMM_WORLD


def max_rel_diff(a, b):
    """Largest relative difference over the arrays of ``b`` (name -> array)."""
    return max(float(np.max(np.abs(a[n] - b[n])) / max(np.max(np.abs(b[n])), 1e-300)) for n in b)


def agreed_max(value):
    """The largest ``value`` over all ranks; NaN counts as infinite (max() would drop it)."""
    return WORLD.allreduce(float("inf") if np.isnan(value) else value, op=MPI.MAX)


def on_ranks(n, fn):
    """Run ``fn(comm)`` on groups of ``n`` ranks (the rest idle); the group's figure, or 0.
    An exception counts as an infinite figure, so that this rank still meets the others in
    ``agreed_max`` (one raised inside a collective of the group still hangs it)."""
    comm = WORLD.Split(WORLD.Get_rank() // n)
    try:
        value = fn(comm) if comm.Get_size() == n else 0.0
    except Exception:
        traceback.print_exc()
        value = float("inf")
    comm.Free()
    return value
