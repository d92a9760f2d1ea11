"""Pipeline transport and scheduling, ``--parallel pipeline=S``: the order of a stage's
forwards and backwards (``schedule``), the Sequential of a stage's layers (``Stage``)
and the point-to-point messages between neighbouring stages (``Link``). The stage's
role in a training step is ``mpicnn.training.pipeline_stage.PipelineStage``."""
import time

from mpi4py import MPI

from .. import backend
from ..nn import Sequential
from . import events
from .device_buffers import MPIBuffer


class Stage(Sequential):
    """Consecutive layers of a Sequential under their names in it ("7", "8", ...), so
    parameter names stay those of the whole model."""

    def __init__(self, named_layers):
        for name, layer in named_layers:
            setattr(self, name, layer)


class Link:
    """This stage's traffic with one neighbour stage. Receives are posted ahead into
    fresh buffers of ``(n,) + sample_shape`` (never reused: a layer may keep its input
    for backward); sends stay referenced until they complete."""

    def __init__(self, comm, peer, sample_shape, dtype):
        self.comm, self.peer, self.sample_shape, self.dtype = comm, peer, tuple(sample_shape), dtype
        self.posted = {}  # tag -> (request, MPIBuffer)
        self.sending = []  # (request, MPIBuffer)

    def post(self, tag, n):
        """Start receiving message ``tag``: ``n`` samples."""
        buf = MPIBuffer(backend.xp().empty((n,) + self.sample_shape, self.dtype))
        buf.before_receive()  # queued device work must not race MPI writing into device memory
        self.posted[tag] = (self.comm.Irecv(buf.buf, source=self.peer, tag=tag), buf)

    def take(self, tag):
        """Wait for message ``tag``; return its array."""
        request, buf = self.posted.pop(tag)
        status = MPI.Status()
        t0 = time.perf_counter()
        request.Wait(status)
        events.count(time.perf_counter() - t0)
        rec = events.recorder
        if rec:
            rec.span("compute", f"wait recv {tag} from stage {self.peer}", t0, time.perf_counter(), "wait",
                     micro_batch=tag, peer=self.peer, bytes=int(buf.buf.nbytes))
        got = status.Get_count(MPI.BYTE)
        if got != buf.buf.nbytes:  # a larger message already failed in Wait (truncation)
            raise RuntimeError(f"pipeline: message {tag} from stage {self.peer} has {got} bytes, "
                               f"the plan says {buf.buf.nbytes}")
        buf.after()
        return buf.array

    def send(self, array, tag):
        t0 = time.perf_counter()
        buf = MPIBuffer(backend.array_module(array).ascontiguousarray(array))
        buf.before()
        self.sending.append((self.comm.Isend(buf.buf, dest=self.peer, tag=tag), buf))
        events.count(time.perf_counter() - t0)
        rec = events.recorder
        if rec:
            rec.span("compute", f"send {tag} to stage {self.peer}", t0, time.perf_counter(), micro_batch=tag,
                     peer=self.peer, bytes=int(buf.buf.nbytes))

    def poke(self):
        """Give MPI a turn: on one node messages move only inside MPI calls (FACTS.md)."""
        if self.sending and MPI.Request.Testall([r for r, _ in self.sending]):
            self.sending.clear()

    def finish(self):
        t0 = time.perf_counter()
        MPI.Request.Waitall([r for r, _ in self.sending])
        events.count(time.perf_counter() - t0)
        rec = events.recorder
        if rec and self.sending:
            rec.span("compute", f"wait sends to stage {self.peer}", t0, time.perf_counter(), "wait", peer=self.peer)
        self.sending.clear()
