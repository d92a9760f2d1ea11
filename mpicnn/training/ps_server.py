"""A parameter server (one of the last K ranks under ``--parallel ps=K``): it owns some
tensors and their optimizer state, sums the workers' gradients of each step, steps the
optimizer and sends the new values back (the protocol: ``mpicnn.parallel.ps``). It
reads no batches and computes no layers: its step is the workers' pushes. A version's
checkpoint is written before the workers hear of it, so the server writes in
``end_step``; the loop's checkpoint calls are no-ops here.

Stop signals: the workers' (from their pushes) plus the servers' own, summed over the
servers each step, so every server stops at the same step."""
import sys

import numpy as np

from .. import backend, data
from ..errors import UserError
from ..faults import FaultPlan
from ..parallel.collectives import bcast_array, sum_in_place
from ..parallel.failure import agree
from ..parallel.ps import ServerChannel, ShardPlan
from ..signals import STOP_SIGNALS
from . import checkpoints
from .batches import run_length
from .figures import nonfinite_error
from .layout import Layout, Outcome
from .model_state import ModelState, build_model
from .phases import PhaseClock


class PSServer(Layout):
    """``comm``: the servers (the first writes checkpoints); ``link``: every rank of the job."""

    def __init__(self, args, link, comm, spec, stop):
        self.args, self.link, self.comm, self.spec, self.stop = args, link, comm, spec, stop
        self.world, self.rank, self.reports = link, comm.Get_rank(), False  # rank 0, a worker, reports
        self.layout_text = f"{spec.size} rank(s) ({spec})"
        self.clock = PhaseClock()
        with agree(comm):
            self.train_set = data.open_dataset(args.dataset, "train")  # for shapes and epoch length
        self.test_set = None
        self.steps_per_epoch, self.total_steps = run_length(args, self.train_set)
        model = build_model(args, comm, self.train_set.shape, self.train_set.num_classes, np.dtype(args.dtype),
                            self.train_set.task)
        self.state = ModelState(args, comm, model, say=lambda *text: None)
        self.start_step = self.state.restore(self.total_steps, optimized=self._owned)
        backend.to_backend(self.model, self.optimizer)
        window = args.staleness + 1  # steps whose gradients can be in flight
        self.channel = ServerChannel(link, self.plan, self.rank, spec.data, window)
        self.next_post = self.start_step  # receives are posted for steps up to next_post - 1
        for _ in range(window):
            self._post()
        self.failure = None
        self.faults = FaultPlan(link.Get_rank())  # raise and kill: a server can fail too

    model = property(lambda self: self.state.model)
    optimizer = property(lambda self: self.state.optimizer)

    def _owned(self, model):
        """This server's tensors (called by restore once --freeze has marked the frozen ones)."""
        self.plan = ShardPlan(model, self.spec.ps)
        self.owned = [self.plan.trainable[i] for i in self.plan.shards[self.rank]]
        return self.owned

    def _post(self):
        if self.next_post < self.total_steps:
            self.channel.post(self.next_post)
            self.next_post += 1

    # ---- the step: the workers' pushes --------------------------------------------------
    def step(self, version):
        kinds = self.faults.fire(version)  # raise and kill act inside fire()
        if "term" in kinds:
            self.stop.request()
        if "nan" in kinds:
            print(f"mpicnn: fault 'nan' acts on workers only; ignored on server rank "
                  f"{self.link.Get_rank()}", file=sys.stderr, flush=True)
        with self.clock.phase("exchange"):
            figures, arrays = self.channel.receive(version)
            self._load(arrays)
            mine = np.array([self.stop.signal == sig for sig in STOP_SIGNALS], dtype=np.float64)
            sum_in_place(self.comm, mine)  # a signal to one server stops all
        figures[3:] += mine
        signum = next((sig for sig, n in zip(STOP_SIGNALS, figures[3:]) if n), 0)
        return Outcome(loss_sum=figures[0], correct=figures[1], nonfinite=bool(figures[2]), signum=int(signum),
                       reported=False)

    def _load(self, arrays):
        """The workers' gradients, summed in worker order (the same bits every run), and
        worker 0's buffers."""
        for j, (_, p) in enumerate(self.owned):
            p.grad[...] = backend.asarray(arrays[0][j])
            for worker in arrays[1:]:
                p.grad += backend.asarray(worker[j])
        for (_, dst), src in zip(self.model.named_buffers(), arrays[0][len(self.owned):]):
            dst[...] = backend.asarray(src) if dst.ndim else src  # 0-d counters stay on the host

    def nonfinite(self, step, epoch):
        if self.args.skip_nonfinite:
            self.figures.nonfinite(step, epoch)  # counted
        else:
            self.failure = nonfinite_error(step, epoch)  # every rank raises it at the end

    def end_step(self, step, outcome, lr):
        """Write what is due after this version, then send it with the servers' decisions."""
        version = step + 1
        if self.failure is None:
            self._write(version, outcome.signum or version == self.total_steps, outcome.signum)
        outcome.halt = bool(outcome.signum) or self.failure is not None
        if not outcome.halt:
            self._post()
        self.channel.send([version, outcome.loss_sum, outcome.correct, outcome.nonfinite, outcome.signum, lr,
                           outcome.halt], [backend.to_host(p.data) for _, p in self.owned])

    def _write(self, version, last, signum):
        """Checkpoints and --save due after ``version`` (``last``: the run ends there)."""
        a = self.args
        try:
            if a.checkpoint_dir and (last or (a.checkpoint_every and version % a.checkpoint_every == 0)):
                checkpoints.checkpoint(self.comm, self.rank == 0, a, version, self.steps_per_epoch,
                                       self.global_state, self.train_set.task)
            if a.save and version == self.total_steps and not signum:
                checkpoints.write(self.comm, self.rank == 0, a.save, a, version, self.steps_per_epoch,
                                  self.global_state, self.train_set.task)
        except UserError as e:
            self.failure = e  # agreed among the servers; the workers learn it at the end

    def checkpoint(self, step):
        pass  # written in end_step, before the workers hear of the version

    def save(self, path, step):
        pass  # likewise

    def finish(self, version, stopped):
        """Settle the traffic, raise an error on every rank if there is one, and give every
        server all final parameters."""
        self.channel.drain(range(version, self.next_post))
        with agree(self.link):
            if self.failure is not None:
                raise self.failure
        self.global_state()
        return version, stopped

    def global_state(self):
        """Every tensor and its optimizer state, broadcast by its owner to all servers."""
        states = {}
        owned = dict(self.owned)
        for (name, p), owner in zip(self.plan.trainable, self.plan.owner):
            bcast_array(self.comm, p.data, owner)
            mine = self.optimizer.state[name] if name in owned else {}
            states[name] = {}
            for s in self.optimizer.state_names:
                array = mine.get(s)
                if array is None:
                    array = np.empty(p.data.shape, p.data.dtype)
                states[name][s] = backend.to_host(bcast_array(self.comm, array, owner))
        optimizer = {"steps": self.optimizer.steps, "params": states}
        buffers = {n: backend.to_host(b) for n, b in self.model.named_buffers()}
        return self.state.global_parameters(), buffers, optimizer

    def close(self):
        self.train_set.close()
        self.comm.Free()
        self.link.Free()
