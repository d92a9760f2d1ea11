"""Pipeline throughput and bubble: the real trainer under mpiexec, one BLAS thread per rank.

For each number of micro-batches M and each schedule, ``--parallel pipeline=S`` with
the same global batch; the row gives images/s, the speedup over the 1-rank run (no
micro-batches), the measured bubble (1 - busy/wall, mean over stages, from the run's
summary) and the ideal (S-1)/(M+S-1) of equal stages. Runs are interleaved so machine
noise hits every variant alike; medians are reported.
"""
import json
import sys

from ..parallel.launcher import mpi_env
from .scaling import interleaved, run_trainer


def bench_pipeline(micro_batches=(1, 2, 4, 8), stages=2, schedules=("gpipe", "1f1b"), model="lenet5",
                   dataset="mnist5k", batch_size=128, steps=30, repeats=1):
    args = ["--model", model, "--dataset", dataset, "--batch-size", str(batch_size), "--steps", str(steps),
            "--eval-every", str(10 ** 9)]
    variants = [(1, None, None)] + [(stages, m, kind) for m in micro_batches for kind in schedules]
    env = mpi_env()

    def launch(v):
        ranks, m, kind = v
        extra = [] if m is None else ["--parallel", f"pipeline={ranks}", "--micro-batches", str(m),
                                      "--pipeline-schedule", kind]
        return run_trainer(ranks, args + extra, env)
    rows = []
    for (ranks, m, kind), (mid, all_runs) in interleaved(variants, repeats, launch).items():
        pipe = mid.get("pipeline", {})
        rows.append({"ranks": ranks, "micro_batches": m or 1, "schedule": kind or "-",
                     "images_per_sec": mid["images_per_sec"], "bubble": pipe.get("bubble_mean"),
                     "bubble_ideal": pipe.get("bubble_ideal"), "all_runs": all_runs,
                     "busy_ms_per_step": pipe.get("busy_ms_per_step", []), "layers": pipe.get("layers", [])})
    base = rows[0]["images_per_sec"]
    for row in rows:
        row["speedup"] = row["images_per_sec"] / base
    return rows


if __name__ == "__main__":
    json.dump(bench_pipeline(), sys.stdout)
