"""Data-parallel throughput 1 -> N ranks: the real trainer under mpiexec, one BLAS
thread per rank, the same global batch, images/s read from its metrics; the machine's
ceiling for N ranks measured in the same run (N independent 1-rank trainers at 1/N of
the batch, at the same time: what N processes get from the cores, the memory system
and the Python interpreter with no communication at all); the lockstep bound (what of
that ceiling any synchronous trainer could keep on this machine, from traced ceiling
runs: ``lockstep_bound``); and the default job against PyTorch DDP on the same number
of processes (``bench_vs_ddp``)."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from ..parallel.launcher import mpi_command, mpi_env
from ..report.traces import RankTrace
from ..warmup import warmup_steps
from .report import run_failure


def run_trainer(n, args, env):
    """Run the trainer on n ranks; return its final metrics record."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.jsonl")
        cmd = mpi_command(n, "-m", "mpicnn.train", *args, "--no-progress", "--metrics", metrics)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise run_failure(" ".join(cmd), proc.stderr)
        return [json.loads(line) for line in open(metrics)][-1]


def run_ceiling(n, args, batch_size, env, trace_steps=None):
    """n independent 1-rank trainers at batch_size/n, started together; their summed
    images/s is what n ranks could reach with free communication. ``trace_steps``
    ("A:B"): each also traces those steps, and the record adds the lockstep bound of
    their step times (``lockstep_bound``)."""
    with tempfile.TemporaryDirectory() as tmp:
        procs, paths = [], []
        for i in range(n):
            metrics = os.path.join(tmp, f"m{i}.jsonl")
            traced = ["--trace", os.path.join(tmp, f"t{i}"), "--trace-steps", trace_steps] if trace_steps else []
            cmd = mpi_command(1, "-m", "mpicnn.train", *args, "--batch-size", str(batch_size // n),
                              "--no-progress", "--metrics", metrics, *traced)
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                          env=env))
            paths.append(metrics)
        for cmd_proc in procs:
            _, err = cmd_proc.communicate()
            if cmd_proc.returncode:
                raise run_failure("ceiling run", err)
        records = [[json.loads(line) for line in open(p)][-1] for p in paths]
        out = {"images_per_sec": sum(r["images_per_sec"] for r in records)}
        if trace_steps:
            seconds = [RankTrace(os.path.join(tmp, f"t{i}", "rank0.trace.json")).steps() for i in range(n)]
            common = sorted(set.intersection(*(set(s) for s in seconds)))
            out.update(lockstep_bound(np.array([[s[k]["dur"] for k in common] for s in seconds])))
        return out


def lockstep_bound(seconds):
    """What of their summed images/s n processes that ran at once, independently, would
    keep in lockstep with free communication: every step waiting for the slowest
    process's step of the same number, as a synchronous data-parallel step waits for
    its slowest rank. ``seconds``: (n processes, steps) step times, each process at the
    same batch. ``lockstep_bound``: at that equal split; ``lockstep_bound_balanced``:
    with the samples split in proportion to each process's mean speed (its times scaled
    by its share: a static balance removes a slower core's mean difference, not the
    step-to-step noise, and on noisy steps may even lose); ``rank_correlation``: the
    correlation of two processes' step times (0: each stalls on its own; 1: the machine
    slows both). Neither bound exceeds 1: a step is never shorter than its mean share."""
    n = len(seconds)
    means = seconds.mean(axis=1)
    ceiling = (1 / means).sum()  # images/s over the batch of one process
    share = n * (1 / means) / ceiling  # each process's batch, in units of the equal split
    out = {"lockstep_bound": float(n / seconds.max(axis=0).mean() / ceiling),
           "lockstep_bound_balanced": float(n / (seconds * share[:, None]).max(axis=0).mean() / ceiling)}
    if n == 2 and seconds.std(axis=1).all():
        out["rank_correlation"] = float(np.corrcoef(seconds)[0, 1])
    return out


