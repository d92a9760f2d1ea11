"""Parameter server, ``--parallel ps=K`` (with ``data=W``): W workers compute, K servers
own the parameters and the optimizer, and ``--staleness s`` bounds how far apart they run.

Layout. The world is W + K ranks: the first W are workers, the last K servers (so
rank 0 is a worker and reports). Workers form their own communicator and each runs a
data-parallel Trainer on it (``data=W``: the global batch is cut over the workers and
every piece's loss weighted by its share of it, as data parallelism does), except that
its gradients are pushed to the servers instead of allreduced, and it keeps no optimizer
state. Every trainable tensor belongs to one server (whole tensors, largest first onto
the least-loaded server: ``assign_tensors``); a server holds the optimizer state of its
tensors only, sums the W workers' gradients and applies the same optimizer and
learning-rate schedule as the Trainer. Worker 0's BatchNorm buffers travel with its
pushes and are the ones evaluated and saved.

Stale-synchronous parallel. Version v of the parameters is the state after v steps.
Worker w computes step t with the newest version it has received, which must be at
least ``t - s``; otherwise it waits. A server makes version v + 1 once it has all W
workers' gradients of step v (summed in worker order, then one optimizer step) and
sends it to every worker. ``s = 0`` is synchronous SGD and equals data parallelism;
with ``s > 0`` gradients are computed on weights up to s steps old and a slow worker
holds the others back only when they get s steps ahead. Epoch-end evaluation waits for
the version of that step, so all workers evaluate the same weights.

Messages. One message per (worker, server, step) each way, nonblocking point-to-point
on a duplicate of the job's communicator: a float64 header and the tensors, packed in
one byte buffer whose size comes from the plan (``Packet``). Pushes carry the worker's
loss sum, correct count, non-finite flag and stop-signal counts (there is no per-step
collective among the workers); every server sums them the same way, adds the stop
signals the servers themselves received (one small Allreduce among the servers), so all
servers take the same decisions and put them in the header of the parameters they send back: a stop ends
the run after that step (the servers checkpoint it), a non-finite step is skipped
(``--skip-nonfinite``) or ends the run with the error on every rank. Receives are
posted s + 1 steps ahead on both sides, so no message waits for its receive (memory:
s + 1 copies of the parameters per worker, and of a server's gradients per worker on
each server). Waits poll (Test and a short sleep), which keeps MPI moving and leaves
the core to the ranks that compute. At the end each worker tells each server the last
step it pushed, so every message sent is received and every receive posted for a step
never sent is cancelled.

Checkpoints are written by the first server in the global layout of every mode (each
server broadcasts its tensors and their optimizer state to the others), so a ps run
resumes on one rank and any checkpoint resumes under ps: servers load their tensors'
optimizer state, workers the parameters and buffers.
"""
import argparse
import gc
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

from .. import backend, data
from ..errors import UserError
from ..faults import FaultPlan
from ..io.metrics import MetricsLog
from ..nn.module import SERIAL
from ..nn.schedule import make_schedule
from ..signals import STOP_SIGNALS
from ..train import Trainer, _peak_rss_kb, nonfinite_error
from .device_buffers import MPIBuffer
from .failure import agree
from .gradsync import GradientBuckets

PUSH, PULL, DONE = 1, 2, 3  # message tags: gradients in, parameters out, last step pushed
# Header of a push: the step, then the Trainer's figures (loss sum, correct, non-finite,
# one count per stop signal), summed by the servers over the workers.
PUSH_HEAD = 1 + 3 + len(STOP_SIGNALS)
# Header of a parameter message: what every server decided about step version - 1.
# HALT: the run ends at this version before --steps (a stop signal, or an error).
VERSION, LOSS, CORRECT, NONFINITE, SIGNUM, LR, HALT = range(7)
PULL_HEAD = 7
POLL_SECONDS = 2e-4  # sleep between Tests while waiting


