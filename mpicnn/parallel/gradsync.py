"""Bucketed, overlapped gradient summation for data parallelism.

Parameters are grouped, in backward order, into fused buckets of at most
``bucket_bytes``. Each parameter's ``grad`` is rebound once to a view of its bucket's
flat buffer, so layers accumulate straight into the buffer that MPI sends (no copy
in or out). A bucket is launched with a nonblocking in-place ``Iallreduce`` as soon as
every layer that owns one of its parameters has finished backward, so summation
overlaps the rest of backward; ``finish()`` waits for all of them before the optimizer
step. Every rank runs the same backward order, so buckets are launched in the same
order everywhere, as nonblocking collectives require.

Layers must accumulate into ``Parameter.grad`` in place (``+=``), never rebind it.
"""
import time

from mpi4py import MPI

from ..backend import array_module
from . import events
from .device_buffers import MPIBuffer


class Bucket:
    def __init__(self, entries, dtype, staged, index=0):
        self.entries = entries  # (module, Parameter) pairs, backward order
        self.index = index  # in launch order (the trace's track "allreduce {index}")
        self.launched = None  # perf_counter of the launch, while a tracer records
        xp = array_module(entries[0][1].data)  # numpy, or cupy for the GPU backend
        self.flat = xp.zeros(sum(p.data.size for _, p in entries), dtype=dtype)
        self.pending = 0
        self.request = None
        offset = 0
        for _, p in entries:
            view = self.flat[offset:offset + p.data.size].reshape(p.data.shape)
            view[...] = p.grad
            p.grad = view
            offset += p.data.size
        self.mpi = MPIBuffer(self.flat, staged)  # the flat buffer itself, or its host mirror

    def launch(self, comm):
        self.mpi.before()
        self.launched = time.perf_counter() if events.recorder else None
        self.request = comm.Iallreduce(MPI.IN_PLACE, self.mpi.buf, op=MPI.SUM)

    def completed(self, rec, end):
        """Trace the allreduce from launch to ``end`` (at most once per launch)."""
        if self.launched is not None:
            rec.span(f"allreduce {self.index}", f"allreduce bucket {self.index}", self.launched, end,
                     bytes=int(self.flat.nbytes), parameters=len(self.entries))
            self.launched = None


class GradientBuckets:
    def __init__(self, model, comm, bucket_bytes=25 * 2 ** 20, staged=None):
        """``staged``: force (True) or forbid (False) host staging of device buffers;
        None decides by whether MPI is CUDA-aware."""
        self.comm = comm
        self.comm_seconds = 0.0
        self.armed = True
        owned = []  # (module, Parameter) in forward order
        for module in model.modules():
            for value in vars(module).values():
                if getattr(value, "requires_grad", False) and hasattr(value, "grad"):
                    owned.append((module, value))
        self.buckets = []
        current, size, dtype = [], 0, None
        for module, p in reversed(owned):
            nbytes = p.data.nbytes
            if current and (size + nbytes > bucket_bytes or p.data.dtype != dtype):
                self.buckets.append(Bucket(current, dtype, staged, len(self.buckets)))
                current, size = [], 0
            current.append((module, p))
            size += nbytes
            dtype = p.data.dtype
        if current:
            self.buckets.append(Bucket(current, dtype, staged, len(self.buckets)))
        self.by_module = {}  # id(module) -> buckets holding its parameters, each once
        for b in self.buckets:
            for module, _ in b.entries:
                mine = self.by_module.setdefault(id(module), [])
                if b not in mine:
                    mine.append(b)
        if comm.Get_size() > 1:
            for module in {id(m): m for m, _ in owned}.values():
                self._hook(module)

    @property
    def nbytes(self):
        return sum(b.flat.nbytes for b in self.buckets)

    def _hook(self, module):
        def backward_then_reduce(inner, dy):
            dx = inner(dy)
            self._done(module)
            return dx

        module.wrap_pass("backward", backward_then_reduce)

    def all_finite(self):
        """True when no summed gradient is NaN or Inf (the same answer on every rank)."""
        if not self.buckets:
            return True
        xp = array_module(self.buckets[0].flat)
        return bool(xp.stack([xp.isfinite(b.flat).all() for b in self.buckets]).all())  # one copy to the host

    def begin(self, reduce=True):
        """Arm the buckets for one backward pass. ``reduce=False``: a backward whose
        gradients only accumulate (an earlier micro-batch); nothing is launched."""
        self.armed = reduce
        for b in self.buckets:
            b.pending = len(b.entries)
            b.request = None

    def _done(self, module):
        if not self.armed:
            return
        t0 = time.perf_counter()
        for b in self.by_module.get(id(module), ()):
            b.pending -= sum(1 for m, _ in b.entries if m is module)
            if b.pending < 0:
                raise RuntimeError(f"{type(module).__name__} ran backward twice in one step; a layer "
                                   "whose parameters are reduced must be used once per forward")
            if b.pending == 0:
                b.launch(self.comm)
        # MPI moves nonblocking collectives only inside MPI calls: give it a turn.
        live = [b.request for b in self.buckets if b.request is not None]
        rec = events.recorder
        if rec:  # test each in-flight bucket, to trace when it completed
            for b in self.buckets:
                if b.launched is not None and b.request.Test():
                    b.completed(rec, time.perf_counter())
            rec.span("compute", "allreduce launch and test", t0, time.perf_counter())
        elif live:
            MPI.Request.Testall(live)
        self.comm_seconds += time.perf_counter() - t0

    def finish(self):
        """Launch buckets whose layers did not run backward, then wait for all."""
        if self.comm.Get_size() == 1:
            return
        t0 = time.perf_counter()
        for b in self.buckets:
            if b.request is None:
                b.launch(self.comm)
        t_wait = time.perf_counter()
        MPI.Request.Waitall([b.request for b in self.buckets])
        rec = events.recorder
        if rec:
            t1 = time.perf_counter()
            rec.span("compute", "wait allreduce", t_wait, t1, "wait")
            for b in self.buckets:
                b.completed(rec, t1)
        for b in self.buckets:
            b.mpi.after()
        self.comm_seconds += time.perf_counter() - t0
