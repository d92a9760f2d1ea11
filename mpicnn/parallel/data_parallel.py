"""Data parallelism: the layers' view of a sample-split batch.

The global batch is cut into contiguous blocks, one per data rank (sizes differ by at
most one). The loss on each rank is weighted by its share of the batch so that the
summed gradient equals the gradient of the global-batch mean exactly (see train.py).
"""
from mpi4py import MPI

from ..nn.module import Context
from .blocks import block_range


class DataParallelContext(Context):
    """Tells layers where this rank's samples sit in the global batch, and reduces
    BatchNorm statistics over the data ranks when ``sync_bn``."""

    def __init__(self, comm, sync_bn=False):
        self.comm = comm
        self.sync_bn = sync_bn and comm.Get_size() > 1

    def allreduce_stats(self, array):
        if self.sync_bn:
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def local_block(self, batch_size):
        """``[lo, hi)`` of this rank's samples in a global batch of ``batch_size``."""
        return block_range(batch_size, self.comm.Get_size(), self.comm.Get_rank())
