"""The process grid: one Cartesian communicator over (sample, depth, height, width,
channel, stage) and one sub-communicator per axis and per combination a strategy reduces over."""
from mpi4py import MPI

from .spec import ParallelSpec


class ProcessGrid:
    """Communicators of one run.

    ``data``: ranks holding the same model shard and different samples (gradients and
    sync-BN statistics are summed over it). ``replicas``: every rank holding a copy of
    a replicated parameter (sample x spatial), where weight gradients are reduced.
    ``height``: ranks of one column block (varying row block; rank = row coordinate),
    where row halos travel; ``width``: ranks of one row block (rank = column
    coordinate), where column halos travel; ``channel``: the ranks that split one
    layer's filters or features (activations are gathered and input gradients summed
    over it; never gradients); ``spatial``: all blocks of one sample set
    (depth x height x width), where global pooling and BatchNorm statistics are reduced;
    ``depth``: ranks of one row and column block (varying depth block of volumes),
    where depth halos travel; ``pipeline``: the stages of one model copy (rank = stage), where activations and
    their gradients travel point to point. A stage's parameters are replicated over
    ``replicas`` of that stage only.

    ``comm`` holds the training ranks only: parameter servers are outside the grid.
    """

    def __init__(self, comm, spec: ParallelSpec):
        self.spec = spec
        self.world = comm
        self.cart = comm.Create_cart(list(spec.dims), periods=[False] * 6, reorder=False)
        self.coords = tuple(self.cart.Get_coords(self.cart.Get_rank()))
        axes = ("data", "depth", "height", "width", "channel", "pipeline")

        def sub(*names):
            return self.cart.Sub([a in names for a in axes])
        self.data = sub("data")
        self.replicas = sub("data", "depth", "height", "width")
        self.depth = sub("depth")
        self.height = sub("height")
        self.width = sub("width")
        self.spatial = sub("depth", "height", "width")
        self.channel = sub("channel")
        self.pipeline = sub("pipeline")

    @property
    def rank(self):
        return self.world.Get_rank()

    def coordinates(self):
        """This rank's coordinate on each axis, by name (traces and reports use it)."""
        names = ("data", "depth", "height", "width", "channel", "stage")
        return dict(zip(names, (int(c) for c in self.coords)))

    @property
    def data_rank(self):
        return self.coords[0]

    @property
    def spatial_coords(self):
        """(row block, column block) of this rank."""
        return self.coords[2], self.coords[3]

    @property
    def depth_coord(self):
        """Depth block of this rank (volumes split spatial=PxQxR)."""
        return self.coords[1]

    @property
    def stage(self):
        return self.coords[5]

    def free(self):
        for c in (self.pipeline, self.channel, self.spatial, self.width, self.height, self.depth, self.replicas,
                  self.data, self.cart):
            if c != MPI.COMM_NULL:
                c.Free()
