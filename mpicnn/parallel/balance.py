"""Dynamic load balancing for data parallelism (``--balance dynamic``).

Each rank times its own compute (forward and backward, not the waits for others) and
counts the samples it computed. Every ``every`` steps the ranks allgather their rates
(samples per second) and the next batches are cut in proportion to them
(``batch_plan.pieces``). The first cut comes sooner, after ``FIRST`` measured steps (the
run's first step pays one-off costs and is not measured), so short runs are balanced too. Ranks that share a data index (spatial or channel blocks of
the same samples) move together, so each data index takes its slowest member's rate.
Everyone computes the shares from the same gathered numbers: they agree without a vote.
"""
import numpy as np


FIRST = 2  # measured steps before the first re-cut


class Balancer:
    def __init__(self, world, data_rank, data_ranks, every):
        self.world, self.data_rank, self.data_ranks, self.every = world, data_rank, data_ranks, every
        self.shares = None  # None: balanced blocks until the first measurement
        self.history = []  # (step, shares) each time they change, for the summary
        self._samples = self._seconds = 0.0
        self._steps = 0
        self._warm = False  # the first step recorded (imports, allocations, caches) is skipped

    def record(self, samples, seconds):
        if not self._warm:
            self._warm = True
            return
        self._samples += samples
        self._seconds += seconds
        self._steps += 1

    def update(self, step):
        """After step ``step``: every ``every`` steps, re-measure and re-cut (collective)."""
        if self._steps < (self.every if self.history else min(FIRST, self.every)):
            return
        rate = self._samples / max(self._seconds, 1e-9)
        mine = np.array([self.data_rank, rate], dtype=np.float64)
        table = np.empty((self.world.Get_size(), 2), dtype=np.float64)
        self.world.Allgather(mine, table)
        rates = np.full(self.data_ranks, np.inf)
        for index, r in table:
            rates[int(index)] = min(rates[int(index)], r)
        self.shares = [float(r) for r in rates / rates.sum()]
        self.history.append((step + 1, self.shares))
        self._samples = self._seconds = 0.0
        self._steps = 0
