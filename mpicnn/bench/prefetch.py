"""``python -m mpicnn.bench prefetch``: what ``--prefetch`` does to the default job.

The default job (lenet5 on mnist5k, global batch 64, 30 epochs) on each of ``ranks``
rank counts, without and with ``--prefetch``, in pairs (``scaling.interleaved``: the
order alternates). Per rank count: images/s of both (medians), the median of the pairs'
ratios (on over off), and the data time of both (medians; with prefetch it is the time
the step waited for its batch) and their ratio. With one rank the reader thread has a
core of its own; with as many ranks as cores it takes its rank's core for the read it
hides.
"""
import statistics

from ..parallel.launcher import mpi_env
from .scaling import interleaved, run_trainer


def bench_prefetch(ranks=(1, 2), repeats=6, steps=None):
    """One row per rank count (see the module docstring); ``steps`` shortens the job."""
    args = ["--steps", str(steps)] if steps else []
    env = mpi_env()
    rows = []
    for n in ranks:
        records = {False: [], True: []}  # every run's final record, in round order

        def launch(prefetch):
            records[prefetch].append(run_trainer(n, args + (["--prefetch"] if prefetch else []), env))
            return records[prefetch][-1]
        runs = interleaved((False, True), repeats, launch)
        off, on = runs[False][1], runs[True][1]
        off_data, on_data = (statistics.median(r["data_seconds"] for r in records[k]) for k in (False, True))
        rows.append({"ranks": n, "images_per_sec": statistics.median(off),
                     "images_per_sec_prefetch": statistics.median(on),
                     "pair_ratio_median": statistics.median(b / a for a, b in zip(off, on)),
                     "data_seconds": off_data, "waited_seconds_prefetch": on_data,
                     "waited_of_data": on_data / off_data if off_data else float("nan"),
                     "runs": off, "runs_prefetch": on})
    return rows
