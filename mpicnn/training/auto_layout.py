"""``--parallel auto``: let the planner (``mpicnn.plan``) choose the layout.

The machine is ``--machine``, else ``$MPICNN_MACHINE``, else a quick calibration of this
job's ranks (a few seconds: this model's layers and the messages, ``calibration``).
Every rank plans from the same numbers (rank 0's), so all choose alike. The choice
replaces ``--parallel``, ``--micro-batches`` and ``--channel-split`` before the layout
is built; a layout the trainer would refuse for the other options (--sync-bn, --balance
dynamic, a non-classification dataset under a pipeline) is never chosen. At the end the
reporting rank prints predicted against measured step time.
"""
import os
import time

from ..errors import UserError
from ..parallel.failure import agree


class AutoLayout:
    def __init__(self, args, comm):
        from ..plan import Machine, Problem, plan
        from .calibration import quick_machine
        t0 = time.perf_counter()
        path = getattr(args, "machine", None) or os.environ.get("MPICNN_MACHINE")
        with agree(comm):
            problem = Problem(args.model, args.dataset, args.batch_size, args.dtype, args.optimizer, args.bucket_mb,
                              args.width, args.pipeline_schedule, args.eval_batch_size, args.sync_bn)
            machine = Machine.load(path) if path else None
        if machine is None:
            machine = quick_machine(comm, args.model, args.dataset, args.dtype)
        with agree(comm):
            predictions = [p for p in plan(problem, comm.Get_size(), machine, ps=False) if self._allowed(args, p)]
            fitting = [p for p in predictions if p.fits]
            if not predictions:
                raise UserError(f"--parallel auto: no layout of {comm.Get_size()} ranks can run --model "
                                f"{args.model} with --batch-size {args.batch_size}")
        self.choice = (fitting or predictions)[0]
        self.source = path or "a quick calibration"
        self.seconds = time.perf_counter() - t0
        layout = self.choice.layout
        args.parallel, args.micro_batches, args.channel_split = layout.parallel, layout.micro_batches, layout.channel_split
        self.batch = args.batch_size
        if comm.Get_rank() == 0:
            p = self.choice
            print(f"mpicnn: --parallel auto chose {layout.flags()} (planned from {self.source} in "
                  f"{self.seconds:.1f} s): predicted {1e3 * p.step_seconds:.1f} ms per step "
                  f"({p.images_per_sec(self.batch):.0f} images/s), {p.memory_bytes / 2 ** 20:.0f} MiB per rank"
                  + ("" if p.fits else " (no layout fits the memory per rank; this is the smallest)"), flush=True)

    @staticmethod
    def _allowed(args, p):
        spec = p.layout.spec
        if args.balance == "dynamic" and spec.data == 1:
            return False
        if args.staleness:
            return False  # staleness needs ps=K, which auto does not choose
        return not (spec.pipeline > 1 and args.dataset.split(":")[0] in ("blobs", "cosmo"))

    def report(self, summary, comm):
        """Predicted against measured step time, in the summary and on the reporting rank."""
        ips = summary.get("images_per_sec")
        measured = self.batch / ips if ips else None
        summary["auto_layout"] = {"flags": self.choice.layout.flags(), "predicted_step_seconds": self.choice.step_seconds,
                                  "measured_step_seconds": measured,
                                  "predicted_memory_bytes": self.choice.memory_bytes}
        if comm.Get_rank() == 0 and measured:
            err = (self.choice.step_seconds - measured) / measured
            print(f"mpicnn: --parallel auto: predicted {1e3 * self.choice.step_seconds:.1f} ms per step, measured "
                  f"{1e3 * measured:.1f} ms ({100 * err:+.0f}%)", flush=True)
