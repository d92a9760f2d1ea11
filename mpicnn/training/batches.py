"""The run's data: the training and test sets, the run's length, the global sample
order of each epoch and this rank's piece of every step's batch (and, under spatial
splits, only its rows and columns of each image)."""
import numpy as np

from .. import backend, data
from ..errors import UserError
from ..parallel import batch_plan
from ..parallel.blocks import block_range
from ..parallel.failure import agree


def run_length(args, train_set):
    """(steps per epoch, total steps) of the run."""
    per_epoch = data.steps_per_epoch(train_set.num_samples, args.batch_size)
    return per_epoch, args.steps or args.epochs * per_epoch


class Batches:
    """This rank's reading of the data. ``grid`` is the process grid (data rank and
    spatial block); ``prepare``: this rank generates a built-in dataset for its node."""

    def __init__(self, args, comm, spec, grid, dtype, prepare):
        self.args, self.spec, self.grid, self.dtype = args, spec, grid, dtype
        with agree(comm):
            if prepare:
                data.prepare(args.dataset)  # built-ins are generated once per node
        with agree(comm):
            self.train_set = data.open_dataset(args.dataset, "train")
            self.test_set = data.open_dataset(args.dataset, "test") if data.has_split(args.dataset, "test") else None
            self._check_batch()
            self.block = self._spatial_block(self.train_set.shape[1:])
        self.steps_per_epoch, self.total_steps = run_length(args, self.train_set)
        self.balancer = None  # set by a layout that re-cuts batches by measured speed
        self._order, self._order_epoch = None, None  # the sample order of the current epoch

    def _check_batch(self):
        n, b, d, m = self.train_set.num_samples, self.args.batch_size, self.spec.data, self.args.micro_batches
        if b < d * m:
            per = f" times {m} micro-batches" if m > 1 else ""
            ranks = f"{d} data-parallel ranks" if d > 1 else "1 data-parallel rank"
            raise UserError(f"--batch-size {b} is smaller than the {ranks}{per}; use a batch of at least {d * m}")
        if b > n:
            raise UserError(f"--batch-size {b} is larger than the {n} training samples of {self.args.dataset}")

    def _spatial_block(self, image_size):
        """Depths, rows and columns of every image this rank reads: all of them unless the
        grid splits them (then its balanced block; DESIGN.md, data locality)."""
        P, Q = self.spec.spatial
        depth = self.spec.depth
        if self.spec.blocks == 1:
            return {}
        if len(image_size) == 2 and depth > 1:
            raise UserError(f"--parallel {self.args.parallel} splits depth, and {self.args.dataset} holds "
                            f"images (C, H, W) = {self.train_set.shape}; split images with spatial=PxQ")
        parts = ((depth,) if len(image_size) == 3 else ()) + (P, Q)
        if any(s < p for s, p in zip(image_size, parts)):
            raise UserError(f"--parallel spatial={'x'.join(map(str, parts))} cuts "
                            f"{'x'.join(map(str, image_size))} inputs into empty blocks; use at most "
                            f"{'x'.join(map(str, image_size))} blocks")
        r, c = self.grid.spatial_coords
        block = {"rows": block_range(image_size[-2], P, r), "cols": block_range(image_size[-1], Q, c)}
        if len(image_size) == 3:
            block["depths"] = block_range(image_size[0], depth, self.grid.depth_coord)
        return block

    def pieces(self):
        """This rank's (lo, hi) of the global batch per micro-batch (batch_plan)."""
        shares = self.balancer.shares if self.balancer else None
        return batch_plan.pieces(self.args.batch_size, self.args.micro_batches, self.spec.data,
                                 self.grid.data_rank, shares)

    def read(self, dataset, indices):
        """Images (NCHW, this rank's rows and columns) and labels of ``indices``."""
        return dataset.read(indices, dtype=self.dtype, **self.block)

    def next_batch(self, step, read=None):
        """(images, labels, pieces) of this rank for global step ``step``: its pieces of
        the step's batch in the epoch's global sample order, images on the backend.
        ``read(dataset, indices)`` replaces ``self.read`` (a pipeline stage reads less)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._order_epoch != epoch:
            self._order = data.epoch_order(self.train_set.num_samples, self.args.seed, epoch)
            self._order_epoch = epoch
        pieces = self.pieces()
        batch = data.batch_indices(self._order, k, self.args.batch_size)
        x, y = (read or self.read)(self.train_set, np.concatenate([batch[lo:hi] for lo, hi in pieces]))
        return backend.asarray(x), y, pieces

    def test_range(self):
        """This data rank's block [lo, hi) of the test set."""
        return block_range(self.test_set.num_samples, self.spec.data, self.grid.data_rank)

    def close(self):
        for ds in (self.train_set, self.test_set):
            if ds is not None:
                ds.close()
