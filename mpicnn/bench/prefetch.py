"""``python -m mpicnn.bench prefetch``: what ``--prefetch`` does to the default job.

The default job (lenet5 on mnist5k, global batch 64, 30 epochs) on each of ``ranks``
rank counts, without and with ``--prefetch``, in pairs whose order alternates (off-on,
on-off, ...): on this shared machine the first run of a pair was often the faster one.
Per rank count: images/s of both (medians), the median of the pairs' ratios (on over
off), and the data time of both (medians; with prefetch it is the time the step waited
for its batch) and their ratio. With one rank the reader thread has a core of its own;
with as many ranks as cores it takes its rank's core for the read it hides.
"""
import statistics

from ..parallel.launcher import mpi_env
from .scaling import run_trainer


def bench_prefetch(ranks=(1, 2), repeats=6, steps=None):
    """One row per rank count (see the module docstring); ``steps`` shortens the job."""
    args = ["--steps", str(steps)] if steps else []
    env = mpi_env()
    rows = []
    for n in ranks:
        runs = {False: [], True: []}
        for i in range(repeats):
            for prefetch in ((False, True) if i % 2 == 0 else (True, False)):
                runs[prefetch].append(run_trainer(n, args + (["--prefetch"] if prefetch else []), env))
        ips = {k: [r["images_per_sec"] for r in v] for k, v in runs.items()}
        data = {k: [r["data_seconds"] for r in v] for k, v in runs.items()}
        off_data, on_data = statistics.median(data[False]), statistics.median(data[True])
        rows.append({"ranks": n, "images_per_sec": statistics.median(ips[False]),
                     "images_per_sec_prefetch": statistics.median(ips[True]),
                     "pair_ratio_median": statistics.median(b / a for a, b in zip(ips[False], ips[True])),
                     "data_seconds": off_data, "waited_seconds_prefetch": on_data,
                     "waited_of_data": on_data / off_data if off_data else float("nan"),
                     "runs": [round(v) for v in ips[False]], "runs_prefetch": [round(v) for v in ips[True]]})
    return rows
