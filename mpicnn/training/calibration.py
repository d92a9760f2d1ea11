"""Measure this machine for the planner (``mpicnn.plan``): what ``python -m mpicnn.bench
calibrate`` writes, and the quick calibration ``--parallel auto`` runs when it has no
machine file.

Every rank measures at once, so compute figures are those of cores shared as a real
job shares them: forward and backward of the real layer objects (``plan.measure``) for
every layer of the given models as the layouts of 1 and N ranks cut it, over a grid of
sizes; an Adam step over small and large parameters; the trainer's batch read; message
costs (``parallel.link_timing``: Allreduce, Allgatherv, Reduce_scatter, neighbour
Isend/Irecv, and the channel layers' collectives and the spatial layers' halos as they
issue them) fitted to
alpha + beta * bytes; the resident memory of a rank before any array. The numbers of rank 0 go to every rank, so all plan alike.
"""
import os
import platform
import time

import numpy as np

from .. import nn
from ..nn.optim import OPTIMIZERS
from ..parallel.collectives import gather_objects, node_local
from ..parallel.link_timing import OPS, fit_alpha_beta, time_channel_ops, time_halo, time_links
from ..plan import measure
from ..plan.machine import FORMAT, Machine
from ..plan.problem import build, dataset_info
from ..plan.walk import layout_configs
from .figures import peak_rss_kb

MODELS = (("lenet5", "mnist5k"), ("convnet", "shapes:64"), ("resnet8", "shapes:32"))


def model_configs(models, ranks):
    """The layer configs to time: every leaf of ``models`` as the layouts of 1 and
    ``ranks`` ranks cut it (``plan.walk.layout_configs``: channel shards, pools' local
    channels), so the planner reads the layers it plans for these ranks from their own
    series instead of scaling a neighbour's by its multiply-adds (a conv of 3 input
    channels does not take half the time of one of 6)."""
    configs = []
    for name, dataset in models:
        shape, classes, *_ = dataset_info(dataset)
        model = build(name, shape, classes, "float32")
        for r in sorted({1, ranks}):
            for kc in layout_configs(model, shape, r):
                if kc not in configs:
                    configs.append(kc)
    return configs


def time_optimizer(dtype, repeats=5):
    """(seconds per tensor, seconds per byte) of an Adam step."""
    def adam_seconds(shapes):
        layer = nn.Sequential(*[nn.Linear(a, b, dtype=dtype) for a, b in shapes])
        opt = OPTIMIZERS["adam"](list(layer.named_parameters()), lr=1e-3)
        return measure._typical_run(opt.step, repeats), len(shapes) * 2, sum(a * b + b for a, b in shapes)
    t_small, k_small, e_small = adam_seconds([(4, 4)] * 16)
    t_big, k_big, e_big = adam_seconds([(512, 512)] * 2)
    isz = np.dtype(dtype).itemsize
    per_tensor = t_small / k_small
    per_byte = max(t_big - per_tensor * k_big, 0.0) / (e_big * isz)
    return {"per_tensor": per_tensor, "per_byte": per_byte}


def time_data(dtype, repeats=5):
    """Seconds per output byte of the trainer's batch read (``data.Dataset.read`` of 32
    random mnist5k samples from its in-memory cache, converted to floats)."""
    from ..data import open_dataset
    ds = open_dataset("mnist5k", "train")
    idx = np.random.default_rng(0).permutation(ds.num_samples)[:32]
    ds.read(idx, dtype=dtype)  # fills the cache
    t = measure._typical_run(lambda: ds.read(idx, dtype=dtype), repeats)
    return t / (len(idx) * int(np.prod(ds.shape)) * np.dtype(dtype).itemsize)


