"""``python -m mpicnn.bench trace``: what ``--trace`` costs the default job.

- ``bench_trace``: the default job (lenet5 on mnist5k, global batch 64) on ``ranks``
  ranks, run without tracing and with every step traced (``--trace-steps 0:STEPS``),
  interleaved so machine noise hits both alike; images/s are medians. Also the trace
  file size per rank, per 10 steps (the default window).
- ``bench_tracer_in_process``: the same step of one rank of that job (lenet5, 32
  samples: forward, backward, optimizer through a PhaseClock) on three identical models
  in one process, one traced, step by step in rotating order; the second untraced one
  (``control``) shows the noise floor. This resolves a cost far below the run-to-run
  spread of whole jobs on a shared machine.

Writes its own JSON file."""
import glob
import os
import statistics
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from ..parallel.launcher import mpi_env
from .report import table, write_json
from .scaling import interleaved, run_trainer


def bench_trace(ranks=2, steps=100, repeats=5):
    args = ["--steps", str(steps), "--eval-every", str(10 ** 9)]
    sizes = []

    def launch(traced):
        if not traced:
            return run_trainer(ranks, args, mpi_env())
        with tempfile.TemporaryDirectory() as tmp:
            record = run_trainer(ranks, args + ["--trace", tmp, "--trace-steps", f"0:{steps}"], mpi_env())
            sizes.append(max(os.path.getsize(f) for f in glob.glob(os.path.join(tmp, "rank*.trace.json"))))
        return record
    runs = interleaved((False, True), repeats, launch)
    plain, traced = runs[False][0]["images_per_sec"], runs[True][0]["images_per_sec"]
    return [{"ranks": ranks, "steps": steps, "images_per_sec_untraced": plain, "images_per_sec_traced": traced,
             "overhead": 1.0 - traced / plain, "mb_per_rank_per_10_steps": max(sizes) / 2 ** 20 * 10 / steps,
             "runs_untraced": runs[False][1], "runs_traced": runs[True][1]}]


def bench_tracer_in_process(steps=400, batch=32):
    from .. import models, nn
    from ..io.trace import Tracer
    from ..training.phases import PhaseClock
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def layout():
        nn.init.manual_seed(0)
        model = models.get("lenet5", in_channels=1, num_classes=10, dtype=np.float32)
        return SimpleNamespace(model=model, clock=PhaseClock(), criterion=nn.CrossEntropyLoss(), layout_text="bench",
                               optimizer=nn.optim.SGD(model.named_parameters(), lr=0.01), finish=lambda *a: a)

    def step(lay, i):
        t0 = time.perf_counter()
        lay.clock.start_step(i)
        with lay.clock.phase("forward"):
            lay.criterion(lay.model.forward(x), y)
        with lay.clock.phase("backward"):
            lay.model.backward(lay.criterion.backward())
        with lay.clock.phase("optimizer"):
            lay.optimizer.step()
            lay.optimizer.zero_grad()
        return time.perf_counter() - t0
    # A second untraced model is the control: its difference to the first is the noise floor.
    runs = {"untraced": layout(), "control": layout(), "traced": layout()}
    with tempfile.TemporaryDirectory() as tmp:
        tracer = Tracer(tmp, 0, 1, (0, steps)).attach(runs["traced"])
        seconds = {name: [] for name in runs}
        order = list(runs)
        for i in range(steps):
            for name in order[i % 3:] + order[:i % 3]:  # each goes first, second and third in turn
                seconds[name].append(step(runs[name], i))
        events = len(tracer.events)
        tracer.close()
    a, c, b = (statistics.median(seconds[name]) for name in ("untraced", "control", "traced"))
    return [{"steps": steps, "batch": batch, "ms_per_step_untraced": 1e3 * a, "ms_per_step_traced": 1e3 * b,
             "overhead": b / a - 1.0, "control": c / a - 1.0, "events_per_step": events / steps}]


def main(args, json_path):
    rows = bench_trace(ranks=args.ranks[-1], steps=args.steps, repeats=args.scaling_repeats)
    table("--trace overhead, default job (lenet5, mnist5k, batch 64), every step traced, one BLAS thread per "
          "rank (medians of interleaved runs)", rows)
    local = bench_tracer_in_process()
    table("the same step in one process, traced and untraced models alternating (medians)", local)
    write_json(json_path, {"trace": rows, "in_process": local})
    return 0
