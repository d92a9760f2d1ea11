"""Parameter server: throughput and accuracy against the staleness bound, with and without
a straggler. The real trainer under mpiexec on 3 ranks (2 workers, ``--parallel ps=1``),
one BLAS thread per rank.

A server makes version v + 1 only from both workers' gradients of step v, so over a long
run the slowest worker sets the pace whatever the bound: staleness hides waits (for
the server's reply, for a worker that is late now and then) rather than a worker that
is always slower. ``weights_age`` is how many steps old worker 0's weights were on average.
"""
import json
import sys

from ..parallel.launcher import mpi_env
from .scaling import interleaved, run_trainer


def bench_ps(staleness=(0, 2, 8), straggler=(None, "1:2.0"), model="lenet5", dataset="mnist5k", batch_size=64,
             epochs=3, steps=None, repeats=1):
    """One row per (straggler, staleness): images/s (median of ``repeats`` runs, interleaved
    over the settings so machine noise hits all alike), test accuracy and weights' age of
    the median run. ``straggler``: None or ``MPICNN_SLOW_RANK`` values (rank 1 is a worker);
    ``steps`` overrides ``epochs``."""
    length = ["--steps", str(steps)] if steps else ["--epochs", str(epochs)]
    args = ["--parallel", "ps=1", "--model", model, "--dataset", dataset, "--batch-size", str(batch_size),
            *length, "--eval-every", str(10 ** 9)]

    def launch(setting):
        slow, s = setting
        return run_trainer(3, args + ["--staleness", str(s)], mpi_env(MPICNN_SLOW_RANK=slow or ""))
    rows = []
    settings = [(slow, s) for slow in straggler for s in staleness]
    for (slow, s), (mid, all_runs) in interleaved(settings, repeats, launch).items():
        rows.append({"straggler": slow or "none", "staleness": s, "images_per_sec": mid["images_per_sec"],
                     "test_accuracy": mid["test_accuracy"], "weights_age": mid["mean_staleness"],
                     "all_runs": all_runs})
    return rows


if __name__ == "__main__":
    json.dump(bench_ps(), sys.stdout)
