"""The process grid: one Cartesian communicator over (sample, height, width, channel,
stage) and one sub-communicator per axis and per combination a strategy reduces over."""
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
    (height x width), where global pooling and BatchNorm statistics are reduced;
    ``pipeline``: the stages of one model copy (rank = stage), where activations and
    their gradients travel point to point. A stage's parameters are replicated over
    ``replicas`` of that stage only.

    ``comm`` holds the training ranks only: parameter servers are outside the grid.
    """

    def __init__(self, comm, spec: ParallelSpec):
        self.spec = spec
        self.world = comm
        self.cart = comm.Create_cart(list(spec.dims), periods=[False] * 5, reorder=False)
        self.coords = tuple(self.cart.Get_coords(self.cart.Get_rank()))
        self.data = self.cart.Sub([True, False, False, False, False])
        self.replicas = self.cart.Sub([True, True, True, False, False])
        self.height = self.cart.Sub([False, True, False, False, False])
        self.width = self.cart.Sub([False, False, True, False, False])
        self.spatial = self.cart.Sub([False, True, True, False, False])
        self.channel = self.cart.Sub([False, False, False, True, False])
        self.pipeline = self.cart.Sub([False, False, False, False, True])

    @property
    def rank(self):
        return self.world.Get_rank()

    @property
    def data_rank(self):
        return self.coords[0]

    @property
    def spatial_coords(self):
        """(row block, column block) of this rank."""
        return self.coords[1], self.coords[2]

    @property
    def stage(self):
        return self.coords[4]

    def free(self):
        for c in (self.pipeline, self.channel, self.spatial, self.width, self.height, self.replicas, self.data, self.cart):
            if c != MPI.COMM_NULL:
                c.Free()
