"""Data-parallel throughput 1 -> N ranks: the real trainer under mpiexec, one BLAS
thread per rank, the same global batch, images/s read from its metrics; and the
default job against PyTorch DDP on the same number of processes (``bench_vs_ddp``)."""
import json
import os
import subprocess
import sys
import tempfile

from ..parallel.launcher import mpi_command, mpi_env


def run_trainer(n, args, env):
    """Run the trainer on n ranks; return its final metrics record."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.jsonl")
        cmd = mpi_command(n, "-m", "mpicnn.train", *args, "--no-progress", "--metrics", metrics)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return [json.loads(line) for line in open(metrics)][-1]


def interleaved(variants, repeats, launch):
    """Run ``launch(variant)`` ``repeats`` times per variant, interleaved (a, b, a, b, ...)
    so machine noise hits every variant alike. Returns variant -> (the median run's final
    record, by images/s, with its other figures; every run's images/s)."""
    runs = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            runs[v].append(launch(v))
    out = {}
    for v, records in runs.items():
        ordered = sorted(records, key=lambda r: r["images_per_sec"])
        out[v] = ordered[len(ordered) // 2], [round(r["images_per_sec"]) for r in records]
    return out


def bench_scaling(ranks=(1, 2), model="lenet5", dataset="mnist5k", batch_size=128, steps=60, repeats=3,
                  extra=()):
    """Images/s per rank count (medians of interleaved runs) and the speedup of the medians."""
    args = ["--model", model, "--dataset", dataset, "--batch-size", str(batch_size), "--steps", str(steps),
            "--eval-every", str(10 ** 9), *extra]
    env = mpi_env()
    rows = []
    for n, (mid, all_runs) in interleaved(ranks, repeats, lambda n: run_trainer(n, args, env)).items():
        rows.append({"ranks": n, "images_per_sec": mid["images_per_sec"], "all_runs": all_runs,
                     "comm_seconds": mid["comm_seconds"], "compute_seconds": mid["compute_seconds"]})
    base = rows[0]["images_per_sec"]
    for row in rows:
        row["speedup"] = row["images_per_sec"] / base
    return rows


def bench_vs_ddp(ranks=(2,), model="lenet5", dataset="mnist5k", batch_size=64, steps=60, repeats=3):
    """The default job (lenet5 on mnist5k, global batch 64, Adam) on n ranks of mpicnn's
    trainer against PyTorch DDP (gloo) on n processes (``bench.ddp``), one thread per
    process, runs interleaved. One row per n: both images/s (medians) and their ratio
    (above 1: mpicnn is faster)."""
    from .ddp import run_ddp
    args = ["--model", model, "--dataset", dataset, "--batch-size", str(batch_size), "--steps", str(steps),
            "--eval-every", str(10 ** 9)]
    env = mpi_env()

    def launch(variant):
        side, n = variant
        if side == "mpicnn":
            return run_trainer(n, args, env)
        return run_ddp(n, model, dataset, batch_size, steps)

    variants = [(side, n) for n in ranks for side in ("mpicnn", "torch")]
    runs = interleaved(variants, repeats, launch)
    rows = []
    for n in ranks:
        (ours, ours_all), (theirs, theirs_all) = runs["mpicnn", n], runs["torch", n]
        rows.append({"ranks": n, "global_batch": batch_size, "mpicnn_images_per_sec": ours["images_per_sec"],
                     "ddp_images_per_sec": theirs["images_per_sec"],
                     "ratio": ours["images_per_sec"] / theirs["images_per_sec"],
                     "torch_version": theirs["torch_version"], "mpicnn_runs": ours_all, "ddp_runs": theirs_all})
    return rows


def bench_allreduce_under_mpi(ranks=2):
    """Run mpicnn.bench.allreduce on ``ranks`` ranks and return its rows."""
    proc = subprocess.run(mpi_command(ranks, "-m", "mpicnn.bench.allreduce"), capture_output=True, text=True,
                          env=mpi_env())
    if proc.returncode:
        raise RuntimeError(f"allreduce bench failed:\n{proc.stderr}")
    return json.loads(proc.stdout)["rows"]


if __name__ == "__main__":
    json.dump(bench_scaling(), sys.stdout)
