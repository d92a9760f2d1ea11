"""A parameter-server worker (one of the first W ranks under ``--parallel ps=K``): a
data-parallel step over the workers whose gradients go to the servers instead of an
allreduce, and whose parameters come back from them, at most ``--staleness`` versions
old (the protocol: ``mpicnn.parallel.ps``). It keeps no optimizer state and writes no
checkpoints: the servers do both. The step's global figures arrive with the version the
servers make of it, so the worker reports a step when that version arrives."""
import signal
import time

import numpy as np

from .. import backend
from ..parallel.collectives import self_comm
from ..parallel.failure import agree
from ..parallel.ps import CORRECT, HALT, LOSS, LR, NONFINITE, SIGNUM, VERSION, ShardPlan, WorkerChannel, wait_a_moment
from ..signals import STOP_SIGNALS
from .grid_step import GridLayout
from .layout import Outcome


class PSWorker(GridLayout):
    """``comm``: the workers; ``link``: every rank of the job (the ps messages);
    ``spec``: the job's layout."""

    def __init__(self, args, link, comm, spec, stop):
        self.link = link
        # The workers form a plain data-parallel grid; gradients are only bucketed (kept
        # contiguous and checked for NaN/Inf) on this rank, never reduced among workers.
        super().__init__(args, comm, stop, gradients_over=self_comm(), optimized=lambda model: [])
        self.world = link
        self.layout_text = f"{spec.size} rank(s) ({spec})"
        self.job_spec = spec
        self.window = args.staleness + 1  # versions that can be in flight to this worker
        self.plan = ShardPlan(self.model, spec.ps)
        self.channel = WorkerChannel(link, self.plan, [spec.data + k for k in range(spec.ps)], self.window,
                                     with_buffers=self.rank == 0)
        self.version = self.start_step  # of the parameters in the model
        self.next_post = self.start_step + 1  # receives are posted for versions up to next_post - 1
        for _ in range(self.window):
            self._post()
        self.pushed = self.start_step - 1  # last step whose gradients went out
        self.halted = False  # the servers ended the run early
        self.drained = False
        self.signum = 0
        self.staleness_sum = 0  # sum over steps of (step - version used), for the summary

    def _post(self):
        if self.next_post <= self.total_steps:
            self.channel.post(self.next_post)
            self.next_post += 1

    # ---- the step ----------------------------------------------------------------------
    def step(self, step):
        with self.clock.phase("exchange"):  # waiting for a recent enough version
            t0 = time.perf_counter()
            self._pull(step - self.args.staleness)
            t_wait = time.perf_counter() - t0
        if self.halted:
            return None  # a stop or an error
        self.staleness_sum += step - self.version
        outcome = super().step(step)
        outcome.comm_seconds += t_wait
        return outcome

    def exchange(self, loss_sum, correct):
        """Push this step's gradients and figures to the servers (no collective among the
        workers: the servers sum the figures and send them back with the version)."""
        finite = np.isfinite(loss_sum) and self.buckets.all_finite()
        figures = np.array([loss_sum, correct, not finite]
                           + [self.stop.signal == sig for sig in STOP_SIGNALS], dtype=np.float64)
        grads = [backend.to_host(p.grad) for _, p in self.plan.trainable]
        buffers = [backend.to_host(b) for _, b in self.model.named_buffers()] if self.rank == 0 else []
        self.channel.push(self.clock.step, figures, grads, buffers)
        self.pushed = self.clock.step
        return Outcome(reported=False)

    def update(self, lr):
        pass  # the servers step the optimizer

    def end_step(self, step, outcome, lr):
        self.model.zero_grad()

    def _pull(self, need):
        """Read every version that has arrived, in order, until version ``need`` is in or
        the servers halt the run; then load the newest into the model."""
        arrived = []
        while not self.halted:
            v = self.version + len(arrived) + 1
            if v < self.next_post and self.channel.arrived(v):
                self._on_version(self.channel.head(v))
                arrived.append(v)
            elif v - 1 >= need:
                break
            else:
                wait_a_moment()
        if arrived:
            trainable = self.plan.trainable
            for arrays, shard in zip(self.channel.parameters(arrived[-1]), self.plan.shards):
                for src, i in zip(arrays, shard):
                    trainable[i][1].data[...] = backend.asarray(src)
            self.version = arrived[-1]
            if not self.halted:
                for _ in arrived:
                    self._post()

    def _on_version(self, head):
        """The servers' figures and decisions about step v - 1: progress, metrics, skips, the end."""
        v = int(head[VERSION])
        epoch = (v - 1) // self.steps_per_epoch
        if head[NONFINITE] and self.args.skip_nonfinite:
            self.figures.nonfinite(v - 1, epoch)  # counted and reported; the servers skipped it
        self.figures.step_done(v, epoch, head[LOSS], head[CORRECT], head[LR], logged=not head[NONFINITE])
        if head[HALT]:
            self.halted, self.signum = True, int(head[SIGNUM])

    # ---- evaluation, the end -------------------------------------------------------------
    def evaluate(self, done, dataset=None):
        """Every worker evaluates version ``done``: the workers meet here."""
        if not self.drained:
            self._pull(done)
            if self.halted:
                return None
        return super().evaluate(done, dataset)

    def checkpoint(self, step):
        pass  # the servers write checkpoints

    def save(self, path, step):
        pass  # and --save

    def finish(self, step, stopped):
        """Take the versions still to come, settle the traffic, and raise the servers'
        error (non-finite step, checkpoint not written) here too."""
        self._pull(self.total_steps)
        self.channel.drain(range(self.version + 1, self.next_post), self.pushed)
        self.drained = True
        with agree(self.link):
            pass  # the servers raise their error in this vote, if they have one
        step, stopped = super().finish(self.version, stopped)
        return step, (signal.Signals(self.signum).name if self.signum else stopped)

    def summary_extras(self, summary):
        steps_run = summary["steps"] - self.start_step
        s = self.args.staleness
        summary.update(staleness=s, mean_staleness=self.staleness_sum / steps_run if steps_run else 0.0)
        self.say(f"mpicnn: parameter server: {self.job_spec.data} worker(s) + {self.job_spec.ps} server rank(s), "
                 f"staleness bound {s}; worker 0's weights were {summary['mean_staleness']:.2f} steps old "
                 f"on average")

    def close(self):
        super().close()
        self.comm.Free()
        self.link.Free()
