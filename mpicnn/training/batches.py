"""The run's data: the training and test sets, the run's length, the global sample
order of each epoch (over fixed shards with ``--data-shards``) and this rank's piece of
every step's batch (and, under spatial splits, only its rows and columns of each image,
augmented by ``--augment``), with ``--prefetch`` read one step ahead in a background
thread, and with ``--stage-dir`` from a node-local copy of the samples its node reads."""
import numpy as np

from .. import backend, data
from ..data import augment, order, stage
from ..errors import UserError
from ..parallel import batch_plan
from ..parallel.blocks import block_range
from ..parallel.collectives import gather_objects, node_gather, node_local
from ..parallel.failure import agree
from .prefetch import Prefetch


def run_length(args, train_set):
    """(steps per epoch, total steps) of the run."""
    if args.data_shards:
        per_epoch = order.sharded_steps(train_set.num_samples, args.data_shards, args.batch_size)
    else:
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
        self.augment = augment.parse(args.augment)
        with agree(comm):
            self.train_set = data.open_dataset(args.dataset, "train")
            self.test_set = data.open_dataset(args.dataset, "test") if data.has_split(args.dataset, "test") else None
            self._check_batch()
            self.block = self._spatial_block(self.train_set.shape[1:])
            if self.augment:
                self.augment.check(self.train_set.shape)
        self.steps_per_epoch, self.total_steps = run_length(args, self.train_set)
        self.balancer = None  # set by a layout that re-cuts batches by measured speed
        self._order, self._order_epoch = None, None  # the sample order of the current epoch
        self.staging = self._stage(comm) if args.stage_dir else None
        self._fill_cache_in_runs()
        self.shared_bytes = {}  # epoch -> training bytes this rank read from the shared file
        self._even_pieces = None  # pieces() without a balancer, once computed
        self.prefetch = Prefetch(enabled=args.prefetch)

    def _check_batch(self):
        n, b, d, m = self.train_set.num_samples, self.args.batch_size, self.spec.data, self.args.micro_batches
        if b < d * m:
            per = f" times {m} micro-batches" if m > 1 else ""
            ranks = f"{d} data-parallel ranks" if d > 1 else "1 data-parallel rank"
            raise UserError(f"--batch-size {b} is smaller than the {ranks}{per}; use a batch of at least {d * m}")
        if b > n:
            raise UserError(f"--batch-size {b} is larger than the {n} training samples of {self.args.dataset}")
        K = self.args.data_shards
        if K:
            if K > n:
                raise UserError(f"--data-shards {K} is more than the {n} training samples; use at most {n}")
            if K % d:
                raise UserError(f"--data-shards {K} cannot be split evenly over {d} data-parallel ranks (each "
                                f"reads only its own shards); use a multiple of {d} shards")
            if self.args.balance == "dynamic" and d > 1:
                raise UserError(f"--data-shards {K} fixes which shards each data rank reads, and --balance "
                                f"dynamic would move samples between them; use --balance static")
            order.check_shards(n, K, b, m)

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
        """This rank's (lo, hi) of the global batch per micro-batch (batch_plan), a
        tuple; the balanced cut is computed once (this runs inside the step's data wait)."""
        shares = self.balancer.shares if self.balancer else None
        if shares is None and self._even_pieces is not None:
            return self._even_pieces
        cut = tuple(batch_plan.pieces(self.args.batch_size, self.args.micro_batches, self.spec.data,
                                      self.grid.data_rank, shares))
        if shares is None:
            self._even_pieces = cut
        return cut

    def read(self, dataset, indices):
        """Images (NCHW, this rank's rows and columns) and labels of ``indices``."""
        return dataset.read(indices, dtype=self.dtype, **self.block)

    def next_batch(self, step, read=None):
        """(images, labels, pieces) of this rank for global step ``step``: its pieces of
        the step's batch in the epoch's global sample order, images on the backend.
        ``read(dataset, indices)`` replaces ``self.read`` (a pipeline stage reads less).
        The batch was read during the previous step (``read_ahead``) if its pieces are
        still this rank's (only here do the arrays reach the backend)."""
        read = read or self.read
        pieces = self.pieces()
        x, y = self.prefetch.take((step, pieces), lambda: self._fetch(step, pieces, read))
        return backend.asarray(x), y, pieces

    def read_ahead(self, step, read=None):
        """Start reading step ``step + 1``'s batch in the background, with this step's
        pieces (called during the step, once it has its batch)."""
        if self.prefetch.enabled and step + 1 < self.total_steps:
            read, pieces = read or self.read, self.pieces()
            self.prefetch.ahead((step + 1, pieces), lambda: self._fetch(step + 1, pieces, read))

    def _fetch(self, step, pieces, read):
        """Host images and labels of this rank's ``pieces`` of step ``step`` (one thread at a time)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._order_epoch != epoch:
            n, K = self.train_set.num_samples, self.args.data_shards
            self._order = (order.sharded_order(n, K, self.args.batch_size, self.args.micro_batches, self.args.seed,
                                               epoch) if K else data.epoch_order(n, self.args.seed, epoch))
            self._order_epoch = epoch
        batch = data.batch_indices(self._order, k, self.args.batch_size)
        source = self.train_set
        if self.augment:
            source = augment.EpochView(self.train_set, self.augment, self.args.seed, epoch)
        before = self.train_set.bytes_read
        x, y = read(source, np.concatenate([batch[lo:hi] for lo, hi in pieces]))
        self.shared_bytes[epoch] = self.shared_bytes.get(epoch, 0) + self.train_set.bytes_read - before
        return x, y

    # ---- node-local staging -------------------------------------------------------------
    def _reads(self, data_rank):
        """Sorted training samples data rank ``data_rank`` reads: its shards, or all."""
        K, D = self.args.data_shards, self.spec.data
        if not K:
            return np.arange(self.train_set.num_samples)
        bounds = order.shard_bounds(self.train_set.num_samples, K)
        mine = bounds[data_rank * K // D:(data_rank + 1) * K // D]
        return np.concatenate([np.arange(lo, hi) for lo, hi in mine])

    def _fill_cache_in_runs(self):
        """A rank whose run reads at least as many samples as it may ever be handed will
        come back for all of them: let the dataset cache fetch each missing sample's run
        of neighbours among those (``Dataset.fill_in_runs``), so that it is whole after a
        few steps, not after many epochs of scattered reads."""
        mine = self._reads(self.grid.data_rank)
        if self.total_steps * (self.args.batch_size // self.spec.data) >= len(mine):
            self.train_set.fill_in_runs(mine)

    def _stage(self, comm):
        """Copy the samples this node's ranks read to --stage-dir (node-local rank 0 copies,
        the others wait), then read the training set through the copy. Returns what the
        copy took: {"samples", "bytes_read" (from the shared file), "path"}."""
        first = node_local(comm)[0] == 0
        wanted = sorted(set(node_gather(comm, self.grid.data_rank)))
        indices = np.unique(np.concatenate([self._reads(d) for d in wanted]))
        path, nbytes = stage.staged_path(self.train_set, indices, self.args.stage_dir), 0
        with agree(comm):
            if first:
                path, nbytes = stage.stage(self.train_set, indices, self.args.stage_dir)
        with agree(comm):  # the copy is whole on every node before anyone reads it
            self.train_set = stage.StagedSplit(self.train_set, path)
        return {"samples": int(len(indices)) if first else 0, "bytes_read": int(nbytes), "path": path}

    def figures(self, comm):
        """The run's data figures over ``comm`` (collective): training bytes each rank read
        from the shared file per epoch and, with staging, what each node's copy read."""
        epochs = max(self.shared_bytes, default=-1) + 1
        mine = [self.shared_bytes.get(e, 0) for e in range(epochs)]
        out = {"shared_bytes_per_rank_epoch": gather_objects(comm, mine)}
        if self.staging is not None:
            out["staging"] = [s for s in gather_objects(comm, self.staging) if s["samples"]]
        return out

    def eval_range(self, dataset):
        """This data rank's block [lo, hi) of ``dataset``, the set being evaluated."""
        return block_range(dataset.num_samples, self.spec.data, self.grid.data_rank)

    def close(self):
        self.prefetch.close()  # a read in flight ends before its file closes
        for ds in (self.train_set, self.test_set):
            if ds is not None:
                ds.close()
