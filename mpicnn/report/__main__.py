"""``python -m mpicnn.report PATH...``: a trace directory, a metrics file, or both.

Writes into ``--out`` (default: ``report/`` in the first directory given, else beside
the metrics file): ``merged.trace.json`` (every rank, ``pid`` = rank; opens in Perfetto
or chrome://tracing), ``report.json``, the PNG plots and ``report.html`` (``--hta``: also ``hta/``, the traces
as Holistic Trace Analysis reads them); prints the analyses (``--json``: as one JSON
object).
"""
import argparse
import glob
import json
import os
import shutil
import sys

from ..errors import UserError
from ..io.atomic import missing_folders
from ..io.trace import RANK_FILE
from . import hta
from .analyse import KINDS, analyse
from .html import write_html
from .plots import PLOTS, draw_all, pyplot
from .traces import check_run, find_inputs, load_metrics, load_traces, merge


def _fail(message):
    print(f"mpicnn: error: {message}", file=sys.stderr)
    return 2


def _print(analysis, out):
    a = analysis
    what = (a.get("layout") or f"{a['ranks']} rank(s)") if a["ranks"] else "the metrics file (no traces)"
    print(f"mpicnn report: {what}; files in {out}")
    if a["breakdown"]:
        print("ms per step   " + "  ".join(f"{k:>13}" for k in KINDS))
        for rank, row in a["breakdown"].items():
            print(f"rank {rank:<8}" + "  ".join(f"{1e3 * row[k]:13.2f}" for k in KINDS))
        print("clock alignment error (us): " + ", ".join(f"rank {r} {e:.1f}" for r, e in a["clock_error_us"].items()
                                                         if e is not None))
    s = a["straggler"]
    if s:
        print(f"straggler: rank {s['rank']}, compute {s['factor']:.2f}x the others' (last at collectives "
              f"{s['last_at_collectives']}, late by {s['late_ms'] or 0:.1f} ms)")
    elif a.get("straggler_note"):
        print(f"straggler: {a['straggler_note']}")
    if a["allreduce_hidden_fraction"] is not None:
        print(f"gradient allreduce hidden behind backward: {100 * a['allreduce_hidden_fraction']:.0f}%")
    b = a["pipeline_bubble"]
    if b:
        print("pipeline bubble per stage: " + ", ".join(f"stage {s} {v:.3f}" for s, v in b["per_stage"].items())
              + f" (ideal {b['ideal']:.3f})" + ("; the run's summary measured " + ", ".join(
                  f"{v:.3f}" for v in a["summary_pipeline_bubble"]) if a.get("summary_pipeline_bubble") else ""))
    for rank, layers in (a["halo"] or {}).items():
        print(f"halo, rank {rank}: " + "; ".join(
            f"{name} {row['bytes_per_step'] / 1024:.0f} KiB, wait {row['forward_wait_ms']:.2f}+"
            f"{row['backward_wait_ms']:.2f} ms" for name, row in layers.items()))
    if a["ps_weight_age"]:
        print("ps weight age (steps): " + ", ".join(f"rank {r} mean {v['mean']:.2f} max {v['max']}"
                                                    for r, v in a["ps_weight_age"].items()))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mpicnn.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="--trace directory and/or --metrics file")
    p.add_argument("--out", help="where to write the merged trace, plots and report.html")
    p.add_argument("--json", action="store_true", help="print the analyses as one JSON object")
    p.add_argument("--no-plots", action="store_true", help="no PNGs (without matplotlib)")
    p.add_argument("--hta", action="store_true",
                   help="also write OUT/hta/: the traces as Holistic Trace Analysis reads them")
    args = p.parse_args(argv)
    # Everything is read and checked before anything is written: a bad input leaves no output.
    try:
        traces, records, metrics, note = _read(args.paths)
        if not args.no_plots:
            pyplot()
    except (UserError, ImportError) as e:
        return _fail(str(e))
    first_dir = next((q for q in args.paths if os.path.isdir(q)), None)
    out = args.out or os.path.join(first_dir or os.path.dirname(os.path.abspath(metrics)), "report")
    if os.path.exists(out) and not os.path.isdir(out):
        return _fail(f"--out {out} is a file; give a directory to write the report into")
    analysis = analyse(traces)
    final = next((r for r in reversed(records) if r.get("final")), None)
    if final and final.get("pipeline"):
        analysis["summary_pipeline_bubble"] = final["pipeline"].get("bubble")
    made = missing_folders(os.path.abspath(out))  # deepest first: removed, with what was written, on failure
    try:
        _write(analysis, traces, records, metrics, out, args)
    except OSError as e:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        return _fail(f"cannot write the report into {out}: {e.strerror or e}; choose a writable --out directory")
    if note:
        print(f"mpicnn: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(analysis))
    else:
        _print(analysis, out)
    return 0


def _read(paths):
    """(traces, metrics records, metrics file, a note on a skipped line); UserError on bad input."""
    try:
        files, metrics = find_inputs(paths)
    except FileNotFoundError as e:
        raise UserError(f"{e}; give the --trace directory and/or the --metrics file of a run") from None
    if not files and not metrics:
        raise UserError(f"no rank*.trace.json or metrics file in {' '.join(paths)}; run the trainer with "
                        f"--trace DIR and/or --metrics FILE")
    traces = load_traces(files)
    if traces:
        check_run(traces)
    records, note = load_metrics(metrics)
    if not traces and not records:
        raise UserError(f"nothing to report: {metrics} holds no metrics records and no traces were given; "
                        f"give the --trace directory and/or the --metrics file of a run that trained")
    return traces, records, metrics, note


def _write(analysis, traces, records, metrics, out, args):
    os.makedirs(out, exist_ok=True)
    # A report with fewer inputs writes fewer files: drop the previous report's.
    hta_dir = os.path.join(out, "hta")
    stale = [os.path.join(out, f"{name}.png") for name in PLOTS] + [os.path.join(out, "merged.trace.json")]
    stale += [p for p in glob.glob(os.path.join(hta_dir, "rank*.trace.json"))
              if RANK_FILE.fullmatch(os.path.basename(p))]
    for path in stale:
        if os.path.isfile(path):
            os.remove(path)
    if os.path.isdir(hta_dir) and not os.listdir(hta_dir):
        os.rmdir(hta_dir)
    if traces:
        analysis["merged_trace"] = merge(traces, os.path.join(out, "merged.trace.json"))
    if traces and args.hta:
        analysis["hta_traces"] = hta.export(traces, hta_dir)
    plots = {}
    if not args.no_plots:
        plots = draw_all(analysis, traces, records, out)
    analysis["plots"] = plots
    analysis["html"] = write_html(os.path.join(out, "report.html"), analysis, plots,
                                  f"mpicnn run report: {analysis.get('layout') or metrics}")
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(analysis, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
