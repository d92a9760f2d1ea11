"""Halo exchange of spatially split NHWC feature maps, and its exact adjoint.

``gather_halo`` builds the buffer a window op reads (geometry: ``halo_geometry``):

    1. a buffer covering the plan's row span x column span, filled with the padding
       value, gets this rank's own block;
    2. rows phase, on the height communicator (same column block): each owner sends
       the rows a peer needs, over this column block's own columns;
    3. columns phase, on the width communicator (same row block, hence the same row
       span): each owner sends the columns a peer needs over the WHOLE row span, so
       the row halos just received travel on and fill the corners.

``scatter_halo_grad`` is the adjoint: the same two phases in reverse order, each
message going the other way and ADDED into its destination (a halo gradient is a
partial sum that belongs to its owner), then the own block is cut out; padding
gradients are dropped. Both directions call the one routine ``exchange``.

Messages are nonblocking (Irecv/Isend, then Waitall; FACTS.md: fastest for halos).
Slabs are packed and unpacked with ``mpicnn.ops.halo`` (NumPy, or the CUDA kernels on
emu/cupy); GPU buffers go to MPI directly or through host mirrors (``MPIBuffer``).
Every message size comes from the plan, which every rank computes alike: a received
size that differs is an MPI truncation error, never a silent overwrite.
"""
import time

from mpi4py import MPI

from ..backend import array_module
from ..ops.halo import halo_pack, halo_unpack
from . import events
from .device_buffers import MPIBuffer

# Overlapped forward: the interior is computed in up to INTERIOR_CHUNKS row chunks of at
# least MIN_CHUNK_ROWS rows, with an MPI progress call between chunks.
INTERIOR_CHUNKS = 4
MIN_CHUNK_ROWS = 8


def exchange(comm, buf, recvs, sends, add):
    """Move slabs of ``buf`` (N, H, W, C) between ranks of ``comm``, in place.

    ``sends``: (peer, (rows, cols)) slabs of ``buf`` to send to ``peer``;
    ``recvs``: (peer, (rows, cols)) slabs of ``buf`` that ``peer`` fills (``add``:
    accumulates into). Returns (bytes received, seconds blocked waiting). The forward
    exchange and its adjoint both call this (or its two halves, ``start_exchange`` and
    ``finish_exchange``), the adjoint with ``recvs`` and ``sends`` swapped and ``add``.
    """
    return finish_exchange(start_exchange(comm, buf, recvs, sends), add)


def start_exchange(comm, buf, recvs, sends):
    """Post the receives and sends of ``exchange``; returns what ``finish_exchange`` needs."""
    if not recvs and not sends:
        return None
    xp = array_module(buf)
    N, C = buf.shape[0], buf.shape[3]
    started = time.perf_counter()
    incoming, requests = [], []
    outgoing = [(peer, MPIBuffer(halo_pack(buf, rows, cols))) for peer, (rows, cols) in sends]
    for _, staged in outgoing:
        staged.before()  # the packs are done (the first one waits for the device)
    for peer, (rows, cols) in recvs:
        staged = MPIBuffer(xp.empty((N, rows[1] - rows[0], cols[1] - cols[0], C), buf.dtype))
        staged.before_receive()
        incoming.append((staged, rows, cols))
        requests.append(comm.Irecv(staged.buf, source=peer, tag=7))
    for peer, staged in outgoing:  # kept until Waitall: the send buffers stay alive
        requests.append(comm.Isend(staged.buf, dest=peer, tag=7))
    return buf, incoming, outgoing, requests, started


def finish_exchange(pending, add):
    """Wait for a started exchange and unpack (or add) what arrived.
    Returns (bytes received, seconds blocked in Waitall)."""
    if pending is None:
        return 0, 0.0
    buf, incoming, _, requests, started = pending
    t0 = time.perf_counter()
    MPI.Request.Waitall(requests)
    t1 = time.perf_counter()
    nbytes = 0
    for staged, rows, cols in incoming:
        staged.after()
        halo_unpack(staged.array, buf, rows, cols, add=add)
        nbytes += staged.array.nbytes
    rec = events.recorder
    if rec:
        layer, direction = rec.layer, "backward" if add else "forward"
        rec.span("compute", f"wait halo {layer}", t0, t1, "wait", layer=layer, direction=direction, bytes=nbytes)
        rec.span("halo", f"halo {direction} {layer}", started, t1, layer=layer, direction=direction, bytes=nbytes)
    return nbytes, t1 - t0


