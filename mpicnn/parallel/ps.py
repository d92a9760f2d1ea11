"""Parameter-server transport, ``--parallel ps=K`` (with ``data=W``): W workers compute,
K servers own the parameters and the optimizer, and ``--staleness s`` bounds how far
apart they run. This module holds the messages and their bookkeeping (``Packet``,
``ShardPlan``, ``WorkerChannel``, ``ServerChannel``, ``split_roles``); the roles that
drive them in the training loop are ``mpicnn.training.ps_worker.PSWorker`` and
``mpicnn.training.ps_server.PSServer``.

Layout. The world is W + K ranks: the first W are workers, the last K servers (so
rank 0 is a worker and reports). Workers form their own communicator and each runs a
data-parallel step on it (``data=W``: the global batch is cut over the workers and
every piece's loss weighted by its share of it, as data parallelism does), except that
its gradients are pushed to the servers instead of allreduced, and it keeps no optimizer
state. Every trainable tensor belongs to one server (whole tensors, largest first onto
the least-loaded server: ``assign_tensors``); a server holds the optimizer state of its
tensors only, sums the W workers' gradients and applies the same optimizer and
learning-rate schedule as the grid layout. Worker 0's BatchNorm buffers travel with its
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
import time

import numpy as np
from mpi4py import MPI

from ..signals import STOP_SIGNALS
from . import events

PUSH, PULL, DONE = 1, 2, 3  # message tags: gradients in, parameters out, last step pushed
# Header of a push: the step, then the step's figures (loss sum, correct, non-finite,
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


class WorkerChannel:
    """A worker's traffic with the servers: its pushes, and the versions of the
    parameters, received into ``window`` slots posted ahead (slot = version % window)."""

    def __init__(self, link, plan, servers, window, with_buffers):
        self.link, self.plan, self.servers, self.window = link, plan, servers, window
        self.outbox = [plan.push(k, with_buffers) for k in range(len(servers))]
        self.inbox = [[plan.pull(k) for k in range(len(servers))] for _ in range(window)]
        self.requests = [[None] * len(servers) for _ in range(window)]
        self.posted_at = [0.0] * window  # perf_counter of each slot's receives (for the trace)

    def post(self, version):
        """Start receiving ``version`` from every server."""
        slot = version % self.window
        self.requests[slot] = [pkt.irecv(self.link, server, PULL)
                               for pkt, server in zip(self.inbox[slot], self.servers)]
        self.posted_at[slot] = time.perf_counter()

    def arrived(self, version):
        """Whether every server's ``version`` is in (checked: sizes and version numbers)."""
        slot = version % self.window
        statuses = [MPI.Status() for _ in self.servers]
        if not MPI.Request.Testall(self.requests[slot], statuses):
            return False
        for pkt, status, server in zip(self.inbox[slot], statuses, self.servers):
            pkt.check(status, server)
            if pkt.head[VERSION] != version:
                raise RuntimeError(f"parameter server: rank {server} sent version "
                                   f"{pkt.head[VERSION]:g}, expected {version}")
        rec = events.recorder
        if rec:  # from posting the receive to seeing the version in
            rec.span("ps pull", f"pull version {version}", self.posted_at[slot], time.perf_counter(), version=version,
                     bytes=int(sum(pkt.buf.nbytes for pkt in self.inbox[slot])))
        return True

    def head(self, version):
        """The servers' decisions about step version - 1 (the same in every server's header)."""
        return self.inbox[version % self.window][0].head

    def parameters(self, version):
        """Per server, the arrays of its tensors at ``version``."""
        return [pkt.arrays for pkt in self.inbox[version % self.window]]

    def push(self, step, figures, grads, buffers):
        """Send step ``step``'s figures, each server's gradients (host arrays in
        ``plan.trainable`` order) and ``buffers`` (worker 0). The sends complete before
        returning: MPI moves data only inside MPI calls (FACTS.md), so a send left
        pending over a compute phase would reach its server a step late."""
        for k, pkt in enumerate(self.outbox):
            pkt.head[0] = step
            pkt.head[1:] = figures
            shard = self.plan.shards[k]
            for dst, i in zip(pkt.arrays, shard):
                dst[...] = grads[i]
            for dst, buf in zip(pkt.arrays[len(shard):], buffers):
                dst[...] = buf
        t0 = time.perf_counter()
        poll([pkt.isend(self.link, server, PUSH) for pkt, server in zip(self.outbox, self.servers)])
        rec = events.recorder
        if rec:
            rec.span("compute", f"push step {step}", t0, time.perf_counter(), step_pushed=step,
                     bytes=int(sum(pkt.buf.nbytes for pkt in self.outbox)))

    def drain(self, versions, pushed):
        """Cancel the receives posted for ``versions`` that will not come, and tell every
        server the last step pushed (it receives those and cancels the rest)."""
        for v in versions:
            for request in self.requests[v % self.window]:
                request.Cancel()
                request.Wait()
        last = np.array([pushed], np.int64)
        for server in self.servers:
            self.link.Send(last, server, DONE)


