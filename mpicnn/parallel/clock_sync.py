"""Each rank's clock offset to rank 0, by MPI ping-pong (for merged traces).

Rank 0 sends each other rank pings; the rank answers with its own
``time.perf_counter()``. With the round trip ``t0 -> t1`` on rank 0 and the answer
``t``, rank r's clock reads ``t - (t0 + t1) / 2`` ahead of rank 0's, give or take half
the round trip; the round with the shortest round trip wins, and half of it is the
reported error bound. On a busy node most round trips include a descheduled rank, so
rank 0 pings each rank until one round trip is short (``GOOD``) or its share of
``SECONDS`` has passed. On one node ``perf_counter`` is the same monotonic clock in
every process, so the offset comes out near 0 and the error is the shared-memory
latency (microseconds).
"""
import time

import numpy as np

MIN_ROUNDS = 20
GOOD = 10e-6  # a round trip this short bounds the error to 5 us
SECONDS = 3.0  # in all, at most (a quiet node needs milliseconds per rank)
MIN_SECONDS = 0.1  # per rank, at least, in a large job


def clock_offsets(comm):
    """(offset, error) of this rank's clock to rank 0's in seconds (0, 0 on rank 0).
    Collective over ``comm``."""
    rank, size = comm.Get_rank(), comm.Get_size()
    table = np.zeros((size, 2))
    ping, pong = np.ones(1), np.zeros(1)  # ping[0]: 1 = answer, 0 = done
    comm.Barrier()
    if rank == 0:
        for r in range(1, size):
            best, rounds = (np.inf, 0.0), 0
            deadline = time.perf_counter() + max(MIN_SECONDS, SECONDS / (size - 1))
            ping[0] = 1.0
            while ping[0]:
                t0 = time.perf_counter()
                comm.Send(ping, dest=r, tag=91)
                comm.Recv(pong, source=r, tag=92)
                t1 = time.perf_counter()
                rounds += 1
                if t1 - t0 < best[0]:
                    best = (t1 - t0, pong[0] - (t0 + t1) / 2)
                if rounds >= MIN_ROUNDS and (best[0] <= GOOD or t1 > deadline):
                    ping[0] = 0.0
                    comm.Send(ping, dest=r, tag=91)
            table[r] = best[1], best[0] / 2
    elif size > 1:
        while True:
            comm.Recv(ping, source=0, tag=91)
            if not ping[0]:
                break
            pong[0] = time.perf_counter()
            comm.Send(pong, dest=0, tag=92)
    comm.Bcast(table, root=0)
    return float(table[rank, 0]), float(table[rank, 1])