def measure_machine(comm, models=MODELS, dtypes=("float32",), quick=False):
    """The machine description (a dict, see ``plan.machine``), the same on every rank."""
    t0 = time.perf_counter()
    baseline = peak_rss_kb() * 1024  # before this calibration allocates
    local_rank, ranks_on_node = node_local(comm)
    sizes = gather_objects(comm, ranks_on_node)
    configs = model_configs(models, comm.Get_size())
    compute = {}
    for dtype in dtypes:
        if quick:
            compute[dtype] = measure.calibrate_compute(configs, np.dtype(dtype), sides=(8, 32, 96), budget=0.01,
                                                       deadline=time.perf_counter() + 3.0)
        else:
            # Busy machines stretch every point: past two seconds per config (at least
            # 35 s), each series stops at two sizes (small ones, whose fixed costs then
            # scale up with the size: too dear for large layers, so leave them room).
            compute[dtype] = measure.calibrate_compute(configs, np.dtype(dtype),
                                                       deadline=time.perf_counter()
                                                       + max(35.0, 2.0 * len(configs)) / len(dtypes))
    spec = {"format": FORMAT, "host": platform.node(), "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "backend": "numpy", "threads_per_rank": 1, "ranks": comm.Get_size(), "nodes": 1,
            "ranks_per_node": max(sizes), "memory_per_rank": _memory_per_rank(max(sizes)),
            "baseline_bytes": float(np.median(gather_objects(comm, baseline))),
            "overlap_gradients": False, "compute": compute,
            "optimizer": time_optimizer(np.dtype(dtypes[0]))}
    if not quick:  # the quick one keeps the machine's default rather than open a dataset
        spec["data_per_byte"] = time_data(np.dtype(dtypes[0]))
    if comm.Get_size() > 1:
        rows = time_links(comm, sizes=(8, 1 << 14, 1 << 20) if quick else (8, 1 << 12, 1 << 16, 1 << 20, 1 << 23),
                          repeats=3 if quick else 7)
        spec["intra"] = {op: dict(zip(("alpha", "beta"), fit_alpha_beta(rows[op]))) for op in OPS}
        spec["links_measured"] = rows
        # What a channel-split layer pays per collective, wrapper and copies included.
        channel = time_channel_ops(comm, sizes=(1 << 12, 1 << 16, 1 << 20) if quick else (1 << 12, 1 << 16, 1 << 20,
                                                                                       1 << 23),
                                   repeats=3 if quick else 7)
        spec["channel"] = {op: [{"channels": width, **dict(zip(("alpha", "beta"), fit_alpha_beta(points)))}
                                for width, points in by_width.items()] for op, by_width in channel.items()}
        spec["channel_measured"] = {op: {str(w): rows for w, rows in by_width.items()}
                                    for op, by_width in channel.items()}
        # What a spatially split window layer pays per call for its halo, copies included.
        halo = time_halo(comm, sizes=(1 << 14, 1 << 18, 1 << 21) if quick else (1 << 14, 1 << 18, 1 << 21, 1 << 23),
                         repeats=2 if quick else 5)
        spec["halo"] = {phase: dict(zip(("alpha", "beta"), fit_alpha_beta(rows))) for phase, rows in halo.items()}
        spec["halo_measured"] = halo
    else:  # one rank: FACTS.md's figures for MPICH on one node, said so in the file
        spec["intra"] = {"alpha": 3e-6, "beta": 3.3e-10}
        spec["links_measured"] = "not measured (one rank); defaults"
    # Every rank must write the same numbers: take rank 0's compute figures.
    spec = gather_objects(comm, spec)[0]
    spec["step_overhead"] = 0.0  # the full calibration measures it with a trainer run
    spec["calibration_seconds"] = time.perf_counter() - t0
    return spec


def _memory_per_rank(ranks_on_node):
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    return int(total // max(ranks_on_node, 1))





def quick_machine(comm, model_name, dataset, dtype):
    """A Machine measured in a few seconds for ``--parallel auto`` without a machine file:
    only ``model_name``'s layers, few sizes, no trainer run."""
    return Machine(measure_machine(comm, ((model_name, dataset),), dtypes=(dtype,), quick=True),
                   "the quick calibration")
