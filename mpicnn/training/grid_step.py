"""The compute of the data/spatial/channel grid (``--parallel data=D,spatial=PxQ,channel=C``):
every rank computes its piece of every micro-batch; gradients are summed in buckets
launched during backward (the step around it is ``GridRank.step``)."""
import time

import numpy as np

from .grid_rank import GridRank


class GridLayout(GridRank):
    @property
    def pixels(self):
        """Pixels (voxels) of one whole map: the divisor of a dense loss's mean."""
        return int(np.prod(self.train_set.shape[1:]))

    def compute(self, x, y, pieces):
        """Forward and backward of this rank's piece of every micro-batch; parameter
        gradients accumulate, and only the last micro-batch launches their reduction.
        Each piece's loss gradient is weighted by its share of the global batch (and
        1/S for the S spatial blocks that each hold the replicated head; a dense output
        is split, not replicated). Regression counts no correct samples.
        Returns (loss sum, correct, seconds of compute excluding communication waits)."""
        B, seam, clock = self.args.batch_size, self.context.grad_seam, self.clock
        t0, comm0 = time.perf_counter(), self.buckets.comm_seconds
        loss_sum = correct = 0.0
        offset = 0
        for m, (lo, hi) in enumerate(pieces):
            n = hi - lo
            xs, ys = x[offset:offset + n], y[offset:offset + n]
            offset += n
            self.buckets.begin(reduce=m == len(pieces) - 1)
            if n == 0:
                continue
            self.context.sample_offset = lo
            with clock.phase("forward"):
                out = self.model.forward(xs)
                if self.dense:
                    # Split maps: this block's share of the piece's mean over all its pixels;
                    # nothing is replicated, so no 1/S (the blocks' losses add up).
                    loss = self.criterion(out, ys, total=n * self.pixels)
                    weight = n / B
                else:
                    loss = self.criterion(out, ys)
                    weight = n / B / seam
            if self.read_ahead_layer is None:
                self.start_read_ahead()  # the next batch is read during backward
            with clock.phase("backward"):
                self.model.backward(self.criterion.backward() * self.dtype.type(weight))
            loss_sum += loss * n
            if self.dense:  # correct pixels, in samples' worth: correct / B is the pixel accuracy
                correct += self.criterion.correct / self.pixels
            elif self.task == "classification":
                correct += self.criterion.correct  # counted on the device by the loss
        seconds = time.perf_counter() - t0 - (self.buckets.comm_seconds - comm0)
        samples = sum(hi - lo for lo, hi in pieces)
        self.own_compute = (seconds, samples)
        others = self.others_per_sample * samples if self.others_per_sample else None
        seconds += self.straggler.after(seconds, others)
        return loss_sum, correct, seconds

    def finish(self, step, stopped):
        # This rank's halo bytes and waiting seconds per layer, of the training steps only.
        self.halo = {k: dict(v) for k, v in getattr(self.context, "stats", {}).items()}
        return step, stopped

    def summary_extras(self, summary):
        if self.halo:
            summary["halo"] = self.halo
        if self.balancer and self.balancer.history:
            summary["balance"] = self.balancer.history[-1][1]  # each data rank's share of a batch
            self.say("mpicnn: dynamic balance: data ranks take " + ", ".join(
                f"{100 * s:.0f}%" for s in summary["balance"]) + " of each batch")
