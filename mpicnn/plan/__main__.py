"""``python -m mpicnn.plan --model M --dataset D --batch-size B --ranks N``: which layout
to run. Prints every layout that can run the problem on N ranks, fastest first (those
that do not fit in --memory-per-rank last), and the recommended flags; ``--json`` prints
the same as a JSON list; ``--plot out.png`` draws predicted strong scaling per layout
family for 1..N ranks (needs matplotlib)."""
import json
import sys

from ..cli import Parser, positive, run_command
from ..errors import UserError
from . import Machine, Problem, plan
from .machine import parse_bytes
from .report import plot_scaling, scaling_table, table


def build_parser():
    p = Parser(prog="python -m mpicnn.plan", description=__doc__)
    p.add_argument("--model", default="lenet5", help="a zoo model (default lenet5)")
    p.add_argument("--width", type=positive(int), help="base channel width (as the trainer's --width)")
    p.add_argument("--dataset", default="mnist5k", help="mnist5k, shapes:SIZE or an HDF5 file of images")
    p.add_argument("--batch-size", type=positive(int), default=64, help="global batch")
    p.add_argument("--ranks", type=positive(int), required=True, help="ranks of the job")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    p.add_argument("--bucket-mb", type=positive(float), default=25.0)
    p.add_argument("--eval-batch-size", type=positive(int), default=500, help="as the trainer's (evaluation "
                   "activations can set the peak memory)")
    p.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over the data ranks (as the trainer's)")
    p.add_argument("--pipeline-schedule", default="1f1b", choices=["gpipe", "1f1b"])
    p.add_argument("--memory-per-rank", help="bytes a rank may use, e.g. 16GB (default: the machine file's)")
    p.add_argument("--machine", help="machine file from python -m mpicnn.bench calibrate (default "
                                     "$MPICNN_MACHINE)")
    p.add_argument("--json", action="store_true", help="print a JSON list, best first")
    p.add_argument("--plot", metavar="PNG", help="draw predicted strong scaling per family for 1..N ranks")
    p.add_argument("--scaling", action="store_true",
                   help="print predicted strong scaling per family for 1, 2, 4 .. N ranks instead of the table")
    p.add_argument("--top", type=positive(int), default=20, help="rows of the table (default 20)")
    return p


def load_machine(path):
    import os
    path = path or os.environ.get("MPICNN_MACHINE")
    if not path:
        raise UserError("no machine file: pass --machine machine.json (write one with mpiexec -n 2 python -m "
                        "mpicnn.bench calibrate -o machine.json) or set MPICNN_MACHINE")
    return Machine.load(path)


def command(argv):
    args = build_parser().parse_args(argv)
    machine = load_machine(args.machine)
    limit = parse_bytes(args.memory_per_rank) if args.memory_per_rank is not None else None
    problem = Problem(args.model, args.dataset, args.batch_size, args.dtype, args.optimizer, args.bucket_mb,
                      args.width, args.pipeline_schedule, args.eval_batch_size, args.sync_bn)
    if args.scaling:
        print(scaling_table(problem, args.ranks, machine, limit))
        if args.plot:
            plot_scaling(problem, args.ranks, machine, limit, args.plot)
        return 0
    predictions = plan(problem, args.ranks, machine, limit)
    if not predictions:
        raise UserError(f"no layout of {args.ranks} ranks can run --model {args.model} with --batch-size "
                        f"{args.batch_size}; use fewer ranks or a larger batch")
    records = [p.record(args.batch_size) for p in predictions]
    if args.json:
        json.dump(records, sys.stdout, indent=1)
        print()
    else:
        print(table(problem, args.ranks, records, args.top,
                    limit if limit is not None else machine.memory_per_rank))
    if args.plot:
        plot_scaling(problem, args.ranks, machine, limit, args.plot)
    return 0


def main(argv=None):
    return run_command(command, argv)


if __name__ == "__main__":
    sys.exit(main())
