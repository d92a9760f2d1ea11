"""PyTorch DDP (gloo) running the job mpicnn's trainer runs, for ``bench scaling --compare torch``.

``python -m mpicnn.bench.ddp --rank R --world W --init-file PATH ...`` is one process of
the job; ``run_ddp`` starts W of them on this machine (rendezvous through a file, no
network beyond the loopback that gloo itself opens) and returns rank 0's figures;
``run_ddp_ceiling`` runs W 1-process jobs at 1/W of the batch at once (PyTorch's
ceiling, as ``bench scaling`` measures mpicnn's).

The job mirrors ``python -m mpicnn.train`` with the same arguments: the same model (our
zoo model mirrored to torch.nn by ``zoo._torch_mirror``), the same data (the dataset
read through ``mpicnn.data``, the same epoch order, each rank its contiguous share of
every global batch), CrossEntropyLoss, Adam with the trainer's default learning rate,
one intra-op thread per process. Images/s counts the steps after the trainer's
warm-up (``mpicnn.warmup``) on rank 0, as the trainer does.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _worker(args):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from .. import data, models
    from ..warmup import warmup_steps
    from ..nn import init
    from .zoo import _torch_mirror

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{args.init_file}", rank=args.rank,
                            world_size=args.world)
    ds = data.open_dataset(args.dataset, "train")
    init.manual_seed(args.seed)
    ours = models.get(args.model, ds.shape[0], ds.num_classes, image_size=ds.shape[1:])
    model = DistributedDataParallel(_torch_mirror(ours, torch))
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    B, W = args.batch_size, args.world
    lo, hi = args.rank * B // W, (args.rank + 1) * B // W
    per_epoch = data.steps_per_epoch(ds.num_samples, B)
    warmup = warmup_steps(0, args.steps)
    order, epoch = None, -1
    dist.barrier()
    for step in range(args.steps):
        if step == warmup:
            dist.barrier()
            t0 = time.perf_counter()
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order = data.epoch_order(ds.num_samples, args.seed, epoch)
        idx = data.batch_indices(order, step % per_epoch, B)[lo:hi]
        x, y = ds.read(idx)
        loss = crit(model(torch.from_numpy(np.ascontiguousarray(x))), torch.from_numpy(y.astype(np.int64)))
        opt.zero_grad()
        loss.backward()  # DDP averages the gradients over the ranks here
        opt.step()
    seconds = time.perf_counter() - t0
    if args.rank == 0:
        print(json.dumps({"images_per_sec": B * (args.steps - warmup) / seconds, "loss": float(loss),
                          "torch_version": torch.__version__}))
    # Every rank past its last collective before any tears gloo down: a rank destroying
    # the group while the other still used it died now and then with "terminate called
    # without an active exception".
    dist.barrier()
    dist.destroy_process_group()


def _start(world, init, model, dataset, batch_size, steps, lr, seed):
    """Start the ``world`` processes of one DDP job rendezvousing through the file ``init``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, "-m", "mpicnn.bench.ddp", "--rank", str(r), "--world", str(world),
                              "--init-file", init, "--model", model, "--dataset", dataset, "--batch-size",
                              str(batch_size), "--steps", str(steps), "--lr", str(lr), "--seed", str(seed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for r in range(world)]


def _finish(procs):
    """Wait for ``procs``; each one's last stdout line (rank 0's figures), or raise with the
    first failure's stderr."""
    outs = [p.communicate() for p in procs]
    failed = [(r, err) for r, (p, (_, err)) in enumerate(zip(procs, outs)) if p.returncode]
    if failed:
        raise RuntimeError(f"PyTorch DDP process {failed[0][0]} failed:\n{failed[0][1][-3000:]}")
    return [out.strip().splitlines()[-1] if out.strip() else "" for out, _ in outs]


def run_ddp(world, model="lenet5", dataset="mnist5k", batch_size=64, steps=60, lr=3e-3, seed=0):
    """Start the DDP job on ``world`` processes; returns rank 0's figures (a dict)."""
    from .. import data
    data.prepare(dataset)  # build a built-in's cache once, before the processes race for it
    with tempfile.TemporaryDirectory() as tmp:
        lines = _finish(_start(world, os.path.join(tmp, "rendezvous"), model, dataset, batch_size, steps, lr, seed))
    return json.loads(lines[0])


def run_ddp_ceiling(n, model="lenet5", dataset="mnist5k", batch_size=64, steps=60, lr=3e-3, seed=0):
    """PyTorch's ceiling for n processes, as ``scaling.run_ceiling`` measures mpicnn's: n
    independent 1-process jobs at batch_size/n, started together (a group of one: its
    allreduce moves nothing); their summed images/s (and the torch version)."""
    from .. import data
    data.prepare(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        procs = [p for i in range(n)
                 for p in _start(1, os.path.join(tmp, f"rendezvous{i}"), model, dataset, batch_size // n, steps,
                                 lr, seed)]
        records = [json.loads(line) for line in _finish(procs)]
    return {"images_per_sec": sum(r["images_per_sec"] for r in records), "torch_version": records[0]["torch_version"]}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mpicnn.bench.ddp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--init-file", required=True, help="rendezvous file (torch.distributed file://)")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    _worker(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