class Halo:
    """The plan of one layer call on this rank, turned into buffer coordinates."""

    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols
        (r0, _), (c0, _) = rows.span, cols.span
        self.shape_hw = (rows.span[1] - r0, cols.span[1] - c0)
        self.own = ((rows.own[0] - r0, rows.own[1] - r0), (cols.own[0] - c0, cols.own[1] - c0))
        self.need = ((rows.need[0] - r0, rows.need[1] - r0), (cols.need[0] - c0, cols.need[1] - c0))
        own_cols = self.own[1]
        # Rows phase: slabs over this column block's own columns.
        self.row_recvs = [(p, ((a - r0, b - r0), own_cols)) for p, (a, b) in rows.recv]
        self.row_sends = [(p, ((a - r0, b - r0), own_cols)) for p, (a, b) in rows.send]
        # Columns phase: slabs over the whole row span (corners ride along).
        all_rows = (0, self.shape_hw[0])
        self.col_recvs = [(p, (all_rows, (a - c0, b - c0))) for p, (a, b) in cols.recv]
        self.col_sends = [(p, (all_rows, (a - c0, b - c0))) for p, (a, b) in cols.send]
        # Nothing but the own block (no padding, no halo): the op reads x itself. Peers
        # may still need rows from it, so the exchanges run regardless.
        self.span_is_own = rows.span == rows.own and cols.span == cols.own
        self.need_is_span = self.need == ((0, self.shape_hw[0]), (0, self.shape_hw[1]))


def _slices(region):
    (a, b), (c, d) = region
    return slice(None), slice(a, b), slice(c, d)


def _bands(halo):
    """Index tuples of the four bands of the span buffer around the own block (top and
    bottom over all columns, left and right beside the own rows), the empty ones left out."""
    (a, b), (c, d) = halo.own
    Hs, Ws = halo.shape_hw
    bands = [(slice(0, a), slice(None)), (slice(b, Hs), slice(None)), (slice(a, b), slice(0, c)),
             (slice(a, b), slice(d, Ws))]
    return [(slice(None), r, c) for r, c in bands if r.stop > r.start and (c.stop is None or c.stop > c.start)]


def _new_buffer(halo, x, fill):
    """The span buffer: ``x`` in the own block, ``fill`` around it (halos overwrite it)."""
    if halo.span_is_own:
        return x  # read-only below: only sends read from it
    buf = array_module(x).empty((x.shape[0],) + halo.shape_hw + (x.shape[3],), x.dtype)
    for index in _bands(halo):
        buf[index] = fill
    buf[_slices(halo.own)] = x
    return buf


def need_view(halo, buf):
    """The part of the span buffer the op reads (contiguous)."""
    return buf if halo.need_is_span else array_module(buf).ascontiguousarray(buf[_slices(halo.need)])


def save_bands(halo, buf):
    """Copies of what the buffer holds besides x (halos and padding): with x, enough to
    rebuild the op's input for backward without keeping the whole buffer (memory) or
    exchanging again (time)."""
    if halo.span_is_own:
        return ()
    return tuple(buf[index].copy() for index in _bands(halo))


def rebuild(halo, x, bands):
    """The span buffer again, from ``x`` and ``save_bands``."""
    if halo.span_is_own:
        return x
    buf = array_module(x).empty((x.shape[0],) + halo.shape_hw + (x.shape[3],), x.dtype)
    for index, band in zip(_bands(halo), bands):
        buf[index] = band
    buf[_slices(halo.own)] = x
    return buf


def gather_halo(halo, x, fill, height_comm, width_comm):
    """The span buffer: ``x`` (this rank's block, NHWC) with halos and ``fill`` padding
    around it. Returns (buffer, (bytes received, seconds blocked waiting))."""
    buf = _new_buffer(halo, x, fill)
    b1, w1 = exchange(height_comm, buf, halo.row_recvs, halo.row_sends, add=False)
    b2, w2 = exchange(width_comm, buf, halo.col_recvs, halo.col_sends, add=False)
    return buf, (b1 + b2, w1 + w2)


