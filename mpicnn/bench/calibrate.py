"""``mpiexec -n 2 python -m mpicnn.bench calibrate -o machine.json``: measure this machine
for the planner (``mpicnn.plan``; README, "Which layout should I run?").

``training.calibration.measure_machine`` times the layers of the zoo's lenet5, convnet
and resnet8 (or ``--models``), the optimizer, the batch read and the messages on the
ranks it is launched with; this adds how a real trainer step compares with the table (two
short real 1-rank runs on every rank at once: a scale and a per-step cost) and
writes the file (``trainer_fit``). ``--quick`` times fewer sizes (a few seconds).
"""
import io
import json
import os
from contextlib import redirect_stdout
import tempfile
import time

import numpy as np

from ..plan.machine import Machine
from ..training.calibration import MODELS, measure_machine


def trainer_fit(spec, comm_self, dtype, batches=(16, 128), steps=16):
    """(scale, seconds): a trainer step measured against the table's prediction, fitted
    as ``measured = seconds + scale * predicted compute`` over two real 1-rank runs of
    lenet5 (batch ``batches``). ``scale`` holds what isolated layer timings miss (caches
    the other layers of a step evicted); ``seconds`` the loop, loss, clocks and zeroing."""
    from ..parallel.spec import ParallelSpec
    from ..plan import Layout, Problem, predict
    from ..train import run
    points = []
    for batch in batches:
        with tempfile.TemporaryDirectory() as tmp, redirect_stdout(io.StringIO()):  # its log lines are not ours
            result = run(["--model", "lenet5", "--dataset", "mnist5k", "--batch-size", str(batch), "--steps",
                          str(steps), "--dtype", dtype, "--no-progress", "--eval-every", str(10 ** 9),
                          "--metrics", os.path.join(tmp, "m.jsonl"), "--backend", "numpy"], comm_self)
        p = predict(Problem("lenet5", "mnist5k", batch, dtype), Layout(ParallelSpec()), Machine(spec))
        points.append((p.compute_seconds + p.other_seconds, batch / result.summary["images_per_sec"]))
    (p1, m1), (p2, m2) = points
    scale = min(max((m2 - m1) / (p2 - p1), 0.8), 3.0) if p2 > p1 else 1.0
    return scale, max(m1 - scale * p1, 0.0)


def baseline_bytes(comm_self, dtype):
    """Resident bytes of a trainer rank that are not the planner's arrays: the peak RSS
    of a tiny real run (the first thing this process does) minus its predicted arrays."""
    from ..parallel.spec import ParallelSpec
    from ..plan import Layout, Problem, predict
    from ..train import run
    argv = ["--model", "lenet5", "--dataset", "mnist5k", "--batch-size", "8", "--steps", "2", "--dtype", dtype,
            "--no-progress", "--eval-batch-size", "8", "--backend", "numpy"]
    with redirect_stdout(io.StringIO()):
        rss = run(argv, comm_self).summary["peak_rss_mb"] * 2 ** 20
    bare = Machine({"compute": {"flops": 1.0, "bandwidth": 1.0}, "intra": {"alpha": 0.0, "beta": 0.0},
                    "baseline_bytes": 0.0})
    arrays = predict(Problem("lenet5", "mnist5k", 8, dtype, eval_batch_size=8), Layout(ParallelSpec()), bare)
    return max(rss - arrays.array_bytes, 0.0)


def calibrate(comm, comm_self, models=MODELS, dtypes=("float32",), quick=False):
    """The machine description (a dict, see ``plan.machine``), the same on every rank."""
    from ..parallel.collectives import gather_objects
    t0 = time.perf_counter()
    baseline = float(np.median(gather_objects(comm, baseline_bytes(comm_self, dtypes[0]))))
    spec = measure_machine(comm, models, dtypes, quick)
    spec["baseline_bytes"] = baseline
    fits = gather_objects(comm, trainer_fit(spec, comm_self, dtypes[0]))
    spec["compute_scale"] = float(np.median([f[0] for f in fits]))
    spec["step_overhead"] = float(np.median([f[1] for f in fits]))
    spec["calibration_seconds"] = time.perf_counter() - t0
    return spec


def main(args):
    from ..parallel.collectives import self_comm, world
    comm = world()
    models = MODELS
    if args.models:
        known = dict(MODELS)
        models = tuple((m, known.get(m, "shapes:32")) for m in args.models.split(","))
    spec = calibrate(comm, self_comm(), models, dtypes=tuple(args.dtypes.split(",")), quick=args.quick)
    if comm.Get_rank() == 0:
        with open(args.output, "w") as f:
            json.dump(spec, f, indent=1)
        print(f"mpicnn: calibrated {comm.Get_size()} rank(s) in {spec['calibration_seconds']:.1f} s; "
              f"allreduce alpha {spec['intra'].get('allreduce', spec['intra']).get('alpha', 0) * 1e6:.1f} us, "
              f"trainer = {spec['step_overhead'] * 1e3:.2f} ms + {spec['compute_scale']:.2f} x layers; wrote {args.output}")
    return 0
