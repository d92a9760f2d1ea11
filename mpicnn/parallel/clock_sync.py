"""Each rank's clock offset to rank 0, by MPI ping-pong (for merged traces).

Rank 0 sends each other rank a few pings; the rank answers with its own
``time.perf_counter()``. With the round trip ``t0 -> t1`` on rank 0 and the answer
``t``, rank r's clock reads ``t - (t0 + t1) / 2`` ahead of rank 0's, give or take half
the round trip; the round with the shortest round trip wins, and half of it is the
reported error bound. On one node ``perf_counter`` is the same monotonic clock in
every process, so the offset comes out near 0 and the error is the shared-memory
latency (microseconds).
"""
import time

import numpy as np

ROUNDS = 50


def clock_offsets(comm, rounds=ROUNDS):
    """(offset, error) of this rank's clock to rank 0's in seconds (0, 0 on rank 0).
    Collective over ``comm``."""
    rank, size = comm.Get_rank(), comm.Get_size()
    table = np.zeros((size, 2))
    ping, pong = np.zeros(1), np.zeros(1)
    comm.Barrier()
    if rank == 0:
        for r in range(1, size):
            best = (np.inf, 0.0)
            for _ in range(rounds):
                t0 = time.perf_counter()
                comm.Send(ping, dest=r, tag=91)
                comm.Recv(pong, source=r, tag=92)
                t1 = time.perf_counter()
                if t1 - t0 < best[0]:
                    best = (t1 - t0, pong[0] - (t0 + t1) / 2)
            table[r] = best[1], best[0] / 2
    elif size > 1:
        for _ in range(rounds):
            comm.Recv(ping, source=0, tag=91)
            pong[0] = time.perf_counter()
            comm.Send(pong, dest=0, tag=92)
    comm.Bcast(table, root=0)
    return float(table[rank, 0]), float(table[rank, 1])