def scatter_halo_grad(halo, dbuf, height_comm, width_comm):
    """Adjoint of ``need_view(gather_halo(...))``: the gradient of the op's input ->
    gradient of ``x``. Returns (gradient, (bytes received, seconds blocked waiting))."""
    xp = array_module(dbuf)
    N, C = dbuf.shape[0], dbuf.shape[3]
    if not halo.need_is_span:
        full = xp.zeros((N,) + halo.shape_hw + (C,), dbuf.dtype)
        full[_slices(halo.need)] = dbuf
        dbuf = full
    # The forward phases in reverse order, each message going back and added in.
    b2, w2 = exchange(width_comm, dbuf, halo.col_sends, halo.col_recvs, add=True)
    b1, w1 = exchange(height_comm, dbuf, halo.row_sends, halo.row_recvs, add=True)
    dx = dbuf if halo.span_is_own else xp.ascontiguousarray(dbuf[_slices(halo.own)])
    return dx, (b1 + b2, w1 + w2)


def _input_slab(axis, span0, a, b):
    """Buffer slice of the input rows read by output rows [a, b) along one axis."""
    lo, hi = axis.reads(a, b)
    return slice(lo - span0, hi - span0)


def gather_and_apply(halo, x, fill, height_comm, width_comm, op, contiguous):
    """``op`` (a window op with padding 0) over this rank's output block, computing the
    output rows and columns that read no halo while the halos travel.

    Order: post the first phase (rows; columns when the grid has one row of blocks),
    run ``op`` on the interior in a few row chunks, giving MPI a turn (``Testall``)
    after each so that large messages progress meanwhile (FACTS.md: MPI moves data only
    inside MPI calls), finish that phase, run the second phase (columns, over the new
    row halos) blocking, then run ``op`` on the border strips. Each piece is written
    into the output block as it is computed. Returns (output, the span buffer, (bytes
    received, seconds blocked waiting)).
    """
    xp = array_module(x)
    N = x.shape[0]
    rows, cols = halo.rows, halo.cols
    buf = _new_buffer(halo, x, fill)
    row_split = rows.parts > 1
    first = (height_comm, halo.row_recvs, halo.row_sends) if row_split else (width_comm, halo.col_recvs,
                                                                             halo.col_sends)
    pending = start_exchange(first[0], buf, first[1], first[2])
    (i0, i1), (j0, j1) = rows.interior(), cols.interior()
    (o0, o1), (q0, q1) = rows.out, cols.out  # this rank's output block
    r0, c0 = rows.span[0], cols.span[0]
    out = []  # [y], allocated when the first piece tells the channel count

    def run(a, b, c, d):
        if a >= b or c >= d:
            return
        slab = buf[:, _input_slab(rows, r0, a, b), _input_slab(cols, c0, c, d)]
        piece = op(xp.ascontiguousarray(slab) if contiguous else slab)
        if not out:
            out.append(xp.empty((N, o1 - o0, q1 - q0, piece.shape[3]), piece.dtype))
        out[0][:, a - o0:b - o0, c - q0:d - q0] = piece

    if i0 < i1 and j0 < j1:
        chunks = max(1, min(INTERIOR_CHUNKS, (i1 - i0) // MIN_CHUNK_ROWS))
        edges = [i0 + (i1 - i0) * k // chunks for k in range(chunks + 1)]
        for a, b in zip(edges, edges[1:]):
            run(a, b, j0, j1)
            if pending is not None:
                MPI.Request.Testall(pending[3])
    nbytes, waited = finish_exchange(pending, add=False)
    if row_split:
        more, waited2 = exchange(width_comm, buf, halo.col_recvs, halo.col_sends, add=False)
        nbytes, waited = nbytes + more, waited + waited2
    if i0 < i1 and j0 < j1:
        for a, b, c, d in ((o0, i0, q0, q1), (i1, o1, q0, q1), (i0, i1, q0, j0), (i0, i1, j1, q1)):
            run(a, b, c, d)
    else:
        run(o0, o1, q0, q1)
    return out[0], buf, (nbytes, waited)
