"""``mpiexec -n 2 python -m mpicnn.bench calibrate -o machine.json``: measure this machine
for the planner (``mpicnn.plan``; README, "Which layout should I run?").

``training.calibration.measure_machine`` times the layers of the zoo's lenet5, convnet
and resnet8 (or ``--models``), the optimizer, the batch read and the messages on the
ranks it is launched with; this adds how a real trainer step compares with the table and
what memory a trainer process holds besides its arrays (two short real 1-rank runs of
each model on every rank at once: per model a scale and a per-step cost; from the
first model's, the baseline and the allocator's slack) and writes the file
(``trainer_fit``). ``--quick`` times fewer sizes (a few seconds).
"""
import io
import json
import os
import tempfile
import time
from contextlib import redirect_stdout

import numpy as np

from ..io.atomic import atomic_path
from ..plan.machine import Machine
from ..training.calibration import MODELS, measure_machine


# Two batches per calibration model, far apart and a second or two of steps each; a
# model not listed here (--models) runs at DEFAULT_FIT_BATCHES.
FIT_BATCHES = {"lenet5": (16, 512), "convnet": (4, 16), "resnet8": (8, 32)}
DEFAULT_FIT_BATCHES, FIT_STEPS = (4, 16), 16


def trainer_runs(comm_self, dtype, models):
    """Two short real 1-rank runs of each of ``models`` ((name, dataset) pairs, at
    ``FIT_BATCHES``), the first thing this process does: {name: [(batch, seconds per
    step, peak resident bytes after it)]}. Evaluation is kept small: each peak is its
    training steps'."""
    from ..backend import gpu_count
    from ..train import run
    # As a default trainer run is (--backend auto, which imports CuPy to look for a GPU:
    # ~20 MiB of the baseline), while that resolves to the NumPy backend the table times.
    backend = "auto" if gpu_count() == 0 else "numpy"
    runs = {}
    for name, dataset in models:
        for batch in FIT_BATCHES.get(name, DEFAULT_FIT_BATCHES):
            with tempfile.TemporaryDirectory() as tmp, redirect_stdout(io.StringIO()):  # its log lines are not ours
                result = run(["--model", name, "--dataset", dataset, "--batch-size", str(batch), "--steps",
                              str(FIT_STEPS), "--dtype", dtype, "--no-progress", "--eval-every", str(10 ** 9),
                              "--eval-batch-size", "8", "--metrics", os.path.join(tmp, "m.jsonl"),
                              "--backend", backend], comm_self)
            # CPU seconds per step, as bench plan measures the runs it checks the planner
            # against: the step without other processes' turns on a shared machine's cores.
            runs.setdefault(name, []).append((batch, result.summary["cpu_seconds_per_step"],
                                              result.summary["peak_rss_mb"] * 2 ** 20))
    return runs


def trainer_fit(spec, model, dataset, runs, dtype):
    """(scale, seconds, baseline bytes, allocator slack) from one model's two
    ``trainer_runs``.

    Time: a trainer step against the table's prediction, fitted as ``measured = seconds
    + scale * predicted``. ``scale`` holds what isolated layer timings miss (caches the
    other layers of a step evicted, a shared machine's waits, the first epoch's reads
    from the file), which differs between models: LeNet-5's small layers lose more to
    it than a convnet's large ones; ``seconds`` the loop, loss, clocks and zeroing.

    Memory: each run's peak resident bytes against its predicted arrays (with the data
    cache pages it touched), fitted as ``peak = baseline + arrays + (slack - 1) *
    activations``: the larger batch differs from the smaller by its activations, which
    give the slope; what is left at no activations is the process's own memory."""
    from ..parallel.spec import ParallelSpec
    from ..plan import Layout, Problem, predict
    points = []
    for batch, measured, rss in runs:
        problem = Problem(model, dataset, batch, dtype, eval_batch_size=8)
        p = predict(problem, Layout(ParallelSpec()), Machine({**spec, "baseline_bytes": 0.0, "allocator_slack": 1.0,
                                                              "trainer_fits": {}}))
        arrays = p.training_memory_after(FIT_STEPS, problem.num_train)
        points.append((p.compute_seconds + p.other_seconds, measured, rss, arrays,
                       p.memory_parts["training_activations"]))
    (p1, m1, r1, a1, act1), (p2, m2, r2, a2, act2) = points
    scale = min(max((m2 - m1) / (p2 - p1), 0.8), 3.0) if p2 > p1 else 1.0
    # The heap cannot hold less than what was allocated: slack >= 1.
    slack = max(1.0 + ((r2 - a2) - (r1 - a1)) / (act2 - act1), 1.0) if act2 > act1 else 1.0
    baseline = max(r1 - a1 - (slack - 1.0) * act1, 0.0)
    return scale, max(m1 - scale * p1, 0.0), baseline, slack


def calibrate(comm, comm_self, models=MODELS, dtypes=("float32",), quick=False):
    """The machine description (a dict, see ``plan.machine``), the same on every rank.
    Each calibrated model keeps its own step fit (``trainer_fits``); ``compute_scale`` and
    ``step_overhead`` hold their medians, for models not calibrated. Memory is fitted to
    the first model's runs (LeNet-5's by default: its two batches differ most in
    activations against their arrays)."""
    from ..parallel.collectives import gather_objects
    t0 = time.perf_counter()
    runs = trainer_runs(comm_self, dtypes[0], models)
    spec = measure_machine(comm, models, dtypes, quick)
    fits = {name: gather_objects(comm, trainer_fit(spec, name, dataset, runs[name], dtypes[0]))
            for name, dataset in models}
    spec["trainer_fits"] = {name: {key: float(np.median([f[i] for f in per_rank]))
                                   for i, key in enumerate(("compute_scale", "step_overhead"))}
                            for name, per_rank in fits.items()}
    for key in ("compute_scale", "step_overhead"):
        spec[key] = float(np.median([f[key] for f in spec["trainer_fits"].values()]))
    first = fits[models[0][0]]
    for i, key in ((2, "baseline_bytes"), (3, "allocator_slack")):
        spec[key] = float(np.median([f[i] for f in first]))
    spec["calibration_seconds"] = time.perf_counter() - t0
    return spec


def main(args):
    from .. import allocator
    from ..parallel.collectives import self_comm, world
    # Malloc as a trainer process has it (train.main): the runs and tables here are what
    # the planner predicts trainer runs from.
    allocator.tune()
    comm = world()
    models = MODELS
    if args.models:
        known = dict(MODELS)
        models = tuple((m, known.get(m, "shapes:32")) for m in args.models.split(","))
    spec = calibrate(comm, self_comm(), models, dtypes=args.dtypes, quick=args.quick)
    if comm.Get_rank() == 0:
        fit_text = "; ".join(f"{name} {f['step_overhead'] * 1e3:.2f} ms + {f['compute_scale']:.2f} x layers"
                             for name, f in spec["trainer_fits"].items())
        with atomic_path(args.output) as tmp, open(tmp, "w") as f:  # all of it or nothing
            json.dump(spec, f, indent=1)
        print(f"mpicnn: calibrated {comm.Get_size()} rank(s) in {spec['calibration_seconds']:.1f} s; "
              f"allreduce alpha {spec['intra'].get('allreduce', spec['intra']).get('alpha', 0) * 1e6:.1f} us, "
              f"trainer = {fit_text}, "
              f"{spec['baseline_bytes'] / 2 ** 20:.0f} MiB + {spec['allocator_slack']:.2f} x activations; "
              f"wrote {args.output}")
    return 0
