"""``python -m mpicnn.bench [conv|cnn|zoo|scaling|allreduce|all]``: print tables, write JSON
(``bench-results/<what>.json`` unless ``--json`` says otherwise).

conv       forward/backward GFLOP/s per conv layer shape, against the measured GEMM rate
cnn        fwd+bwd step time of the benchmark CNN (``--compare torch``: PyTorch side by side)
zoo        training step (forward, loss, backward, Adam) of every zoo model, batch 64, one thread:
           ms, GFLOP/s and fraction of the core's peak (``--compare torch``: PyTorch interleaved)
scaling    data-parallel images/s for 1 -> N ranks (the real trainer under mpiexec);
           ``--compare torch``: PyTorch DDP (gloo) on the same ranks, model and global batch, and
           each side's fraction of its own ceiling
allreduce  bucketed gradient allreduce against one plain Allreduce of the same bytes
spatial    spatial-parallel convnet on 256^2 and 512^2 images (--volumes: cosmoflow on cosmo:SIZE
           volumes, grids PxQxR) against 1 rank: speedup, peak
           memory per rank, halo bytes, waiting and the fraction hidden by overlap per layer
channel    channel=C convnet against 1 rank for --channel-split filter, channel and auto:
           parameter and activation bytes per rank, traffic per step, and per split layer
           its layout, both volume estimates and the bytes and seconds of each collective
pipeline   pipeline=2 lenet5: images/s and measured bubble against (S-1)/(M+S-1), M in 1, 2, 4, 8
ps         parameter server ps=1 with 2 workers: images/s and accuracy for staleness 0, 2, 8,
           with and without a straggler
balance    data parallelism with a straggler (MPICNN_SLOW_RANK=1:F): static vs dynamic balance
augment    test accuracy of lenet5 and convnet on mnist5k without and with --augment crop:2, seeds
           0, 1, 2, fixed epochs (60, 20), the default job on 2 ranks (minutes: not part of "all")
prefetch   the default job on 1 and 2 ranks without and with --prefetch, pairs in alternating
           order: images/s, the pairs' ratio, data time and time waited for data (minutes)
trace      the default job with every step traced (--trace) against untraced: images/s, trace MB
calibrate  measure this machine for the planner (run under mpiexec -n 2): writes -o machine.json
plan       the planner's validation matrix: predicted vs measured step time and memory of 1 rank,
           data=2, spatial=2x1/1x2, channel=2 (each split) and pipeline=2 (M=1, 4) for convnet at
           64^2 and 256^2, lenet5 and resnet8 at two batch sizes (the real trainer under mpiexec)
"""
import argparse
import math
import os
import sys

from ..cli import Parser, positive, run_command
from ..errors import UserError
from .report import table, write_json


def positive_ints(text):
    """Argument type: comma-separated whole numbers > 0, each once (``1,2``), as a tuple."""
    try:
        values = tuple(positive(int)(item.strip()) for item in text.split(","))
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} in {text!r}; give comma-separated whole numbers > 0, "
                                          f"e.g. 1,2") from None
    if len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"{text!r} names a value twice; give each once")
    return values


positive_ints.__name__ = "list of positive ints"


def grid_list(text):
    """Argument type: comma-separated process grids PxQ or PxQxR of whole numbers > 0."""
    grids = tuple(g.strip() for g in text.split(","))
    for g in grids:
        parts = g.split("x")
        if not 2 <= len(parts) <= 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(f"{g!r} in {text!r} is not a grid; give PxQ (images) or PxQxR "
                                             f"(--volumes) of whole numbers > 0, comma-separated, e.g. 2x1")
    return grids


grid_list.__name__ = "list of grids"


def dtype_list(text):
    """Argument type: comma-separated float32/float64, each once, as a tuple."""
    dtypes = tuple(d.strip() for d in text.split(","))
    if not set(dtypes) <= {"float32", "float64"} or len(set(dtypes)) < len(dtypes):
        raise argparse.ArgumentTypeError(f"{text!r}: give float32, float64 or float32,float64")
    return dtypes


dtype_list.__name__ = "list of dtypes"


SCALING_BATCH, DDP_BATCH = 128, 64  # the global batches of bench_scaling and bench_vs_ddp


