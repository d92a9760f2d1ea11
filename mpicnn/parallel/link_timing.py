"""Time the messages the layouts send, for the planner's calibration: Allreduce,
Allgatherv, Reduce_scatter and a neighbour exchange (Isend/Irecv + Waitall, as halos
and pipeline links do) of a range of sizes on a communicator, and fit each to
``alpha + beta * bytes`` (collective costs of the whole vector on 2 ranks; see
``mpicnn.plan.machine`` for how other rank counts scale); and the channel layers'
collectives as they issue them (``time_channel_ops``)."""
import time

import numpy as np
from mpi4py import MPI

OPS = ("allreduce", "allgather", "reduce_scatter", "sendrecv")


def _once(comm, op, buf, out):
    size, rank = comm.Get_size(), comm.Get_rank()
    if op == "allreduce":
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    elif op == "allgather":
        part = buf.size // size
        comm.Allgatherv(buf[:part], [out, [part] * size])
    elif op == "reduce_scatter":
        part = buf.size // size
        comm.Reduce_scatter(buf, out[:part], [part] * size, op=MPI.SUM)
    else:  # both neighbours of a ring, both directions at once
        right, left = (rank + 1) % size, (rank - 1) % size
        reqs = [comm.Irecv(out[:buf.size], source=left, tag=7), comm.Isend(buf, dest=right, tag=7)]
        MPI.Request.Waitall(reqs)


def _fastest(comm, call, runs):
    """The fastest of ``runs`` timed calls of ``call`` (after one warm-up), each after a
    barrier, as the slowest rank saw it: the same number on every rank."""
    times = []
    for i in range(runs + 1):
        comm.Barrier()
        t0 = time.perf_counter()
        call()
        if i:
            times.append(time.perf_counter() - t0)
    t = np.array([min(times)])
    comm.Allreduce(MPI.IN_PLACE, t, op=MPI.MAX)
    return float(t[0])


