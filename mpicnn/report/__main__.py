"""``python -m mpicnn.report PATH...``: a trace directory, a metrics file, or both.

Writes into ``--out`` (default: ``report/`` in the first directory given, else beside
the metrics file): ``merged.trace.json`` (every rank, ``pid`` = rank; opens in Perfetto
or chrome://tracing), ``report.json``, the PNG plots and ``report.html`` (``--hta``: also ``hta/``, the traces
as Holistic Trace Analysis reads them); prints the analyses (``--json``: as one JSON
object).
"""
import argparse
import json
import os
import sys

from . import hta
from .analyse import KINDS, analyse
from .html import write_html
from .traces import check_nesting, find_inputs, load_metrics, load_traces, merge


def _fail(message):
    print(f"mpicnn: error: {message}", file=sys.stderr)
    return 2


def _print(analysis, out):
    a = analysis
    what = f"{a['ranks']} rank(s), {a.get('layout')}" if a["ranks"] else "the metrics file (no traces)"
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
    try:
        files, metrics = find_inputs(args.paths)
    except FileNotFoundError as e:
        return _fail(f"{e}; give the --trace directory and/or the --metrics file of a run")
    if not files and not metrics:
        return _fail(f"no rank*.trace.json or metrics file in {' '.join(args.paths)}; run the trainer with "
                     f"--trace DIR and/or --metrics FILE")
    first_dir = next((q for q in args.paths if os.path.isdir(q)), None)
    out = args.out or os.path.join(first_dir or os.path.dirname(os.path.abspath(metrics)), "report")
    os.makedirs(out, exist_ok=True)
    try:
        traces = load_traces(files)
        records = load_metrics(metrics)
        for t in traces:
            check_nesting(t)
    except (ValueError, KeyError) as e:
        return _fail(f"unreadable trace or metrics: {e}")
    analysis = analyse(traces) if traces else {"ranks": 0, "breakdown": {}, "straggler": None,
                                               "allreduce_hidden_fraction": None, "pipeline_bubble": None,
                                               "halo": None, "ps_weight_age": None, "clock_error_us": {}}
    final = next((r for r in reversed(records) if r.get("final")), None)
    if final and final.get("pipeline"):
        analysis["summary_pipeline_bubble"] = final["pipeline"].get("bubble")
    if traces:
        analysis["merged_trace"] = merge(traces, os.path.join(out, "merged.trace.json"))
    if traces and args.hta:
        analysis["hta_traces"] = hta.export(traces, os.path.join(out, "hta"))
    plots = {}
    if not args.no_plots:
        from .plots import draw_all
        try:
            plots = draw_all(analysis, traces, records, out)
        except ImportError as e:
            return _fail(str(e))
    analysis["plots"] = plots
    analysis["html"] = write_html(os.path.join(out, "report.html"), analysis, plots,
                                  f"mpicnn run report: {analysis.get('layout') or metrics}")
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(analysis, f, indent=1)
    if args.json:
        print(json.dumps(analysis))
    else:
        _print(analysis, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