def check_lists(args):
    """What the lists must satisfy for the bench asked for, checked before any run."""
    if args.what in ("all", "scaling", "trace"):
        limit = DDP_BATCH if args.compare == "torch" and args.what != "trace" else SCALING_BATCH
        if max(args.ranks) > limit:
            raise UserError(f"--ranks {max(args.ranks)}: more ranks than the global batch of {limit} images; "
                            f"give at most {limit}")
    if args.what == "spatial":
        dims = 3 if args.volumes else 2
        wrong = [g for g in args.grids if len(g.split("x")) != dims]
        if wrong:
            raise UserError(f"--grids {wrong[0]}: the spatial bench {'with' if args.volumes else 'without'} --volumes "
                            f"takes grids {'PxQxR' if args.volumes else 'PxQ'}, e.g. "
                            f"{'2x1x1' if args.volumes else '2x1'}")


def check_names(args):
    """--models and --cases name what exists, checked before any run; --models is
    left without blanks around its names."""
    if args.models is not None:
        names = [m.strip() for m in args.models.split(",")]
        if "" in names:
            raise UserError(f"--models {args.models!r} holds an empty name; give names separated by single "
                            f"commas, e.g. lenet5,convnet")
        args.models = ",".join(names)
        if args.what == "augment":
            from .augment import PROTOCOL
            if set(names) - set(PROTOCOL):
                raise UserError(f"--models: the augment bench runs {', '.join(PROTOCOL)}")
        elif args.what == "calibrate":  # any trainer model: the zoo's, or a user's package.module:function
            from .. import models
            for name in names:
                try:
                    models.builder(name)
                except ValueError as e:
                    raise UserError(f"--models: {e}") from None
        elif args.what not in ("plan", "trace"):
            from .zoo import ZOO
            unknown = sorted(set(names) - {label for label, *_ in ZOO})
            if unknown:
                raise UserError(f"--models: unknown {', '.join(unknown)}; choose from "
                                f"{', '.join(dict.fromkeys(label for label, *_ in ZOO))}")
    if args.what == "plan" and args.machine == "":  # not "calibrate first"
        raise UserError("--machine is empty (an unset shell variable?); give a machine file, or leave the option "
                        "out to calibrate first")
    if args.what == "plan" and args.cases is not None:
        from .plan import cases
        if not cases(args.cases):
            raise UserError(f"--cases {args.cases!r} matches no case of the plan bench; give text of a label such "
                            f"as {cases()[0][0]!r} (labels read MODEL DATASET B=BATCH LAYOUT)")


def check_output(option, path, example="bench.json"):
    """Refuse, before any run, a results file that cannot be written: an empty path, a
    folder, or a place this process cannot create files in (found when written, that
    costs the whole bench)."""
    from ..config import check_file_output  # imports NumPy: after main set its threads
    if not path:
        raise UserError(f"{option} is empty (an unset shell variable?); give a file path, or leave the option out")
    check_file_output(option, path, example)


def trace_json(json_path):
    """Where the trace bench writes: trace.json in the folder of ``json_path``."""
    return os.path.join(os.path.dirname(json_path) or ".", "trace.json")


