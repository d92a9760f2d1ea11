"""Which layout this rank runs: a rank of the data/spatial/channel grid, a pipeline
stage, or a parameter-server worker or server."""
from ..errors import UserError
from ..parallel.collectives import gather_objects
from ..parallel.failure import agree
from ..parallel.ps import split_roles
from ..parallel.spec import parse_parallel
from .grid_step import GridLayout
from .pipeline_stage import PipelineStage
from .ps_server import PSServer
from .ps_worker import PSWorker


def make_layout(args, comm, stop):
    """This rank's layout under ``--parallel`` on ``comm``."""
    with agree(comm):
        spec = parse_parallel(args.parallel, comm.Get_size())
        # A staleness bound without servers would be silently ignored: say so instead.
        if args.staleness and not spec.ps:
            raise UserError(f"--staleness {args.staleness} bounds parameter-server workers; add "
                            f"--parallel ps=K (or drop --staleness)")
    if spec.ps:
        return parameter_server_role(args, comm, stop, spec)
    if spec.pipeline > 1:
        return PipelineStage(args, comm, stop)
    return GridLayout(args, comm, stop)


def parameter_server_role(args, comm, stop, spec):
    """A PSWorker on the first spec.data ranks of ``comm``, a PSServer on the last spec.ps."""
    with agree(comm):
        if args.balance == "dynamic":
            raise UserError("--balance dynamic does not combine with ps=K; the parameter server "
                            "tolerates slow workers through --staleness instead")
        if args.sync_bn and args.staleness:
            raise UserError("--sync-bn reduces BatchNorm statistics over the workers at every step, "
                            "which workers running up to --staleness steps apart cannot do; use "
                            "--staleness 0 or drop --sync-bn")
    server, link, group = split_roles(comm, spec)
    workers_args = type(args)(**{**vars(args), "parallel": f"data={spec.data}"})  # the workers' own grid
    # Workers first: they prepare a built-in dataset (once per node) that servers then open.
    with agree(comm):
        if not server:
            role = PSWorker(workers_args, link, group, spec, stop)
    with agree(comm):
        if server:
            role = PSServer(args, link, group, spec, stop)
    with agree(comm):
        starts = set(gather_objects(comm, role.start_step))
        if len(starts) > 1:
            raise UserError(f"workers and servers resumed at different steps ({sorted(starts)}); "
                            "every rank must see the same --checkpoint-dir")
    return role
