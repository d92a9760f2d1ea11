"""Halo exchange of volumes split over depth x height x width (NCDHW), and its adjoint.

The geometry is ``halo_geometry.axis_plan`` on each of the three axes (the same
owner-to-needer plan as images). ``gather_halo3d`` builds the buffer a window op reads
in three phases, each on the communicator of one axis:

    1. depth phase (depth comm): the depth slabs a peer needs, over this rank's own
       rows and columns;
    2. rows phase (height comm): row slabs over the WHOLE depth span just gathered and
       the own columns, so depth halos travel on into the edges;
    3. columns phase (width comm): column slabs over the whole depth and row spans, so
       edges and corners arrive through the successive axes.

``scatter_halo3d_grad`` runs the phases in reverse order with the messages going back
and ADDED into their owners, then cuts out the own block. Messages are nonblocking
(Irecv/Isend, then Waitall); boxes are packed and unpacked by ``mpicnn.ops.halo3d``
(the halo3d.cu kernels with the emu and cupy backends), device buffers go to MPI
directly or through host mirrors (``MPIBuffer``), as for images.
"""
import time

from mpi4py import MPI

from ..backend import array_module
from ..ops.halo3d import halo3d_pack, halo3d_unpack
from .device_buffers import MPIBuffer

__all__ = ["Halo3d", "gather_halo3d", "scatter_halo3d_grad"]


class Halo3d:
    """One rank's plan of one layer call: three AxisPlans in buffer coordinates."""

    def __init__(self, axes):
        self.axes = axes  # (depth, rows, cols) AxisPlans
        self.origin = tuple(p.span[0] for p in axes)
        self.shape = tuple(p.span[1] - p.span[0] for p in axes)
        self.own = tuple(self._local(p.own, i) for i, p in enumerate(axes))
        self.need = tuple(self._local(p.need, i) for i, p in enumerate(axes))
        # Phase i moves slabs along axis i, over the full span of the axes before it and
        # the own block of the axes after it.
        self.phases = []
        for i, plan in enumerate(axes):
            def region(rng, i=i):
                return tuple(self._local(rng, i) if j == i else ((0, self.shape[j]) if j < i else self.own[j])
                             for j in range(3))
            self.phases.append(([(peer, region(r)) for peer, r in plan.recv],
                                [(peer, region(r)) for peer, r in plan.send]))

    def _local(self, rng, axis):
        return rng[0] - self.origin[axis], rng[1] - self.origin[axis]


def _exchange(comm, buf, recvs, sends, add):
    """Move slabs of ``buf`` between ranks of ``comm`` in place; (bytes, seconds waited)."""
    if not recvs and not sends:
        return 0, 0.0
    xp = array_module(buf)
    incoming, requests = [], []
    outgoing = [(peer, MPIBuffer(halo3d_pack(buf, region))) for peer, region in sends]
    for _, staged in outgoing:
        staged.before()  # the packs are done (the first one waits for the device)
    for peer, region in recvs:
        staged = MPIBuffer(xp.empty(buf.shape[:2] + tuple(b - a for a, b in region), buf.dtype))
        staged.before_receive()
        incoming.append((staged, region))
        requests.append(comm.Irecv(staged.buf, source=peer, tag=9))
    for peer, staged in outgoing:  # kept until Waitall: the send buffers stay alive
        requests.append(comm.Isend(staged.buf, dest=peer, tag=9))
    t0 = time.perf_counter()
    MPI.Request.Waitall(requests)
    waited = time.perf_counter() - t0
    nbytes = 0
    for staged, region in incoming:
        staged.after()
        halo3d_unpack(staged.array, buf, region, add=add)
        nbytes += staged.array.nbytes
    return nbytes, waited


def gather_halo3d(halo, x, fill, comms):
    """The op's input: ``x`` (N, C, d, h, w) with halos from the owners and ``fill``
    padding, cut to the rows it reads. ``comms``: (depth, height, width) communicators.
    Returns (input, (bytes received, seconds waited))."""
    xp = array_module(x)
    buf = xp.full(x.shape[:2] + halo.shape, fill, x.dtype)
    halo3d_unpack(xp.ascontiguousarray(x), buf, halo.own)
    nbytes = waited = 0
    for comm, (recvs, sends) in zip(comms, halo.phases):
        b, w = _exchange(comm, buf, recvs, sends, add=False)
        nbytes, waited = nbytes + b, waited + w
    return halo3d_pack(buf, halo.need), (nbytes, waited)


def scatter_halo3d_grad(halo, dneed, comms):
    """Adjoint of ``gather_halo3d``: the gradient of the op's input -> that of ``x``."""
    xp = array_module(dneed)
    buf = xp.zeros(dneed.shape[:2] + halo.shape, dneed.dtype)
    halo3d_unpack(xp.ascontiguousarray(dneed), buf, halo.need)
    nbytes = waited = 0
    for comm, (recvs, sends) in reversed(list(zip(comms, halo.phases))):
        b, w = _exchange(comm, buf, sends, recvs, add=True)
        nbytes, waited = nbytes + b, waited + w
    return halo3d_pack(buf, halo.own), (nbytes, waited)
