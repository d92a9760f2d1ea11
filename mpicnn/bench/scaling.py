"""Data-parallel throughput 1 -> N ranks: the real trainer under mpiexec, one BLAS
thread per rank, the same global batch, images/s read from its metrics."""
import json
import os
import subprocess
import sys
import tempfile

from ..parallel.launcher import mpi_command, mpi_env


def bench_scaling(ranks=(1, 2), model="lenet5", dataset="mnist5k", batch_size=128, steps=60, extra=()):
    rows = []
    env = mpi_env()
    for n in ranks:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = os.path.join(tmp, "m.jsonl")
            cmd = mpi_command(n, "-m", "mpicnn.train", "--model", model, "--dataset", dataset,
                              "--batch-size", str(batch_size), "--steps", str(steps), "--no-progress",
                              "--eval-every", str(10 ** 9), "--metrics", metrics, *extra)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
            final = [json.loads(line) for line in open(metrics)][-1]
        rows.append({"ranks": n, "images_per_sec": final["images_per_sec"],
                     "comm_seconds": final["comm_seconds"], "compute_seconds": final["compute_seconds"]})
    base = rows[0]["images_per_sec"]
    for row in rows:
        row["speedup"] = row["images_per_sec"] / base
    return rows


def bench_allreduce_under_mpi(ranks=2):
    """Run mpicnn.bench.allreduce on ``ranks`` ranks and return its rows."""
    proc = subprocess.run(mpi_command(ranks, "-m", "mpicnn.bench.allreduce"), capture_output=True, text=True,
                          env=mpi_env())
    if proc.returncode:
        raise RuntimeError(f"allreduce bench failed:\n{proc.stderr}")
    return json.loads(proc.stdout)["rows"]


if __name__ == "__main__":
    json.dump(bench_scaling(), sys.stdout)