def main(argv=None):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        # before NumPy loads BLAS (the checks below import it): one thread, as the figures assume
        os.environ.setdefault(var, "1")
    # Parser: a bad value is one line ``mpicnn: error: ...`` and exit status 2 (run_command),
    # raised while parsing, so before any benchmark runs.
    p = Parser(prog="python -m mpicnn.bench", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=["all", "conv", "cnn", "zoo", "scaling", "allreduce", "spatial",
                                                            "channel", "pipeline", "ps",
                                                            "balance", "augment", "prefetch", "trace", "calibrate", "plan"])
    p.add_argument("--compare", choices=["torch"], help="also time PyTorch's CPU build (if installed)")
    p.add_argument("--ranks", type=positive_ints, default="1,2",
                   help="rank counts for the scaling bench (default 1,2)")
    p.add_argument("--steps", type=positive(int), default=60, help="training steps per scaling run")
    p.add_argument("--repeats", type=positive(int), default=None,
                   help="timed repeats of the cnn bench (default 20) and of the zoo bench (default 15)")
    p.add_argument("--models", default=None,
                   help="zoo entries to time, comma-separated (default all: lenet5, convnet, resnet8, "
                        "resnet20, vgg11w32, vgg11w64)")
    p.add_argument("--scaling-repeats", type=positive(int), default=3,
                   help="interleaved runs per rank count (medians)")
    p.add_argument("--grids", type=grid_list, default="2x1", help="spatial grids for the spatial bench (default 2x1)")
    p.add_argument("--sizes", type=positive_ints, default="256,512",
                   help="image sizes for the spatial bench (default 256,512)")
    p.add_argument("--spatial-steps", type=positive(int), default=8, help="training steps per spatial run")
    p.add_argument("--volumes", action="store_true",
                   help="spatial bench: cosmoflow on cosmo:SIZE volumes, grids PxQxR (e.g. --sizes 64 "
                        "--grids 2x1x1 --batch 4)")
    p.add_argument("--batch", type=positive(int), default=16, help="global batch of the spatial bench (default 16)")
    p.add_argument("--spatial-repeats", type=positive(int), default=3, help="interleaved repeats per spatial run")
    p.add_argument("--channels", type=positive_ints, default="1,2",
                   help="channel counts for the channel bench (default 1,2)")
    p.add_argument("--slow-factor", type=positive(float), default=2.0,
                   help="how much longer the straggler computes in the balance bench (default 2.0)")
    p.add_argument("-o", "--output", default="machine.json", help="calibrate: the machine file to write")
    p.add_argument("--quick", action="store_true", help="calibrate: a few seconds, fewer sizes")
    p.add_argument("--dtypes", type=dtype_list, default="float32", help="calibrate: dtypes to time (default float32)")
    p.add_argument("--machine", default=None, help="plan: a machine file (default: calibrate first)")
    p.add_argument("--cases", default=None, help="plan: only cases whose label contains this text")
    p.add_argument("--json", default=None, help="where to write the results (default bench-results/<what>.json)")
    args = p.parse_args(argv)
    if not 1.0 <= args.slow_factor < math.inf:  # the straggler's rule (straggler.parse_slow_rank)
        raise UserError(f"--slow-factor must be a finite number >= 1 (the straggler computes F times as long), "
                        f"got {args.slow_factor:g}")
    check_lists(args)
    check_names(args)
    json_path = f"bench-results/{args.what}.json" if args.json is None else args.json
    if args.what == "calibrate":
        check_output("-o/--output", args.output, "machine.json")
    elif args.what == "trace":  # its own file, trace.json next to --json
        check_output("--json (the trace bench writes trace.json in its folder)",
                     "" if args.json == "" else trace_json(json_path), "trace.json")
    else:
        check_output("--json", json_path)
    if args.what == "plan" and not args.machine:  # it calibrates first, into this file
        check_output("the machine file bench plan calibrates without --machine",
                     os.path.join("bench-results", "machine.json"), "machine.json")
    if args.what == "calibrate":  # writes the machine file, not a bench result
        from .calibrate import main as calibrate_main
        return calibrate_main(args)
    if args.what == "plan":
        from .plan import main as bench_plan
        return bench_plan(args, json_path)
    if args.what == "trace":  # its own JSON file, bench-results/trace.json
        from .trace import main as bench_trace
        return bench_trace(args, trace_json(json_path))
    from .cnn import bench_cnn, bench_conv_layers, gemm_gflops
    from .scaling import bench_allreduce_under_mpi, bench_scaling, bench_vs_ddp
    from .channel import bench_channel
    from .spatial import bench_spatial
    from .zoo import PEAK_GFLOPS, bench_zoo, geomean


    results = {}
    if args.what in ("all", "conv"):
        results["gemm_gflops"] = gemm_gflops()
        results["conv"] = bench_conv_layers()
        print(f"sgemm on this machine: {results['gemm_gflops']:.1f} GFLOP/s (one thread)")
        table("conv layers (GFLOP/s; fraction of sgemm)", results["conv"])
    if args.what in ("all", "cnn"):
        results["cnn"] = bench_cnn(repeats=20 if args.repeats is None else args.repeats,
                                   compare_torch=args.compare == "torch")
        table("benchmark CNN, batch 64x3x32x32 float32, forward+backward, 1 thread", [results["cnn"]])
    if args.what in ("all", "zoo"):
        models = None if args.models is None else set(args.models.split(","))
        rows, note = bench_zoo(models, repeats=15 if args.repeats is None else args.repeats,
                               compare_torch=args.compare == "torch")
        results["zoo"], results["zoo_torch"] = rows, note
        table("zoo: training step (forward, loss, backward, Adam), float32, 1 thread, medians; "
              f"peak = GFLOP/s / {PEAK_GFLOPS:g}", rows)
        ratios = [r["ratio"] for r in rows if "ratio" in r]
        if ratios:
            results["zoo_geomean_ratio"] = geomean(ratios)
            print(f"geometric mean of the ratios: {results['zoo_geomean_ratio']:.3f}")
        elif args.compare == "torch":
            print(f"no PyTorch column: {note}")
    if args.what in ("all", "scaling"):
        results["scaling"] = bench_scaling(args.ranks, steps=args.steps, repeats=args.scaling_repeats)
        table("data-parallel lenet5, global batch 128, one BLAS thread per rank; ceiling: N independent "
              "1-rank runs at 1/N of the batch at once, of_ceiling = images/s over the ceiling's; lockstep_bound: "
              "what of the ceiling the same runs, traced, keep if every step waits for the slowest one's "
              "(a synchronous step with free communication), of_lockstep = of_ceiling over it", results["scaling"])
        if args.compare == "torch":
            try:
                import torch  # noqa: F401  (only to say why there is no comparison)
            except ImportError as e:
                print(f"\nno PyTorch DDP comparison: PyTorch is not importable ({e})")
            else:
                ddp_ranks = tuple(r for r in args.ranks if r > 1) or args.ranks
                results["scaling_vs_ddp"] = bench_vs_ddp(ddp_ranks, steps=args.steps, repeats=args.scaling_repeats)
                table("default job (lenet5, mnist5k, global batch 64, Adam) vs PyTorch DDP (gloo), one thread per "
                      "process, medians; ratio above 1: mpicnn faster; *_of_ceiling: images/s over that "
                      "side's own ceiling (N independent 1-process runs at 1/N of the batch at once)",
                      results["scaling_vs_ddp"])
    if args.what in ("all", "allreduce"):
        results["allreduce"] = bench_allreduce_under_mpi(2)
        table("gradient allreduce on 2 ranks: bucketed vs plain Allreduce", results["allreduce"])
    if args.what == "spatial":  # minutes at 512^2: not part of "all"
        rows, layers = bench_spatial(args.sizes, args.grids, batch_size=args.batch, steps=args.spatial_steps,
                                     repeats=args.spatial_repeats, volumes=args.volumes)
        results["spatial"], results["spatial_layers"] = rows, layers
        what = "cosmoflow on volumes" if args.volumes else "convnet"
        table(f"spatial {what}, global batch {args.batch}, float32, one BLAS thread per rank (medians)", rows)
        table("halo per layer (rank 0): bytes and forward waiting with/without overlap", layers)
    if args.what == "channel":
        rows, layers = bench_channel(args.channels)
        results["channel"], results["channel_layers"] = rows, layers
        table("channel-parallel convnet on shapes:32, global batch 16, float32: parameters and activations "
              "per rank, traffic per rank and step", rows)
        table("channel communication per split layer (rank 0, training steps)", layers)
    if args.what == "pipeline":
        from .pipeline import bench_pipeline
        results["pipeline"] = bench_pipeline(micro_batches=(1, 2, 4, 8), stages=2, steps=args.steps,
                                             repeats=args.scaling_repeats)
        table("pipeline=2 lenet5 on mnist5k, global batch 128, float32, one BLAS thread per rank: images/s "
              "and bubble, measured vs ideal (S-1)/(M+S-1) (medians)", results["pipeline"])
    if args.what == "ps":
        from .ps import bench_ps
        results["ps"] = bench_ps(staleness=(0, 2, 8), straggler=(None, f"1:{args.slow_factor:g}"), epochs=3,
                                 repeats=args.scaling_repeats)
        table("parameter server ps=1: lenet5 on mnist5k, 3 ranks (2 workers + 1 server), global batch 64, "
              "3 epochs, one BLAS thread per rank (medians)", results["ps"])
    if args.what == "balance":
        from .balance import bench_balance
        results["balance"] = bench_balance(factor=args.slow_factor, steps=args.steps,
                                           repeats=args.scaling_repeats)
        table(f"lenet5 on 2 ranks, global batch 128, rank 1 computing {args.slow_factor:g}x as long "
              "(medians)", results["balance"])
    if args.what == "augment":
        from .augment import PROTOCOL, bench_augment
        models = tuple(PROTOCOL) if args.models is None else tuple(args.models.split(","))
        results["augment"], results["augment_summary"] = bench_augment(models)
        table("test accuracy on mnist5k without and with --augment crop:2 (final epoch, 2 ranks)", results["augment"])
        table("per model: means over the seeds; wins/ties/losses of the augmented run", results["augment_summary"])
    if args.what == "prefetch":
        from .prefetch import bench_prefetch
        results["prefetch"] = bench_prefetch(repeats=args.scaling_repeats)
        table("the default job (lenet5 on mnist5k, global batch 64, 30 epochs) without and with --prefetch, "
              "one BLAS thread per rank (medians; pair_ratio: with over without, per pair)", results["prefetch"])
    write_json(json_path, results)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))  # a bad machine file: one line, not a traceback
