"""``mpirun -n N python -m mpicnn.train``: the command line of the trainer.

``run(argv, comm)`` parses the options, sets up BLAS threads and the backend, builds
this rank's layout (``mpicnn.training``) and runs the one training loop on it; it
returns the trained model and its figures, so tests can run the same code on COMM_SELF
and on COMM_WORLD and compare parameters. ``main`` adds the process-level rules: one
error line and exit status 2 on bad input, an aborted job (never a hang) on an
unexpected exception, and keeps freed memory for reuse (``allocator``).
"""
import gc
import os
import sys
import uuid
from dataclasses import dataclass, field

from . import allocator, backend, blas
from .config import check_outputs, parse_args
from .errors import UserError
from .io.trace import DEFAULT_WINDOW, Tracer, parse_window, remove_stale
from .parallel.clock_sync import clock_offsets
from .parallel.collectives import abort, gather_objects, node_local, world
from .parallel.failure import agree, install_abort_hook
from .signals import StopRequest
from .training import fit, make_layout
from .training.auto_layout import AutoLayout


@dataclass
class RunResult:
    model: object
    step: int
    summary: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # name -> global-layout parameter (channel shards gathered)


def run(argv=None, comm=None, phase_hooks=()):
    """Train as the command line says, on ``comm`` (default: the whole job); return the
    model and the summary. Each of ``phase_hooks`` is called as ``hook(name, step, start,
    end)`` at the end of every phase of every step (``mpicnn.training.phases``)."""
    comm = comm or world()
    with agree(comm):
        args = parse_args(argv)
        check_outputs(args, reports=comm.Get_rank() == 0)  # rank 0 reports in every layout
    previous = backend.current()
    use_node(args, comm)
    auto = AutoLayout(args, comm) if args.parallel == "auto" else None  # sets --parallel and friends
    stop = StopRequest().install()
    try:
        layout = make_layout(args, comm, stop)
        layout.clock.hooks.extend(phase_hooks)
        observers = []
        try:
            observers = observe(args, comm, layout)
            summary = fit(layout)
            if auto:
                auto.report(summary, comm)
            params = layout.global_parameters()
        finally:
            for observer in observers:
                observer.close()
            layout.close()
    finally:
        stop.uninstall()
        backend.use(previous)
        gc.unfreeze()  # fit() froze setup objects; a long-lived process may collect this run
    return RunResult(layout.model, summary["steps"], summary, params)


def use_node(args, comm):
    """This rank's share of its node: BLAS threads (ranks sharing cores must not each spin
    a thread per core) and the backend (each rank takes GPU node-local rank % count)."""
    with agree(comm):
        local_rank, ranks_on_node = node_local(comm)
        threads = blas.threads_per_rank(ranks_on_node)
        if threads:
            blas.set_threads(threads)
        try:
            backend.use(args.backend, local_rank=local_rank)
        except (RuntimeError, ValueError) as e:
            raise UserError(f"--backend {args.backend}: {e}")
        if os.environ.get("MPICNN_EMU_CHECK"):  # read at each launch: a typo would fail mid-step
            from kernels.module import env_checks
            try:
                env_checks()
            except ValueError as e:
                raise UserError(str(e))


def observe(args, comm, layout):
    """Attach --trace (every rank) and --tensorboard (the reporting rank) to the run;
    returns what to close when it ends (a tracer writes its file then, if still open)."""
    observers = []
    if args.trace:
        with agree(comm):
            try:
                window = parse_window(args.trace_steps or DEFAULT_WINDOW)
            except ValueError as e:
                raise UserError(str(e))
            first, end = layout.start_step, layout.total_steps
            if window[1] <= first or window[0] >= end:
                given = f"--trace-steps {args.trace_steps}" if args.trace_steps else \
                    f"the default --trace-steps {DEFAULT_WINDOW}"
                raise UserError(f"{given} traces none of this run's steps {first}..{end - 1}; give --trace-steps "
                                f"A:B within them, e.g. --trace-steps {first}:{min(end, first + 10)}")
            if comm.Get_rank() == 0 and os.path.isdir(args.trace):
                try:
                    remove_stale(args.trace, comm.Get_size())
                except OSError as e:
                    raise UserError(f"--trace {args.trace}: cannot remove an earlier run's trace file ({e}); "
                                    f"remove it, or trace into another directory")
        offset, error = clock_offsets(comm)
        run_id = gather_objects(comm, uuid.uuid4().hex)[0]  # rank 0's, on every rank
        observers.append(Tracer(args.trace, comm.Get_rank(), comm.Get_size(), window, offset, error,
                                run_id).attach(layout))
    if args.tensorboard and layout.reports:
        from .io.tensorboard import TensorBoardSink
        try:
            sink = TensorBoardSink(args.tensorboard, args.log_every)
        except ImportError as e:
            raise UserError(str(e))
        layout.clock.hooks.append(sink.phase)
        observers.append(sink)
    return observers


def mpi_main(work, argv=None):
    """``work(argv, comm)`` on the whole job as an MPI program: its result, or for a
    UserError one line on rank 0 (every line if the ranks did not agree, and then the job
    is aborted rather than left hanging) and exit status 2 on every rank."""
    comm = world()
    install_abort_hook(comm)
    try:
        return work(argv, comm)
    except UserError as e:
        agreed = getattr(e, "agreed", False)
        if comm.Get_rank() == 0 or not agreed:
            print(f"mpicnn: error: {e}", file=sys.stderr, flush=True)
        if not agreed and comm.Get_size() > 1:
            abort(comm, 2)  # only this rank knows: take the others down rather than hang
        sys.exit(2)


def main(argv=None):
    allocator.tune()  # before the first arrays: freed ones are reused, not faulted in again each step
    mpi_main(run, argv)


if __name__ == "__main__":
    main()