class ServerChannel:
    """A server's traffic with the workers: their pushes, received into ``window`` slots
    posted ahead (slot = step % window), and the versions of its tensors it sends."""

    def __init__(self, link, plan, server, workers, window):
        self.link, self.plan, self.server, self.workers, self.window = link, plan, server, workers, window
        self.inbox = [[plan.push(server, w == 0) for w in range(workers)] for _ in range(window)]
        self.requests = [[None] * workers for _ in range(window)]
        self.outgoing = []  # (packet, its Isend requests) of versions sent

    def post(self, step):
        slot = step % self.window
        self.requests[slot] = [pkt.irecv(self.link, w, PUSH) for w, pkt in enumerate(self.inbox[slot])]

    def receive(self, step):
        """Wait for every worker's push of ``step``; return (the figures summed over the
        workers, each worker's arrays: its gradients of this server's tensors, then
        worker 0's buffers)."""
        slot = step % self.window
        statuses = [MPI.Status() for _ in range(self.workers)]
        t0 = time.perf_counter()
        poll(self.requests[slot], statuses)
        rec = events.recorder
        if rec:
            rec.span("compute", f"wait pushes of step {step}", t0, time.perf_counter(), "wait", step_pushed=step)
        figures = np.zeros(PUSH_HEAD - 1)
        for w, (pkt, status) in enumerate(zip(self.inbox[slot], statuses)):
            pkt.check(status, w)
            if pkt.head[0] != step:
                raise RuntimeError(f"parameter server: worker {w} pushed step {pkt.head[0]:g}, expected {step}")
            figures += pkt.head[1:]
        return figures, [pkt.arrays for pkt in self.inbox[slot]]

    def send(self, header, arrays):
        """Send ``arrays`` (host, this server's tensors) with ``header`` to every worker, from
        a packet whose earlier sends have completed (or a new one)."""
        t0 = time.perf_counter()
        done = [i for i, (_, requests) in enumerate(self.outgoing) if MPI.Request.Testall(requests)]
        pkt = self.outgoing.pop(done[0])[0] if done else self.plan.pull(self.server)
        pkt.head[:] = header
        for dst, src in zip(pkt.arrays, arrays):
            dst[...] = src
        self.outgoing.append((pkt, [pkt.isend(self.link, w, PULL) for w in range(self.workers)]))
        rec = events.recorder
        if rec:
            rec.span("compute", f"send version {int(header[0])}", t0, time.perf_counter(), version=int(header[0]),
                     bytes=int(pkt.buf.nbytes) * self.workers)

    def drain(self, steps):
        """Receive the pushes the workers sent of ``steps``, cancel the receives posted for
        steps they never pushed, and complete the parameter sends."""
        last = np.zeros((self.workers, 1), np.int64)
        poll([self.link.Irecv(last[w], w, DONE) for w in range(self.workers)])
        for step in steps:
            for w, request in enumerate(self.requests[step % self.window]):
                if step > last[w, 0]:
                    request.Cancel()
                request.Wait()
        poll([r for _, requests in self.outgoing for r in requests])


def split_roles(comm, spec):
    """(whether this rank is a server, a duplicate of ``comm`` for the ps messages, the
    communicator of this rank's role: the workers' or the servers')."""
    server = comm.Get_rank() >= spec.data
    link = comm.Dup()  # the ps messages, apart from anything else on comm
    return server, link, comm.Split(int(server), comm.Get_rank())


def wait_a_moment():
    """Between polls: keeps MPI moving and leaves the core to the ranks that compute."""
    time.sleep(POLL_SECONDS)
