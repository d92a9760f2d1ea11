"""``python -m mpicnn.bench trace``: what ``--trace`` costs the default job.

The default job (lenet5 on mnist5k, global batch 64) on ``ranks`` ranks, run without
tracing and with every step traced (``--trace-steps 0:STEPS``), interleaved so machine
noise hits both alike; images/s are medians. Also the trace file size per rank, per 10
steps (the default window). Writes its own JSON file."""
import glob
import os
import tempfile

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


def main(args):
    rows = bench_trace(ranks=int(args.ranks.split(",")[-1]), steps=args.steps, repeats=args.scaling_repeats)
    table("--trace overhead, default job (lenet5, mnist5k, batch 64), every step traced, one BLAS thread per "
          "rank (medians of interleaved runs)", rows)
    write_json(os.path.join(os.path.dirname(args.json) or ".", "trace.json"), {"trace": rows})
    return 0
