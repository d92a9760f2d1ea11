"""Channel parallelism: the real trainer under mpiexec, one BLAS thread per rank.

For each C, convnet on ``shapes:SIZE`` with the same global batch runs with
``--parallel channel=C`` under each ``--channel-split`` (C=1 once). Each rank-0 worker
reports the parameter bytes per rank (all layers, and the split conv/linear layers
alone) against C=1, the activation bytes per rank (every layer's output in a training
forward pass: what backward keeps, roughly) against C=1, the peak resident memory of
the training loop (the largest rank), and, per split layer, the layout the plan chose,
whether its input and output activations are split, the plan's volume estimate for
both layouts, and per training step the bytes of the arrays each collective acted on,
the traffic per rank
they mean for ring algorithms (allgather and reduce-scatter of n bytes: n(C-1)/C,
allreduce: twice that) and the seconds spent in them. Optimizer state has the shape of
its parameter (zeros_like), so its ratio is the parameters' ratio.
"""
import json
import subprocess
import sys

from ..parallel.launcher import mpi_command, mpi_env
from .report import run_failure

TRAFFIC = {"allgather": 1, "reduce_scatter": 1, "allreduce": 2}  # ring: multiples of n(C-1)/C per rank


def _count_activations(make_layout, total):
    """``make_layout`` whose model adds to ``total[0]`` the bytes of every leaf layer's
    output in training forward passes (evaluation excluded)."""
    def make(args, comm, stop):
        trainer = make_layout(args, comm, stop)
        for layer in trainer.model.modules():  # sharded already: these objects stay
            if not layer.children():
                def counted(forward, x, layer=layer):
                    y = forward(x)
                    if layer.training:
                        total[0] += y.nbytes
                    return y
                layer.wrap_pass("forward", counted)
        return trainer
    return make


def _worker(argv):
    """Under mpiexec: train, then print one JSON line of figures on rank 0."""
    from .. import train
    from ..nn import Conv2d, Linear
    from ..parallel.channel import _Split
    from ..parallel.collectives import max_value, world

    comm = world()
    total = [0]
    train.make_layout = _count_activations(train.make_layout, total)  # this worker process only
    result = train.run(argv, comm)
    steps = max(result.step, 1)
    C = comm.Get_size()
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
        if isinstance(m, _Split):
            st, plan = m.comm_stats, m.plan
            row = {"layer": names.get(id(m), "?"), "layout": plan.layout,
                   "input": "split" if plan.split_in else "whole",
                   "output": "split" if plan.split_out else "whole",
                   "estimate": " | ".join(f"{k} {v:g}" for k, v in plan.volume.items())}
            row.update({f"{op}_MB/step": st[op + "_bytes"] / steps / 1e6 for op in TRAFFIC})
            traffic = sum(k * st[op + "_bytes"] for op, k in TRAFFIC.items()) * (C - 1) / C
            row["traffic_MB/step"] = traffic / steps / 1e6
            row["comm_ms/step"] = 1e3 * sum(st[op + "_s"] for op in TRAFFIC) / steps
            layers.append(row)
    all_bytes = sum(p.data.nbytes for p in result.model.parameters())
    figures = {"param_bytes": max_value(comm, all_bytes),
               "split_param_bytes": max_value(comm, split_bytes),
               "activation_bytes": max_value(comm, total[0] / steps),  # one forward pass per step
               "peak_rss_mb": result.summary["peak_rss_mb"],
               "images_per_sec": result.summary.get("images_per_sec"), "layers": layers}
    if comm.Get_rank() == 0:
        print("BENCH " + json.dumps(figures), flush=True)


def bench_channel(channels=(1, 2), splits=("filter", "channel", "auto"), size=32, batch_size=16, steps=6,
                  width=16):
    """Rows of the memory/throughput table (one per C and split) and rows of the per-layer
    communication table."""
    argv = ["--model", "convnet", "--width", str(width), "--dataset", f"shapes:{size}", "--steps", str(steps),
            "--batch-size", str(batch_size), "--no-progress", "--eval-batch-size", "1000"]
    runs = {}
    for c in channels:
        for split in splits if c > 1 else ("-",):
            cmd = mpi_command(c, "-m", "mpicnn.bench.channel", *argv, "--parallel", f"channel={c}",
                              *(["--channel-split", split] if c > 1 else []))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=mpi_env())
            if proc.returncode:
                raise run_failure(" ".join(cmd), proc.stderr)
            line = next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))
            runs[c, split] = json.loads(line[len("BENCH "):])
    base = next(iter(runs.values()))
    rows, layers = [], []
    for (c, split), r in runs.items():
        rows.append({"channel": c, "split": split, "images/s": r["images_per_sec"],
                     "param_KB/rank": r["param_bytes"] / 1e3,
                     "ratio_all": r["param_bytes"] / base["param_bytes"],
                     "ratio_split_layers": r["split_param_bytes"] / base["split_param_bytes"],
                     "act_MB/rank": r["activation_bytes"] / 1e6,
                     "ratio_act": r["activation_bytes"] / base["activation_bytes"],
                     "peak_rss_MB": r["peak_rss_mb"],
                     "traffic_MB/step": sum(row["traffic_MB/step"] for row in r["layers"]),
                     "comm_ms/step": sum(row["comm_ms/step"] for row in r["layers"])})
        layers += [{"channel": c, "split": split, **row} for row in r["layers"]]
    return rows, layers


if __name__ == "__main__":
    _worker(sys.argv[1:])
