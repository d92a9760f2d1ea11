"""Channel (filter/neuron) parallelism: the real trainer under mpiexec, one BLAS thread per rank.

For each C, convnet on ``shapes:SIZE`` with the same global batch runs with
``--parallel channel=C``. Each rank-0 worker reports, per split layer, the bytes
received by the output allgather and reduced for the input gradient per step and the
seconds spent in them, and the parameter bytes per rank (all layers, and the split
conv/linear layers alone) against C=1. Optimizer state has the shape of its parameter
(zeros_like), so its ratio is the parameters' ratio.
"""
import json
import subprocess
import sys

from ..parallel.launcher import mpi_command, mpi_env


def _worker(argv):
    """Under mpiexec: train, then print one JSON line of figures on rank 0."""
    from mpi4py import MPI

    from .. import train
    from ..nn import Conv2d, Linear
    from ..parallel.channel import _Sharded

    comm = MPI.COMM_WORLD
    result = train.run(argv, comm)
    steps = max(result.step, 1)
    layers, split_bytes = [], 0
    names = {}

    def walk(module, prefix):
        for name, child in module.named_children():
            names[id(child)] = prefix + name
            walk(child, prefix + name + ".")
    walk(result.model, "")
    for m in result.model.modules():
        if isinstance(m, (Conv2d, Linear)):  # the layers channel=C splits (C=1: whole)
            split_bytes += sum(p.data.nbytes for p in m.parameters())
        if isinstance(m, _Sharded):
            st = m.comm_stats
            layers.append({"layer": names.get(id(m), "?"), "kind": type(m).__name__,
                           "gather_MB/step": st["gather_bytes"] / steps / 1e6,
                           "sum_MB/step": st["sum_bytes"] / steps / 1e6,
                           "gather_ms/step": 1e3 * st["gather_s"] / steps,
                           "sum_ms/step": 1e3 * st["sum_s"] / steps})
    all_bytes = sum(p.data.nbytes for p in result.model.parameters())
    figures = {"param_bytes": comm.allreduce(all_bytes, op=MPI.MAX),
               "split_param_bytes": comm.allreduce(split_bytes, op=MPI.MAX),
               "images_per_sec": result.summary.get("images_per_sec"), "layers": layers}
    if comm.Get_rank() == 0:
        print("BENCH " + json.dumps(figures), flush=True)


def bench_channel(channels=(1, 2), size=32, batch_size=16, steps=6, width=16):
    """Rows of the memory/throughput table and rows of the per-layer communication table."""
    argv = ["--model", "convnet", "--width", str(width), "--dataset", f"shapes:{size}", "--steps", str(steps),
            "--batch-size", str(batch_size), "--no-progress", "--eval-batch-size", "1000"]
    runs = {}
    for c in channels:
        cmd = mpi_command(c, "-m", "mpicnn.bench.channel", *argv, "--parallel", f"channel={c}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=mpi_env())
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        line = next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))
        runs[c] = json.loads(line[len("BENCH "):])
    base = runs[channels[0]]
    rows, layers = [], []
    for c, r in runs.items():
        rows.append({"channel": c, "images/s": r["images_per_sec"], "param_KB/rank": r["param_bytes"] / 1e3,
                     "ratio_all": r["param_bytes"] / base["param_bytes"],
                     "ratio_split_layers": r["split_param_bytes"] / base["split_param_bytes"]})
        if c > 1:
            layers += [{"channel": c, **row} for row in r["layers"]]
    return rows, layers


if __name__ == "__main__":
    _worker(sys.argv[1:])
