"""``python -m mpicnn.bench plan``: the planner against the real trainer.

Runs the validation matrix (``CASES``: convnet at 64^2 and 256^2, lenet5 and resnet8 on
1 rank, data=2, spatial=2x1 and 1x2, channel=2 under each --channel-split, pipeline=2
with 1 and 4 micro-batches, at two batch sizes where affordable) through the trainer
under ``mpiexec`` with one BLAS thread per rank, and prints per case the predicted and
measured step time (the slowest rank's CPU seconds per step, and the wall clock's median
step beside it: ``measure``; the faster of two passes over the matrix) and memory per rank (peak resident set of the training loop, before
the final evaluation, against the prediction for the training steps with the data cache
pages the run touched), then
the error summary: median and worst step-time error, median memory error, and for each
problem whether the planner's pick among the measured 2-rank layouts is within 10% of
the fastest measured one and not slower than data=2 by more than 10%. The machine file
is ``--machine`` or, without one, a calibration run first (``bench-results/machine.json``).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

from ..parallel.launcher import mpi_command, mpi_env
from ..parallel.spec import parse_parallel
from ..plan import Layout, Machine, Problem, predict
from ..warmup import warmup_steps
from .report import run_failure, table, write_json

ALL2 = [("data=2", 1, "auto"), ("spatial=2x1", 1, "auto"), ("spatial=1x2", 1, "auto"), ("channel=2", 1, "auto"),
        ("channel=2", 1, "filter"), ("channel=2", 1, "channel"), ("pipeline=2", 1, "auto"),
        ("pipeline=2", 4, "auto")]
NO_SPATIAL = [c for c in ALL2 if not c[0].startswith("spatial")]  # lenet5 flattens its maps
# (model, dataset, batch sizes, steps, layouts beside the 1-rank run)
CASES = [
    ("convnet", "shapes:64", (16, 64), 16, ALL2),
    ("convnet", "shapes:256", (8,), 8, [("data=2", 1, "auto"), ("spatial=2x1", 1, "auto"),
                                        ("channel=2", 1, "auto"), ("pipeline=2", 4, "auto")]),
    ("lenet5", "mnist5k", (64, 256), 24, NO_SPATIAL),
    ("resnet8", "shapes:32", (32,), 16, [("data=2", 1, "auto"), ("spatial=2x1", 1, "auto"),
                                         ("spatial=1x2", 1, "auto"), ("channel=2", 1, "auto"),
                                         ("channel=2", 1, "filter"), ("pipeline=2", 1, "auto"),
                                         ("pipeline=2", 4, "auto")]),
]
PICK_TOLERANCE = 0.10
PASSES = 2


def cases(only=None):
    """(label, model, dataset, batch, steps, ranks, parallel, micro_batches, split) of the matrix."""
    out = []
    for model, dataset, batches, steps, layouts in CASES:
        for batch in batches:
            for ranks, (parallel, m, split) in [(1, ("data=1", 1, "auto"))] + [(2, l) for l in layouts]:
                label = f"{model} {dataset} B={batch} {parallel}" + (f" M={m}" if m > 1 else "") + (
                    f" {split}" if parallel.startswith("channel") else "")
                if only is None or only in label:
                    out.append((label, model, dataset, batch, steps, ranks, parallel, m, split))
    return out


def step_seconds(records, batch, steps):
    """The median step of a run, from its metrics records of every step (--log-every 1):
    each holds the images/s of the timed steps so far, so the timed seconds so far are
    their images over it, and a step's time is the difference. The median leaves out
    the steps another process's burst of work stretched on a shared machine."""
    warmup = warmup_steps(0, steps)
    elapsed = [(r["step"] - warmup) * batch / r["images_per_sec"] for r in records
               if "lr" in r and r["step"] > warmup]  # step records (the summary repeats the last)
    return statistics.median(b - a for a, b in zip([0.0] + elapsed, elapsed))


