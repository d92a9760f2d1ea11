"""Bandwidth of the bucketed gradient allreduce against one plain ``Allreduce`` of the
same bytes. Run under MPI: ``mpirun -n 2 python -m mpicnn.bench.allreduce``."""
import json
import sys
import time

import numpy as np
from mpi4py import MPI

from ..nn import Linear, Sequential
from ..parallel.gradsync import GradientBuckets


def bench_allreduce(comm, megabytes=(1, 4, 16, 64), bucket_mb=25, repeats=10):
    rows = []
    for mb in megabytes:
        width = int(np.sqrt(mb * 2 ** 20 / 4 / 4))  # four float32 layers of width x width
        model = Sequential(*[Linear(width, width, bias=False) for _ in range(4)])
        buckets = GradientBuckets(model, comm, int(bucket_mb * 2 ** 20))
        flat = np.ones(sum(p.data.size for p in model.parameters()), dtype=np.float32)
        times = {"bucketed": [], "plain": []}
        for _ in range(repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            buckets.begin()
            buckets.finish()
            times["bucketed"].append(time.perf_counter() - t0)
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            times["plain"].append(time.perf_counter() - t0)
        nbytes = flat.nbytes
        row = {"megabytes": nbytes / 2 ** 20, "buckets": len(buckets.buckets)}
        for key, values in times.items():
            t = float(np.median(values))
            row[f"{key}_ms"] = 1e3 * t
            row[f"{key}_GBps"] = nbytes / t / 1e9
        rows.append(row)
    return rows


if __name__ == "__main__":
    comm = MPI.COMM_WORLD
    result = bench_allreduce(comm)
    if comm.Get_rank() == 0:
        json.dump({"ranks": comm.Get_size(), "rows": result}, sys.stdout)
