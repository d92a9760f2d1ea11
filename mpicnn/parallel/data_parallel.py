"""Data parallelism: the layers' view of a sample-split batch.

Which samples of the global batch each data rank computes is ``batch_plan.pieces``
(contiguous blocks per micro-batch); the loss on each rank is weighted by its share of
the batch so that the summed gradient equals the gradient of the global-batch mean
exactly (see training/grid_step.py). The grid layout sets ``sample_offset`` before each piece.
"""
import time

from mpi4py import MPI

from . import events

from ..nn.module import Context


class DataParallelContext(Context):
    """Tells layers where this rank's samples sit in the global batch, and reduces
    BatchNorm statistics over the data ranks when ``sync_bn``."""

    def __init__(self, comm, sync_bn=False):
        self.comm = comm
        self.sync_bn = sync_bn and comm.Get_size() > 1

    def allreduce_stats(self, array):
        if self.sync_bn:
            t0 = time.perf_counter()
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
            events.count(time.perf_counter() - t0)
        return array