def interleaved(variants, repeats, launch):
    """Run ``launch(variant)`` ``repeats`` times per variant, interleaved so machine noise
    hits every variant alike, in reversed order every other round (a, b, b, a, a, b, ...:
    on the shared machine the first run of a round was often the faster). Returns variant
    -> (the median run's final record, by images/s, with its other figures; every run's
    images/s, in round order)."""
    variants = list(variants)
    runs = {v: [] for v in variants}
    for i in range(repeats):
        for v in (variants if i % 2 == 0 else variants[::-1]):
            runs[v].append(launch(v))
    out = {}
    for v, records in runs.items():
        ordered = sorted(records, key=lambda r: r["images_per_sec"])
        out[v] = ordered[len(ordered) // 2], [round(r["images_per_sec"]) for r in records]
    return out


def bench_scaling(ranks=(1, 2), model="lenet5", dataset="mnist5k", batch_size=128, steps=60, repeats=3,
                  extra=()):
    """Images/s per rank count (medians of interleaved runs), the speedup of the medians,
    and for each n > 1 the machine's ceiling (``run_ceiling``, interleaved with the rest):
    ``ceiling_images_per_sec``, ``ceiling_speedup`` and ``of_ceiling`` (images/s over the
    ceiling's; 1.0 = communication and the layout cost nothing); and the lockstep bound,
    from ceiling runs that trace their timed steps (``lockstep_bound``, medians:
    ``lockstep_bound``, ``lockstep_bound_balanced``, ``rank_correlation``), with
    ``of_lockstep`` = of_ceiling over the bound: the share of what a synchronous step can
    keep on this machine that the run kept."""
    common = ["--model", model, "--dataset", dataset, "--steps", str(steps), "--eval-every", str(10 ** 9), *extra]
    args = common + ["--batch-size", str(batch_size)]
    env = mpi_env()
    variants = ([("ranks", n) for n in ranks] + [("ceiling", n) for n in ranks if n > 1]
                + [("lockstep", n) for n in ranks if n > 1])
    bounds = {n: [] for n in ranks}
    timed = f"{warmup_steps(0, steps)}:{steps}"  # the steps the trainer times

    def launch(variant):
        kind, n = variant
        if kind == "ranks":
            return run_trainer(n, args, env)
        if kind == "ceiling":
            return run_ceiling(n, common, batch_size, env)
        record = run_ceiling(n, common, batch_size, env, trace_steps=timed)
        bounds[n].append(record)
        return record

    runs = interleaved(variants, repeats, launch)
    rows = []
    for n in ranks:
        mid, all_runs = runs["ranks", n]
        rows.append({"ranks": n, "images_per_sec": mid["images_per_sec"], "all_runs": all_runs,
                     "comm_seconds": mid["comm_seconds"], "compute_seconds": mid["compute_seconds"]})
    base = rows[0]["images_per_sec"]
    for row in rows:
        row["speedup"] = row["images_per_sec"] / base
        if ("ceiling", row["ranks"]) in runs:
            ceiling, ceiling_runs = runs["ceiling", row["ranks"]]
            row.update(ceiling_images_per_sec=ceiling["images_per_sec"],
                       ceiling_speedup=ceiling["images_per_sec"] / base,
                       of_ceiling=row["images_per_sec"] / ceiling["images_per_sec"], ceiling_runs=ceiling_runs)
        if bounds[row["ranks"]]:
            for key in ("lockstep_bound", "lockstep_bound_balanced", "rank_correlation"):
                row[key] = float(np.median([b[key] for b in bounds[row["ranks"]] if key in b]))
            row["lockstep_runs"] = [round(b["lockstep_bound"], 3) for b in bounds[row["ranks"]]]
            row["of_lockstep"] = row["of_ceiling"] / row["lockstep_bound"]
    return rows


def bench_vs_ddp(ranks=(2,), model="lenet5", dataset="mnist5k", batch_size=64, steps=60, repeats=3):
    """The default job (lenet5 on mnist5k, global batch 64, Adam) on n ranks of mpicnn's
    trainer against PyTorch DDP (gloo) on n processes (``bench.ddp``), one thread per
    process, and each one's ceiling (n independent 1-process runs at 1/n of the batch at
    once), all interleaved. One row per n: images/s (medians), their ratio (above 1:
    mpicnn is faster), and each side's fraction of its own ceiling (how much of what n
    processes of it get from this machine its communication and synchrony keep)."""
    from .ddp import run_ddp, run_ddp_ceiling
    common = ["--model", model, "--dataset", dataset, "--steps", str(steps), "--eval-every", str(10 ** 9)]
    args = common + ["--batch-size", str(batch_size)]
    env = mpi_env()

    def launch(variant):
        side, kind, n = variant
        if side == "mpicnn":
            return run_trainer(n, args, env) if kind == "job" else run_ceiling(n, common, batch_size, env)
        run = run_ddp if kind == "job" else run_ddp_ceiling
        return run(n, model, dataset, batch_size, steps)

    variants = [(side, kind, n) for n in ranks for side in ("mpicnn", "torch") for kind in ("job", "ceiling")]
    runs = interleaved(variants, repeats, launch)
    rows = []
    for n in ranks:
        (ours, ours_all), (theirs, theirs_all) = runs["mpicnn", "job", n], runs["torch", "job", n]
        (ours_top, ours_top_all) = runs["mpicnn", "ceiling", n]
        (theirs_top, theirs_top_all) = runs["torch", "ceiling", n]
        rows.append({"ranks": n, "global_batch": batch_size, "mpicnn_images_per_sec": ours["images_per_sec"],
                     "ddp_images_per_sec": theirs["images_per_sec"],
                     "ratio": ours["images_per_sec"] / theirs["images_per_sec"],
                     "mpicnn_of_ceiling": ours["images_per_sec"] / ours_top["images_per_sec"],
                     "ddp_of_ceiling": theirs["images_per_sec"] / theirs_top["images_per_sec"],
                     "mpicnn_ceiling_images_per_sec": ours_top["images_per_sec"],
                     "ddp_ceiling_images_per_sec": theirs_top["images_per_sec"],
                     "torch_version": theirs["torch_version"], "mpicnn_runs": ours_all, "ddp_runs": theirs_all,
                     "mpicnn_ceiling_runs": ours_top_all, "ddp_ceiling_runs": theirs_top_all})
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