def run_steps(ranks, args, env):
    """Run the trainer on ``ranks`` ranks with a metrics record every step: (records, summary)."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.jsonl")
        cmd = mpi_command(ranks, "-m", "mpicnn.train", *args, "--no-progress", "--log-every", "1",
                          "--metrics", metrics)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise run_failure(" ".join(cmd), proc.stderr)
        records = [json.loads(line) for line in open(metrics)]
    return records, records[-1]


def measure(case, env):
    """(CPU seconds per step, median step seconds, mean step seconds, peak resident bytes
    per rank) of a case: the slowest rank's CPU time per timed step is what the planner
    is checked on, the step of a machine the job has to itself (on the shared 2-core
    machine the wall clock also counts the other users' turns on the cores, which the
    median step only partly leaves out)."""
    label, model, dataset, batch, steps, ranks, parallel, m, split = case
    args = ["--model", model, "--dataset", dataset, "--batch-size", str(batch), "--steps", str(steps),
            "--parallel", parallel, "--micro-batches", str(m), "--channel-split", split,
            "--eval-every", str(10 ** 9)]
    records, summary = run_steps(ranks, args, env)
    return (summary["cpu_seconds_per_step"], step_seconds(records, batch, steps), batch / summary["images_per_sec"],
            summary["peak_rss_mb"] * 2 ** 20)


def summarize(rows):
    """The error summary and, per problem, the pick check."""
    step_err = [abs(r["predicted_step_ms"] - r["measured_step_ms"]) / r["measured_step_ms"] for r in rows]
    wall_err = [abs(r["predicted_step_ms"] - r["wall_median_step_ms"]) / r["wall_median_step_ms"] for r in rows]
    mem_err = [abs(r["predicted_memory_mb"] - r["measured_memory_mb"]) / r["measured_memory_mb"] for r in rows]
    picks = []
    problems = {}
    for r in rows:
        if r["ranks"] == 2:
            problems.setdefault(r["problem"], []).append(r)
    for problem, group in problems.items():
        pick = min(group, key=lambda r: r["predicted_step_ms"])
        fastest = min(group, key=lambda r: r["measured_step_ms"])
        data = next((r for r in group if r["parallel"] == "data=2"), None)
        picks.append({"problem": problem, "pick": pick["layout"], "fastest_measured": fastest["layout"],
                      "pick_vs_fastest": pick["measured_step_ms"] / fastest["measured_step_ms"],
                      "pick_vs_data": pick["measured_step_ms"] / data["measured_step_ms"] if data else None})
    summary = {"cases": len(rows), "median_step_error": statistics.median(step_err), "worst_step_error": max(step_err),
               "median_wall_step_error": statistics.median(wall_err), "worst_wall_step_error": max(wall_err),
               "median_memory_error": statistics.median(mem_err),
               "picks_within_10pct": all(p["pick_vs_fastest"] <= 1 + PICK_TOLERANCE for p in picks),
               "picks_not_worse_than_data": all(p["pick_vs_data"] is None or p["pick_vs_data"] <= 1 + PICK_TOLERANCE
                                                for p in picks)}
    return summary, picks


def machine_for(args):
    if args.machine:
        return Machine.load(args.machine), args.machine
    path = os.path.join("bench-results", "machine.json")
    os.makedirs("bench-results", exist_ok=True)
    cmd = mpi_command(2, "-m", "mpicnn.bench", "calibrate", "-o", path)
    proc = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True)
    if proc.returncode:
        raise run_failure(" ".join(cmd), proc.stderr)
    print(proc.stdout.strip().splitlines()[-1])
    return Machine.load(path), path


def main(args, json_path):
    machine, path = machine_for(args)
    env = mpi_env()
    matrix = cases(args.cases)
    # PASSES passes over the whole matrix, each case's fastest figures kept: noise only
    # adds time, and another user's burst of work rarely hits a case in both passes.
    measured, loads = {}, []
    for n in range(PASSES):
        for case in matrix:
            figures = measure(case, env)
            old = measured.get(case[0], figures)
            measured[case[0]] = tuple(min(a, b) for a, b in zip(old[:3], figures[:3])) + (max(old[3], figures[3]),)
            print(f"pass {n + 1}/{PASSES} {case[0]}: {1e3 * figures[0]:.1f} ms of CPU per step, wall median "
                  f"{1e3 * figures[1]:.1f} ms, {figures[3] / 2 ** 20:.0f} MiB", flush=True)
        loads.append(os.getloadavg())
    rows = []
    for case in matrix:
        label, model, dataset, batch, steps, ranks, parallel, m, split = case
        problem = Problem(model, dataset, batch)
        p = predict(problem, Layout(parse_parallel(parallel, ranks), m, split), machine)
        measured_step, median_step, mean_step, measured_memory = measured[label]
        # The trainer's peak_rss_mb is taken before the final evaluation, and the data
        # cache's pages exist only for the samples a rank read: compare like with like.
        predicted_memory = p.training_memory_after(steps, problem.num_train)
        rows.append({"layout": label, "problem": f"{model} {dataset} B={batch}", "ranks": ranks,
                     "parallel": parallel, "predicted_step_ms": 1e3 * p.step_seconds,
                     "measured_step_ms": 1e3 * measured_step, "wall_median_step_ms": 1e3 * median_step,
                     "wall_mean_step_ms": 1e3 * mean_step,
                     "step_error": (p.step_seconds - measured_step) / measured_step,
                     "predicted_memory_mb": predicted_memory / 2 ** 20, "measured_memory_mb": measured_memory / 2 ** 20})
        print(f"{label}: predicted {rows[-1]['predicted_step_ms']:.1f} ms, measured "
              f"{rows[-1]['measured_step_ms']:.1f} ms of CPU ({100 * rows[-1]['step_error']:+.0f}%; wall median "
              f"{rows[-1]['wall_median_step_ms']:.1f} ms), memory {rows[-1]['predicted_memory_mb']:.0f} / "
              f"{rows[-1]['measured_memory_mb']:.0f} MiB", flush=True)
    summary, picks = summarize(rows)
    load = os.getloadavg()
    table(f"planner vs trainer (machine file {path}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", rows)
    table("the pick among the measured 2-rank layouts", picks)
    print("\n" + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    write_json(json_path, {"plan": rows, "picks": picks, "summary": summary, "machine": path,
                           "load_average": load, "load_average_after_each_pass": loads,
                           "command": " ".join(sys.argv)})
    return 0