def time_links(comm, sizes=(8, 1 << 12, 1 << 16, 1 << 20, 1 << 23), repeats=7, ops=OPS):
    """{op: [[bytes, seconds], ...]}: the fastest of ``repeats`` runs (after a warm-up)
    of each op on float32 vectors of ``sizes`` bytes (the whole vector, as a collective's
    cost counts it), the same on every rank (the slowest rank's time). The fastest, as
    for the channel and halo calls: on a shared machine the median of a call this short
    is often another process's turn on the core."""
    out = {}
    for op in ops:
        rows = []
        for nbytes in sizes:
            n = max(comm.Get_size(), nbytes // 4)
            buf = np.ones(n, np.float32)
            recv = np.empty(n, np.float32)
            rows.append([int(n * 4), _fastest(comm, lambda: _once(comm, op, buf, recv), repeats)])
        out[op] = rows
    return out


def fit_alpha_beta(rows):
    """(alpha, beta) of ``seconds = alpha + beta * bytes`` by least squares on relative
    error (small and large messages count alike); both at least 0."""
    x = np.array([r[0] for r in rows], float)
    y = np.array([r[1] for r in rows], float)
    w = 1.0 / np.maximum(y, 1e-9)
    A = np.stack([w, w * x], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(A, w * y, rcond=None)
    return max(float(alpha), 0.0), max(float(beta), 0.0)


CHANNEL_OPS = ("allgather", "reduce_scatter", "allreduce", "block")


def time_channel_ops(comm, widths=(6, 16, 64), sizes=(1 << 12, 1 << 16, 1 << 20, 1 << 23), repeats=7):
    """{op: {channels: [[bytes, seconds], ...]}} of what a channel-split layer does per
    call (``parallel.channel``): ``ChannelComm.allgather`` of a block, ``reduce_scatter``
    and ``allreduce`` of a whole array of ``channels`` on the last axis (maps (N, H, W, C)
    and features (N, F) alike: rows of ``channels`` values), and ``block``, the local copy
    of one rank's channels a layer takes of a whole input or output gradient. The
    Python wrapper, the fresh receive buffers and the copies that lay the channel blocks
    out for MPI and back are all in the time; their cost per byte grows as the blocks
    narrow, hence the widths. ``bytes``: the whole array. Times are the fastest run
    after a barrier (the slowest rank's): the calls' own cost, as the layer table holds
    the layers' (``plan.measure``); on a shared machine most runs of a call this short
    include another process's turn on the core, and ``compute_scale`` puts the waits
    of a loaded trainer step back, for these calls as for the layers they belong to."""
    from .blocks import block_range, block_sizes
    from .channel import ChannelComm, _block
    cc = ChannelComm(comm)
    out = {op: {} for op in CHANNEL_OPS}
    for width in widths:
        sizes_c = block_sizes(width, cc.size)
        lo, hi = block_range(width, cc.size, cc.rank)
        for nbytes in sizes:
            rows = max(1, nbytes // 4 // width)
            whole = np.ones((rows, width), np.float32)
            mine = np.ascontiguousarray(whole[:, lo:hi])
            calls = {"allgather": lambda: cc.allgather(mine, sizes_c),
                     "reduce_scatter": lambda: cc.reduce_scatter(whole, sizes_c),
                     "allreduce": lambda: cc.allreduce(whole),
                     "block": lambda: _block(whole, -1, lo, hi)}
            # Small calls take microseconds, and one preemption is milliseconds: more of them
            # (and twice the runs of the large ones, which a loaded machine rarely leaves alone).
            runs = repeats * (4 if nbytes <= 1 << 16 else 2)
            for op, call in calls.items():
                out[op].setdefault(width, []).append([int(whole.nbytes), _fastest(comm, call, runs)])
    return out


def time_halo(comm, sizes=(1 << 14, 1 << 18, 1 << 21, 1 << 23), repeats=5):
    """{"forward": [[bytes, seconds], ...], "backward": ...}: what a window layer split
    over the rows of ``comm``'s ranks pays per call for its halo (``parallel.halo``, a
    3x3 convolution's, padding 1): forward, the span buffer filled with its block and
    padding and the rows exchanged (``gather_halo``, ``need_view``, ``save_bands``);
    backward, the buffer rebuilt from the block and the bands and the halo gradients
    sent back and added (``rebuild``, ``scatter_halo_grad``). ``bytes``: the rank's
    block (4 samples x rows x 32 columns x 16 channels, float32). Fastest run after a
    barrier, the slowest rank's, as ``time_channel_ops``."""
    from .halo import Halo, gather_halo, need_view, rebuild, save_bands, scatter_halo_grad
    from .halo_geometry import plan_2d
    P, rank, alone = comm.Get_size(), comm.Get_rank(), MPI.COMM_SELF
    n, w, c = 4, 32, 16
    out = {"forward": [], "backward": []}
    for nbytes in sizes:
        h = max(2, nbytes // (n * w * c * 4))
        halo = Halo(*plan_2d((h * P, w), (3, 3), (1, 1), (1, 1), (1, 1), (P, 1), (rank, 0)))
        x = np.ones((n, h, w, c), np.float32)
        buf, _ = gather_halo(halo, x, 0.0, comm, alone)
        bands, dxin = save_bands(halo, buf), np.ones_like(need_view(halo, buf))

        def forward():
            b, _ = gather_halo(halo, x, 0.0, comm, alone)
            need_view(halo, b)
            save_bands(halo, b)

        def backward():
            need_view(halo, rebuild(halo, x, bands))
            scatter_halo_grad(halo, dxin, comm, alone)
        runs = repeats * (4 if nbytes <= 1 << 18 else 1)  # short calls: more runs
        for name, call in (("forward", forward), ("backward", backward)):
            out[name].append([int(x.nbytes), _fastest(comm, call, runs)])
    return out