def assign_tensors(sizes, servers):
    """Server index of each tensor: largest first, each onto the server holding the fewest
    elements so far (ties: the lower index). The same answer on every rank."""
    load, owner = [0] * servers, [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        k = min(range(servers), key=lambda k: (load[k], k))
        owner[i] = k
        load[k] += sizes[i]
    return owner


class Packet:
    """One message: a float64 header, then arrays of fixed shapes and dtypes, in one byte
    buffer (8-byte aligned parts), so it travels as a single Isend/Irecv."""

    def __init__(self, head, specs):
        sizes = [8 * head] + [int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in specs]
        offsets = np.cumsum([0] + [-(-n // 8) * 8 for n in sizes])
        self.buf = np.empty(int(offsets[-1]), np.uint8)
        self.head = self.buf[:8 * head].view(np.float64)
        self.arrays = [self.buf[o:o + n].view(dtype).reshape(shape)
                       for (shape, dtype), o, n in zip(specs, offsets[1:], sizes[1:])]

    def isend(self, comm, dest, tag):
        return comm.Isend([self.buf, MPI.BYTE], dest, tag)

    def irecv(self, comm, source, tag):
        return comm.Irecv([self.buf, MPI.BYTE], source, tag)

    def check(self, status, sender):
        """A received message must fill the buffer exactly (a bigger one raised already)."""
        if status.Get_count(MPI.BYTE) != self.buf.nbytes:
            raise RuntimeError(f"parameter server: rank {sender} sent {status.Get_count(MPI.BYTE)} bytes, "
                               f"the plan says {self.buf.nbytes}")


def poll(requests, statuses=None):
    """Wait for all ``requests``: Test, then sleep briefly, so MPI progresses, signal
    handlers run, and an oversubscribed core goes to the ranks that compute."""
    while not MPI.Request.Testall(requests, statuses):
        time.sleep(POLL_SECONDS)


class ShardPlan:
    """The trainable tensors (model order), which server owns each, and the messages'
    layouts. Workers and servers build it from the same model, so they agree."""

    def __init__(self, model, servers):
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.owner = assign_tensors([p.data.size for _, p in self.trainable], servers)
        self.shards = [[i for i, k in enumerate(self.owner) if k == server] for server in range(servers)]
        self.buffers = [(b.shape, b.dtype) for _, b in model.named_buffers()]

    def tensors(self, server):
        return [(self.trainable[i][1].data.shape, self.trainable[i][1].data.dtype) for i in self.shards[server]]

    def push(self, server, with_buffers):
        """A worker's push to ``server``: its tensors' gradients, and worker 0's buffers."""
        return Packet(PUSH_HEAD, self.tensors(server) + (self.buffers if with_buffers else []))

    def pull(self, server):
        return Packet(PULL_HEAD, self.tensors(server))


def _agree_on_failure(link, failure):
    """Every rank raises the servers' error (non-finite step, checkpoint not written) or none."""
    with agree(link):
        if failure is not None:
            raise failure


class Worker(Trainer):
    """One of the first W ranks: a data-parallel Trainer over the workers whose
    gradients go to the servers and whose parameters come back from them."""

    def __init__(self, args, link, comm, spec, stop):
        self.link = link
        # The Trainer sees a plain data-parallel grid of the W workers.
        super().__init__(argparse.Namespace(**{**vars(args), "parallel": f"data={spec.data}"}), comm, stop)
        self.spec = spec  # the job's layout (the same data axis), for the summary line
        self.window = args.staleness + 1  # versions that can be in flight to this worker
        self.servers = [spec.data + k for k in range(spec.ps)]
        self.plan = ShardPlan(self.model, spec.ps)
        self.outbox = [self.plan.push(k, self.rank == 0) for k in range(spec.ps)]
        self.inbox = [[self.plan.pull(k) for k in range(spec.ps)] for _ in range(self.window)]
        self.requests = [[None] * spec.ps for _ in range(self.window)]
        self.version = self.start_step  # of the parameters in the model
        self.next_post = self.start_step + 1  # receives are posted for versions up to next_post - 1
        for _ in range(self.window):
            self._post()
        self.pushed = self.start_step - 1  # last step whose gradients went out
        self.halted = False  # the servers ended the run early
        self.signum = 0
        self.skipped = 0
        self.staleness_sum = 0  # sum over steps of (step - version used), for the summary

    def _gradient_buckets(self):
        # One rank's buckets: they keep the gradients contiguous and check them for
        # NaN/Inf; nothing is reduced among the workers.
        return GradientBuckets(self.model, MPI.COMM_SELF, int(self.args.bucket_mb * 2 ** 20))

    def _optimized_parameters(self):
        return []  # the optimizer and its state live on the servers

    def _checkpoint(self, step):
        pass  # the servers write checkpoints

    def _post(self):
        v = self.next_post
        if v <= self.total_steps:
            slot = v % self.window
            self.requests[slot] = [pkt.irecv(self.link, server, PULL)
                                   for pkt, server in zip(self.inbox[slot], self.servers)]
            self.next_post += 1

    def exchange(self, step, figures):
        """Push this step's gradients and figures to the servers. The sends complete before
        the next compute: MPI moves data only inside MPI calls (FACTS.md), so a send left
        pending over a compute phase would reach its server a step late."""
        grads = [p.grad for _, p in self.plan.trainable]
        for k, pkt in enumerate(self.outbox):
            pkt.head[0] = step
            pkt.head[1:] = figures
            shard = self.plan.shards[k]
            for dst, i in zip(pkt.arrays, shard):
                dst[...] = backend.to_host(grads[i])
            for dst, (_, buf) in zip(pkt.arrays[len(shard):], self.model.named_buffers()):  # worker 0
                dst[...] = backend.to_host(buf)
        poll([pkt.isend(self.link, server, PUSH) for pkt, server in zip(self.outbox, self.servers)])
        self.pushed = step

    def _pull(self, need):
        """Read every version that has arrived, in order, until version ``need`` is in or
        the servers halt the run; then load the newest into the model."""
        arrived = []
        statuses = [MPI.Status() for _ in self.servers]
        while not self.halted:
            v = self.version + len(arrived) + 1
            slot = v % self.window
            if v < self.next_post and MPI.Request.Testall(self.requests[slot], statuses):
                for pkt, status, server in zip(self.inbox[slot], statuses, self.servers):
                    pkt.check(status, server)
                    if pkt.head[VERSION] != v:
                        raise RuntimeError(f"parameter server: rank {server} sent version "
                                           f"{pkt.head[VERSION]:g}, expected {v}")
                self._on_version(self.inbox[slot][0].head)
                arrived.append(v)
            elif v - 1 >= need:
                break
            else:
                time.sleep(POLL_SECONDS)
        if arrived:
            trainable = self.plan.trainable
            for pkt, shard in zip(self.inbox[arrived[-1] % self.window], self.plan.shards):
                for src, i in zip(pkt.arrays, shard):
                    trainable[i][1].data[...] = backend.asarray(src)
            self.version = arrived[-1]
            if not self.halted:
                for _ in arrived:
                    self._post()

    def _on_version(self, head):
        """The servers' figures and decisions about step v - 1: progress, metrics, skips, the end."""
        v = int(head[VERSION])
        epoch = (v - 1) // self.steps_per_epoch
        if head[NONFINITE]:
            if self.args.skip_nonfinite:
                self.skipped += 1
                self.print0(f"mpicnn: step {v - 1}: non-finite loss or gradients, step skipped")
                self.metrics.write(step=v, epoch=epoch, skipped=True)
        elif v % self.args.log_every == 0 or v == self.total_steps:
            B, timed = self.args.batch_size, self.timed
            ips = timed["images"] / timed["seconds"] if timed["seconds"] else None
            self.progress.set_postfix(loss=f"{head[LOSS] / B:.4f}", acc=f"{head[CORRECT] / B:.3f}",
                                      img_s=f"{ips or 0:.0f}")
            self.metrics.write(step=v, epoch=epoch, loss=head[LOSS] / B, accuracy=head[CORRECT] / B,
                               lr=head[LR], images_per_sec=ips)
        self.progress.update(1)
        if head[HALT]:
            self.halted, self.signum = True, int(head[SIGNUM])

    def _drain(self):
        """After the last version: cancel the receives of versions that will not come, and
        tell every server the last step pushed (it receives those and cancels the rest)."""
        for v in range(self.version + 1, self.next_post):
            for request in self.requests[v % self.window]:
                request.Cancel()
                request.Wait()
        last = np.array([self.pushed], np.int64)
        for server in self.servers:
            self.link.Send(last, server, DONE)

    def fit(self):
        args = self.args
        B, s = args.batch_size, args.staleness
        self.metrics = MetricsLog(args.metrics if self.rank == 0 else None, append=self.start_step > 0)
        self.progress = self._progress()
        warmup = min(5, max((self.total_steps - self.start_step) // 4, 0))
        self.timed = timed = {"images": 0, "seconds": 0.0, "data": 0.0, "comm": 0.0}
        test_acc = test_loss = evaluated_at = None
        self.model.train()
        gc.collect()
        gc.freeze()  # as Trainer.fit: setup objects stay out of the collector's scans
        for step in range(self.start_step, self.total_steps):
            t0 = time.perf_counter()
            self._pull(step - s)
            if self.halted:
                break  # a stop or an error
            t_wait = time.perf_counter() - t0
            self.staleness_sum += step - self.version
            epoch = step // self.steps_per_epoch
            x, y, pieces = self.next_batch(step)
            t_data = time.perf_counter() - t0 - t_wait
            _, t_push, _ = self.train_step(step, x, y, pieces)  # global figures come with a later version
            self.model.zero_grad()
            if step - self.start_step >= warmup:
                timed["images"] += B
                timed["seconds"] += time.perf_counter() - t0
                timed["data"] += t_data
                timed["comm"] += t_wait + t_push
            done = step + 1
            if self.evaluation_due(done):
                self._pull(done)  # every worker evaluates version `done`: the workers meet here
                if self.halted:
                    break
                test_acc, test_loss = self.evaluate(self.test_set)
                evaluated_at = done
                self.metrics.write(step=done, epoch=epoch, test_accuracy=test_acc, test_loss=test_loss)
        self._pull(self.total_steps)
        self._drain()
        self.progress.close()
        _agree_on_failure(self.link, None)
        step = self.version
        if self.signum:
            return self._stop(step, signal.Signals(self.signum).name, self.metrics)
        peak_kb = _peak_rss_kb()
        if self.test_set is not None and evaluated_at != step:
            test_acc, test_loss = self.evaluate(self.test_set)
        summary = self._summary(step, timed, test_acc, test_loss)
        steps_run = step - self.start_step
        summary.update(skipped_steps=self.skipped, staleness=s,
                       mean_staleness=self.staleness_sum / steps_run if steps_run else 0.0,
                       peak_rss_mb=self.link.allreduce(peak_kb, op=MPI.MAX) / 1024)
        self.print0(f"mpicnn: parameter server: {self.spec.data} worker(s) + {self.spec.ps} server rank(s), "
                    f"staleness bound {s}; worker 0's weights were {summary['mean_staleness']:.2f} steps old "
                    f"on average")
        self.metrics.write(step=step, final=True, **summary)
        self.metrics.close()
        return summary

    def close(self):
        super().close()
        self.comm.Free()
        self.link.Free()


class ParameterServer(Trainer):
    """One of the last K ranks: owns some tensors and their optimizer state, sums the
    workers' gradients of each step, steps the optimizer, sends the new values back."""

    def __init__(self, args, link, comm, spec, stop):
        # The model half of Trainer.__init__ (build, resume, --init-from, --freeze): a
        # server reads no batches and computes no layers.
        # Stop signals: the workers' (from their pushes) plus the servers' own, summed over
        # the servers each step, so every server stops at the same step.
        self.args, self.link, self.comm, self.spec, self.stop = args, link, comm, spec, stop
        self.rank = comm.Get_rank()  # among the servers: the first writes checkpoints
        self.dtype = np.dtype(args.dtype)
        self.context = SERIAL
        with agree(comm):
            self.train_set = data.open_dataset(args.dataset, "train")  # for shapes and epoch length
        self.test_set = None
        self.steps_per_epoch = data.steps_per_epoch(self.train_set.num_samples, args.batch_size)
        self.total_steps = args.steps or args.epochs * self.steps_per_epoch
        self.start_step, self.new_parameters, self.shards = 0, [], {}
        self._build_model()
        self._restore()
        backend.to_backend(self.model, self.optimizer)
        self.workers = spec.data
        self.window = args.staleness + 1  # steps whose gradients can be in flight
        self.inbox = [[self.plan.push(self.rank, w == 0) for w in range(self.workers)] for _ in range(self.window)]
        self.requests = [[None] * self.workers for _ in range(self.window)]
        self.next_post = self.start_step  # receives are posted for steps up to next_post - 1
        for _ in range(self.window):
            self._post()
        self.outgoing = []  # (packet, its Isend requests) of versions sent
        self.failure = None
        self.skipped = 0
        self.faults = FaultPlan(link.Get_rank())  # raise and kill: a server can fail too

    def print0(self, *text):
        pass  # rank 0, a worker, reports

    def _optimized_parameters(self):
        # Called by _restore once --freeze has marked the frozen tensors.
        self.plan = ShardPlan(self.model, self.spec.ps)
        self.owned = [self.plan.trainable[i] for i in self.plan.shards[self.rank]]
        return self.owned

    def sync_buffers(self):
        pass  # the servers hold worker 0's buffers, from its pushes

    def global_state(self):
        """Every tensor and its optimizer state, broadcast by its owner to all servers."""
        states = {}
        owned = dict(self.owned)
        for (name, p), owner in zip(self.plan.trainable, self.plan.owner):
            self._bcast(p.data, owner)
            mine = self.optimizer.state[name] if name in owned else {}
            states[name] = {}
            for s in self.optimizer.state_names:
                array = mine.get(s)
                if array is None:
                    array = np.empty(p.data.shape, p.data.dtype)
                states[name][s] = backend.to_host(self._bcast(array, owner))
        optimizer = {"steps": self.optimizer.steps, "params": states}
        return self.global_parameters(), {n: backend.to_host(b) for n, b in self.model.named_buffers()}, optimizer

    def _bcast(self, array, root):
        staged = MPIBuffer(array.reshape(-1))
        staged.before()
        self.comm.Bcast(staged.buf, root=root)
        staged.after()
        return array

    def _post(self):
        step = self.next_post
        if step < self.total_steps:
            slot = step % self.window
            self.requests[slot] = [pkt.irecv(self.link, w, PUSH) for w, pkt in enumerate(self.inbox[slot])]
            self.next_post += 1

    def _receive(self, step):
        """Wait for every worker's push of ``step``; return the summed figures."""
        slot = step % self.window
        statuses = [MPI.Status() for _ in range(self.workers)]
        poll(self.requests[slot], statuses)
        figures = np.zeros(PUSH_HEAD - 1)
        for w, (pkt, status) in enumerate(zip(self.inbox[slot], statuses)):
            pkt.check(status, w)
            if pkt.head[0] != step:
                raise RuntimeError(f"parameter server: worker {w} pushed step {pkt.head[0]:g}, expected {step}")
            figures += pkt.head[1:]
        for j, (_, p) in enumerate(self.owned):  # summed in worker order: the same bits every run
            p.grad[...] = backend.asarray(self.inbox[slot][0].arrays[j])
            for pkt in self.inbox[slot][1:]:
                p.grad += backend.asarray(pkt.arrays[j])
        for (_, dst), src in zip(self.model.named_buffers(), self.inbox[slot][0].arrays[len(self.owned):]):
            dst[...] = backend.asarray(src) if dst.ndim else src  # 0-d counters stay on the host
        return figures

    def _send(self, header):
        """Send this server's tensors with ``header`` to every worker, from a packet whose
        earlier sends have completed (or a new one)."""
        done = [i for i, (_, requests) in enumerate(self.outgoing) if MPI.Request.Testall(requests)]
        pkt = self.outgoing.pop(done[0])[0] if done else self.plan.pull(self.rank)
        pkt.head[:] = header
        for dst, (_, p) in zip(pkt.arrays, self.owned):
            dst[...] = backend.to_host(p.data)
        self.outgoing.append((pkt, [pkt.isend(self.link, w, PULL) for w in range(self.workers)]))

    def _write(self, version, last, signum):
        """Checkpoints and --save due after ``version`` (``last``: the run ends there),
        written before the workers hear of the version."""
        a = self.args
        try:
            if a.checkpoint_dir and (last or (a.checkpoint_every and version % a.checkpoint_every == 0)):
                self._checkpoint(version)
            if a.save and version == self.total_steps and not signum:
                self.save(a.save, version)
        except UserError as e:
            self.failure = e  # agreed among the servers; the workers learn it at the end

    def fit(self):
        a = self.args
        schedule = make_schedule(a.schedule, a.lr, self.total_steps, a.warmup, a.step_size, a.gamma)
        version, signum, halt = self.start_step, 0, False
        while version < self.total_steps and not halt:
            kinds = self.faults.fire(version)  # raise and kill act inside fire()
            if "term" in kinds:
                self.stop.request()
            if "nan" in kinds:
                print(f"mpicnn: fault 'nan' acts on workers only; ignored on server rank "
                      f"{self.link.Get_rank()}", file=sys.stderr, flush=True)
            figures = self._receive(version)
            mine = np.array([self.stop.signal == sig for sig in STOP_SIGNALS], dtype=np.float64)
            self.comm.Allreduce(MPI.IN_PLACE, mine, op=MPI.SUM)  # a signal to one server stops all
            figures[3:] += mine
            lr = schedule(version)
            if not figures[2]:
                self.optimizer.lr = lr
                self.optimizer.step()
            elif a.skip_nonfinite:
                self.skipped += 1
            else:
                self.failure = nonfinite_error(version, version // self.steps_per_epoch)
            version += 1
            signum = next((sig for sig, n in zip(STOP_SIGNALS, figures[3:]) if n), 0)
            if self.failure is None:
                self._write(version, signum or version == self.total_steps, signum)
            halt = bool(signum) or self.failure is not None
            if not halt:
                self._post()
            self._send([version, figures[0], figures[1], figures[2], signum, lr, halt])
        self._drain(version)
        _agree_on_failure(self.link, self.failure)
        self.global_state()  # every server ends with all final parameters (global_parameters)
        if signum:
            return {"steps": version, "stopped": signal.Signals(signum).name}
        self.link.allreduce(_peak_rss_kb(), op=MPI.MAX)  # the workers' summary figure
        return {"steps": version, "skipped_steps": self.skipped}

    def _drain(self, version):
        """Receive the pushes the workers sent beyond the last version, cancel the receives
        posted for steps they never pushed, and complete the parameter sends."""
        last = np.zeros((self.workers, 1), np.int64)
        poll([self.link.Irecv(last[w], w, DONE) for w in range(self.workers)])
        for step in range(version, self.next_post):
            for w, request in enumerate(self.requests[step % self.window]):
                if step > last[w, 0]:
                    request.Cancel()
                request.Wait()
        poll([r for _, requests in self.outgoing for r in requests])

    def close(self):
        self.train_set.close()
        self.comm.Free()
        self.link.Free()


def parameter_server_role(args, comm, stop, spec):
    """This rank's trainer under ``--parallel ps=K``: a Worker on the first spec.data ranks
    of ``comm``, a ParameterServer on the last spec.ps."""
    with agree(comm):
        if args.balance == "dynamic":
            raise UserError("--balance dynamic does not combine with ps=K; the parameter server "
                            "tolerates slow workers through --staleness instead")
        if args.sync_bn and args.staleness:
            raise UserError("--sync-bn reduces BatchNorm statistics over the workers at every step, "
                            "which workers running up to --staleness steps apart cannot do; use "
                            "--staleness 0 or drop --sync-bn")
    server = comm.Get_rank() >= spec.data
    link = comm.Dup()  # the ps messages, apart from anything else on comm
    group = comm.Split(int(server), comm.Get_rank())
    # Workers first: they prepare a built-in dataset (once per node) that servers then open.
    with agree(comm):
        if not server:
            role = Worker(args, link, group, spec, stop)
    with agree(comm):
        if server:
            role = ParameterServer(args, link, group, spec, stop)
    with agree(comm):
        starts = set(comm.allgather(role.start_step))
        if len(starts) > 1:
            raise UserError(f"workers and servers resumed at different steps ({sorted(starts)}); "
                            "every rank must see the same --checkpoint-dir")
    return role
